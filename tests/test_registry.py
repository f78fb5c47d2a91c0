import pytest

from repbench.registry import Registry, UnknownNameError
from repbench.errors import RepbenchError


def test_register_get_and_glob():
    r = Registry("thing")
    r.register("alpha", 1)
    r.register("beta", 2)

    @r.register("alpine")
    def f():
        return 3
    assert r.get("alpha") == 1 and r.get("alpine") is f
    assert r.names("al*") == ["alpha", "alpine"]
    assert "beta" in r and "gamma" not in r


def test_duplicate_name_is_refused():
    r = Registry("thing")
    r.register("alpha", 1)
    with pytest.raises(RepbenchError, match="already registered"):
        r.register("alpha", 2)
    assert r.get("alpha") == 1


def test_unknown_name_suggests_and_lists():
    r = Registry("thing")
    r.register("lpvae", 1)
    r.register("fpvae", 2)
    with pytest.raises(UnknownNameError) as err:
        r.get("lpvea")
    msg = str(err.value)
    assert "did you mean 'lpvae'" in msg and "available: fpvae, lpvae" in msg


def test_learner_registry_comes_from_entry_points():
    import repbench
    assert {"vae", "lpvae", "fpvae"} <= set(repbench.list_learners())
    assert "plugin" in repbench.LEARNERS.origin("lpvae")


def test_first_line_of_an_error_message():
    from repbench.errors import first_line
    assert first_line(ValueError("bad value\nTraceback details")) == "bad value"
    assert first_line(ValueError("")) == "ValueError"  # an empty message must not break the one-line error
    assert first_line(OSError("x" * 500), 120) == "x" * 120


@pytest.mark.parametrize("registry,typo,meant", [("LEARNERS", "lpvea", "lpvae"), ("DATASETS", "mnist5", "mnist5k"),
                                                 ("METRICS", "linear_prob", "linear_probe")])
def test_a_typo_gets_the_closest_name_in_a_sentence_that_reads(registry, typo, meant):
    import repbench.learners
    import repbench.data
    import repbench.metrics
    reg = {"LEARNERS": repbench.learners.LEARNERS, "DATASETS": repbench.data.DATASETS,
           "METRICS": repbench.metrics.METRICS}[registry]
    with pytest.raises(UnknownNameError) as err:
        reg.get(typo)
    msg = str(err.value)
    assert f"did you mean '{meant}'? (available: " in msg and msg.endswith(")") and "?;" not in msg


def test_a_metric_typo_in_a_battery_gets_a_suggestion():
    from repbench.measure import BatteryConfig
    with pytest.raises(RepbenchError, match=r"unknown metric 'linear_prob'; did you mean 'linear_probe'\? "
                                            r"\(available: bpd, "):
        BatteryConfig(metrics=("bpd", "linear_prob"))


@pytest.mark.parametrize("message,limit,first", [
    ("Weights only load failed. In PyTorch 2.6, we changed the default value of the `weights_only` argument",
     60, "Weights only load failed."),
    ("PytorchStreamReader failed reading zip archive: failed finding central directory", 60,
     "PytorchStreamReader failed reading zip archive: failed …"),
    ("short enough", 60, "short enough"),
    ("x" * 80, 60, "x" * 60),
])
def test_first_line_is_never_cut_mid_word(message, limit, first):
    from repbench.errors import first_line
    assert first_line(ValueError(message + "\nsecond line"), limit) == first

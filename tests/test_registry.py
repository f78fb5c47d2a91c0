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

"""The battery on a real (tiny) trained learner: every metric, the representation cache, `repbench eval`."""
import json

import pytest
import torch
import yaml
from click.testing import CliRunner

from repbench.measure.battery import BatteryConfig, battery_flags, extract, run_battery
from repbench.metrics import METRICS, REP_TYPES
from repbench.cli import cli
from repbench.errors import RepbenchError

from repbench.testing import tiny

FAST = BatteryConfig(probe_seeds=2, iw_samples=5, test_samples=20, nonlinear_epochs=3)


@pytest.fixture(scope="module")
def trained(synthetic):
    return tiny("lpvae", h=1, epochs=2, batch_size=50).fit(synthetic.train_x, progress=False)


def test_full_battery_on_a_trained_learner(trained, synthetic, tmp_path):
    res = run_battery(trained, synthetic, FAST, cache_dir=tmp_path, progress=False)
    m = res.metrics
    for name in ("bpd", "bpd_iw", "mutual_info", "cond_entropy", "intrinsic_dim", "linear_probe", "nonlinear_probe"):
        assert m[name] is not None and m[name] == m[name], name
    for probe in ("linear_probe", "nonlinear_probe"):
        assert set(res.probes[probe]) == set(REP_TYPES)
        assert all(len(v) == 2 and all(0 <= a <= 100 for a in v) for v in res.probes[probe].values())
        assert m[f"{probe}.embedding"] == pytest.approx(sum(res.probes[probe]["embedding"]) / 2)
    assert 0 < m["bpd_iw"] < m["bpd"] + 0.05 and 0 < m["bpd"] < 12
    assert 1 <= m["intrinsic_dim"] <= trained.config.z_dim == len(res.spectrum)
    assert res.spectrum == sorted(res.spectrum, reverse=True)
    assert m["linear_probe"] > 30  # the bars are easy: far above the 10% of chance after two epochs
    assert set(res.timings_s) >= {"likelihood", "extract", "linear_probe", "nonlinear_probe"}


@pytest.mark.parametrize("metric", ["bpd", "bpd_iw"])
def test_likelihood_numbers_do_not_depend_on_the_evaluation_batch_size(trained, synthetic, metric):
    # each image gets the same posterior draws whatever the batching (7 does not divide the chunk of 100)
    runs = [run_battery(trained, synthetic, BatteryConfig(metrics=(metric,), iw_samples=5, eval_batch_size=b),
                        progress=False).metrics[metric] for b in (7, 100, 500)]
    assert runs[0] == pytest.approx(runs[1], abs=1e-5) and runs[1] == pytest.approx(runs[2], abs=1e-5)
    other_seed = run_battery(trained, synthetic, BatteryConfig(metrics=(metric,), iw_samples=5), seed=1,
                             progress=False).metrics[metric]
    assert other_seed != pytest.approx(runs[2], abs=1e-5)  # the check can tell draws apart


@pytest.mark.parametrize("protocol", ["fixed", "tuned"])
def test_one_fit_serves_both_sample_types_as_two_separate_fits_would(trained, synthetic, protocol):
    # each sample type's own draw, fitted on its own, as the battery did before sharing the fit between them
    from repbench import seeds
    from repbench.measure.battery import Inputs
    from repbench.metrics.probes import PROBES, probe_accuracies, rep_view, run_probes
    cfg = BatteryConfig(probe_seeds=2, test_samples=7, nonlinear_epochs=2, probe_protocol=protocol)
    inputs = Inputs(synthetic.limit(*trained.data_limits()), trained)
    for probe in PROBES:
        for rep_type, k in (("sample_k100", 7), ("sample_k1", 1)):
            trains, tests = [], []
            for s in range(cfg.probe_seeds):
                g = torch.Generator().manual_seed(seeds.probe_views(s))
                trains.append(rep_view(inputs.reps["train"], rep_type, 1, g).numpy())
                tests.append(rep_view(inputs.reps["test"], rep_type, k, g).numpy())
            alone = run_probes(probe, (trains, [inputs.data.train_y.numpy()] * 2, tests, inputs.data.test_y.numpy()),
                               cfg, inputs.device)
            assert probe_accuracies(inputs, cfg, probe, rep_type) == alone, (probe, rep_type)
    assert probe_accuracies(inputs, cfg, "linear_probe", "sample_k1") != \
        probe_accuracies(inputs, cfg, "linear_probe", "sample_k100")  # the check can tell the two views apart


PROBE_METRICS = ("linear_probe", "nonlinear_probe", "knn_probe", "rep_types", "label_efficiency")


def test_probe_fits_side_by_side_equal_the_fits_one_at_a_time(trained, synthetic):
    # two threads: the fits run side by side, one thread each; one thread: one after another
    cfg = BatteryConfig(metrics=PROBE_METRICS, probe_seeds=2, test_samples=7, nonlinear_epochs=2, label_counts=(20, 50))
    before, by_threads = torch.get_num_threads(), {}
    try:
        for threads in (2, 1):
            torch.set_num_threads(threads)
            res = run_battery(trained, synthetic, cfg, progress=False)
            assert torch.get_num_threads() == threads  # the process's thread count is restored after the probes
            by_threads[threads] = res.metrics
    finally:
        torch.set_num_threads(before)
    assert by_threads[2] == by_threads[1]
    assert len(by_threads[1]) == 3 * (4 + 2) * 2 and all(v is not None for v in by_threads[1].values())
    assert 20 < by_threads[1]["nonlinear_probe"] < 95  # neither chance nor solved: a difference would show


@pytest.mark.parametrize("metrics", [("nonlinear_probe",), PROBE_METRICS])
def test_the_probe_fits_time_is_counted_once(trained, synthetic, metrics):
    # the representations are extracted before the fits' clock starts: each second is in one timing only
    res = run_battery(trained, synthetic, BatteryConfig(metrics=metrics, probe_seeds=1, nonlinear_epochs=2,
                                                        label_counts=(20,)), progress=False)
    assert res.timings_s["probes"] > 0 and res.timings_s["extract"] > 0
    assert all(seconds >= 0 for seconds in res.timings_s.values()), res.timings_s


def test_a_failed_probe_fit_stops_the_fits_beside_it_and_reaches_the_caller(trained, synthetic, monkeypatch):
    import threading
    from repbench.metrics import mlp, probes

    def fail(*args, **kwargs):
        raise ValueError("a failing k-NN fit")
    monkeypatch.setattr(probes, "knn_probe", fail)
    cfg = BatteryConfig(metrics=PROBE_METRICS, probe_seeds=2, test_samples=7, nonlinear_epochs=50)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(ValueError, match="a failing k-NN fit"):
            run_battery(trained, synthetic, cfg, progress=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert not mlp.STOP.is_set()  # a later battery's fits run
    assert not [t for t in threading.enumerate() if t.name.startswith("repbench-probe")]  # none left running


def test_battery_is_reproducible(trained, synthetic, tmp_path):
    cfg = BatteryConfig(metrics=("bpd", "linear_probe", "nonlinear_probe"), probe_seeds=1, nonlinear_epochs=2)
    a = run_battery(trained, synthetic, cfg, progress=False).metrics
    b = run_battery(trained, synthetic, cfg, progress=False).metrics
    assert a == b


def test_representations_are_cached(trained, synthetic, tmp_path):
    first = extract(trained, synthetic, tmp_path)
    calls = []
    real = trained.represent
    trained.represent = lambda *a, **k: calls.append(a) or real(*a, **k)
    try:
        again = extract(trained, synthetic, tmp_path)
    finally:
        del trained.represent
    assert calls == [] and len(list(tmp_path.glob("reps-*.pt"))) == 1
    assert torch.equal(first["test"]["mean"], again["test"]["mean"])
    assert torch.allclose(first["test"]["std"], trained.represent(synthetic.test_x, "embedding")[:, 8:])


def test_unknown_metric_is_refused():
    with pytest.raises(RepbenchError, match="unknown metric 'bpdd'"):
        BatteryConfig(metrics=("bpdd",))


def test_eval_reruns_selected_metrics_on_a_run(tmp_path):
    runner = CliRunner()
    base = ["--results-dir", str(tmp_path), "-q"]
    out = runner.invoke(cli, ["run", "--model", "vae", "--preset", "smoke", "--dataset", "synthetic", "--grid", "0",
                              "--metrics", "bpd,mutual_info"] + base, catch_exceptions=False)
    assert out.exit_code == 0, out.output
    (folder,) = (tmp_path / "runs").iterdir()
    before = json.loads((folder / "metrics.json").read_text())
    assert "linear_probe" not in before["metrics"]
    run_id = json.loads((folder / "run.json").read_text())["mlflow_run_id"]
    out = runner.invoke(cli, ["eval", "--run", run_id, "--metrics", "intrinsic_dim,linear_probe", "--probe-seeds",
                              "1"] + base, catch_exceptions=False)
    assert out.exit_code == 0, out.output
    assert "linear_probe" in out.output and "intrinsic_dim" in out.output
    # what was asked for is shown, with this evaluation's timings; the earlier metrics stay in the record
    assert "| bpd " not in out.output and "other metrics of this run are in" in out.output
    seconds = out.output.split("seconds:")[1].splitlines()[0]
    assert "likelihood" not in seconds and "probes" in seconds
    assert not [t for t in seconds.split(",") if t.strip().split(" ")[0] in METRICS and t.endswith(" 0.0")], \
        seconds  # a metric that only read the shared steps is left out
    after = json.loads((folder / "metrics.json").read_text())
    assert after["metrics"]["bpd"] == before["metrics"]["bpd"] and "linear_probe" in after["metrics"]
    from mlflow.tracking import MlflowClient
    logged = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(run_id).data.metrics
    assert logged["linear_probe"] == after["metrics"]["linear_probe"]
    assert (folder / "spectrum.png").exists() and (folder / "probes.png").exists()
    bad = runner.invoke(cli, ["eval", "--run", "nosuchrun"] + base)
    assert bad.exit_code == 2 and "no run 'nosuchrun'" in bad.stderr
    out = runner.invoke(cli, ["eval", "--run", f"{folder}/", "--metrics", "intrinsic_dim"] + base)  # by its path
    assert out.exit_code == 0 and "intrinsic_dim" in out.output, out.output


def test_measuring_again_repairs_an_unreadable_record_whole(tmp_path):
    # a truncated metrics.json is repaired by what its error names (eval --run) and by its suite, keeping the
    # run's name and training history: read as empty, the re-measured record had lost both
    runner, base = CliRunner(), ["--results-dir", str(tmp_path), "-q"]
    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\nlearners: [vae]\ndatasets: [synthetic]\npresets: [smoke]\n"
                     "metrics: [bpd, intrinsic_dim]\n")
    assert runner.invoke(cli, ["suite", str(suite)] + base, catch_exceptions=False).exit_code == 0
    (folder,) = (tmp_path / "runs").iterdir()
    whole = json.loads((folder / "metrics.json").read_text())
    assert whole["name"] == "vae-synthetic-smoke-s0" and len(whole["history"]) == 1
    kept = ("name", "learner", "display_name", "dataset", "preset", "seed", "history", "metrics")
    for repair in (["eval", "--run", folder.name, "--metrics", "bpd,intrinsic_dim"], ["suite", str(suite)]):
        (folder / "metrics.json").write_text('{"metrics": {"bpd"')
        for report in (["report", "--suite", str(suite)], ["report"]):  # the run folders, MLflow's runs
            out = runner.invoke(cli, report + ["--results-dir", str(tmp_path)])
            assert out.exit_code == 2 and f"measure it again (`repbench eval --run {folder.name}`" in out.stderr
        out = runner.invoke(cli, repair + base, catch_exceptions=False)
        assert out.exit_code == 0, out.output
        again = json.loads((folder / "metrics.json").read_text())
        assert {k: again.get(k) for k in kept} == {k: whole[k] for k in kept}, repair
    assert runner.invoke(cli, ["report", "--suite", str(suite), "--results-dir", str(tmp_path)]).exit_code == 0


@pytest.mark.parametrize("flag", battery_flags(), ids=lambda f: f.flag)
def test_each_battery_setting_is_declared_once_and_reaches_the_cli_and_suite_files(flag, tmp_path):
    """A setting's option (run and eval), its help with the presets' values, and its suite-file key all come
    from its declaration in BatteryConfig: the option sets the field it names, whatever the flag is called."""
    from dataclasses import fields

    from repbench.cli import battery_overrides, cli
    from repbench.measure.battery import BATTERY_PRESETS, BATTERY_KEYS
    from repbench.suites.schema import load_suite
    for command in ("run", "eval"):
        out = CliRunner().invoke(cli, [command, "--help"], terminal_width=400)
        assert out.exit_code == 0 and flag.flag in out.output, out.output
    paper = getattr(BATTERY_PRESETS["paper"], flag.name)
    given = ",".join(map(str, paper)) if isinstance(paper, tuple) else paper
    assert battery_overrides("bpd", **{flag.name: given})[flag.name] == paper
    assert flag.name in BATTERY_KEYS
    assert set(BATTERY_KEYS) == {f.name for f in fields(BatteryConfig)} - {"metrics", "eval_batch_size"}
    in_yaml = list(paper) if isinstance(paper, tuple) else paper
    suite = tmp_path / "s.yaml"
    suite.write_text(yaml.safe_dump({"learners": ["raw"], "datasets": ["synthetic"], "presets": ["smoke"],
                                     "battery": {flag.name: in_yaml}}))
    assert load_suite(suite).battery == {flag.name: in_yaml}

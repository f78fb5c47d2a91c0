"""Suites, reports and regression checks on real runs in a temporary store."""
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from repbench.suites.gate import check_suite, write_baseline
from repbench.cli import cli
from repbench.runs.records import this_process
from repbench.errors import RepbenchError
from repbench.report import build_report, records_from_mlflow, records_from_suite
from repbench.suites.schema import load_suite
from repbench.suites.runner import run_suite

ROOT = Path(__file__).resolve().parents[2]

SUITE = """
name: tiny
learners:
  - name: vae
  - {name: lpvae, options: {h: 1, epochs: 1}}
datasets: [synthetic]
presets: [smoke]
seeds: [0, 1]
metrics: [bpd, mutual_info, intrinsic_dim, linear_probe, rep_types]
battery: {probe_seeds: 1, test_samples: 5}
thresholds:
  - {metric: linear_probe, min: 20}
  - {learner: "lpvae-*", metric: bpd, max: 10}
baseline: {file: tiny-baseline.json, tolerance: {bpd: 0.01}}
compare: [[vae, lpvae-h1]]
"""


def write(tmp_path, text, name="suite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_shipped_suites_parse():
    for path in sorted((ROOT / "benchmarks").glob("*.yaml")):
        suite = load_suite(path)
        assert suite.cells and suite.name, path
    assert {c.display for c in load_suite(ROOT / "benchmarks" / "mnist-quick.yaml").cells} == {
        "vae", "lpvae-h1", "lpvae-h2", "fpvae"}


@pytest.mark.parametrize("text,pattern", [
    ("name: x\nlearners: [vae]\ncolour: red\n", r"unknown key 'colour' in the suite"),
    ("name: x\nlearners: [{name: vae, opts: {}}]\n", r"unknown key 'opts' in a learner entry"),
    ("name: x\nlearners: [vae]\nthresholds: [{metric: bpd}]\n", r"needs min or max"),
    ("name: x\nlearners: [vae]\nthresholds: [{metric: bpd, maximum: 3}]\n", r"unknown key 'maximum' in a threshold"),
    ("name: x\n", r"'learners' is required"),
    ("name: [unclosed\n", r"not valid YAML"),
    ("name: x\nlearners: [vae]\nbattery: {seeds: 3}\n", r"unknown key 'seeds' in battery"),
])
def test_bad_suite_files_name_the_key_and_file(tmp_path, text, pattern):
    path = write(tmp_path, text)
    with pytest.raises(RepbenchError, match=pattern) as err:
        load_suite(path)
    assert str(path) in str(err.value)


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("suite")
    suite = load_suite(write(tmp, SUITE))
    outcomes = run_suite(suite, results_dir=tmp / "results", progress=False)
    return suite, tmp / "results", outcomes


def test_suite_runs_every_cell_then_reuses_them(ran):
    suite, results, outcomes = ran
    assert [o["status"] for o in outcomes] == ["FINISHED"] * 4
    again = run_suite(suite, results_dir=results, progress=False)
    assert [o["status"] for o in again] == ["REUSED"] * 4
    assert len(list((results / "runs").iterdir())) == 4


def test_rerun_forces_new_runs(tmp_path):
    suite = load_suite(write(tmp_path, SUITE.replace("seeds: [0, 1]", "seeds: [0]").replace("  - name: vae\n", "")
                             .replace("compare: [[vae, lpvae-h1]]\n", "")))
    run_suite(suite, results_dir=tmp_path / "r", progress=False)
    time.sleep(1.1)  # run folders are stamped to the second
    out = run_suite(suite, results_dir=tmp_path / "r", rerun=True, progress=False)
    assert [o["status"] for o in out] == ["FINISHED"] and len(list((tmp_path / "r" / "runs").iterdir())) == 2


def test_a_failing_cell_does_not_stop_the_suite(tmp_path):
    text = SUITE.replace("  - name: vae\n", "  - {name: vae, options: {lr: 1.0e+30}}\n").replace("[0, 1]", "[0]")
    path = write(tmp_path, text)
    result = CliRunner().invoke(cli, ["suite", str(path), "--results-dir", str(tmp_path / "r"), "-q"])
    assert result.exit_code == 1
    assert "FAILED" in result.output and "FINISHED" in result.output
    assert "1 of 2 cells failed" in result.stderr and "non-finite loss" in result.stderr


def test_report_tables_from_suite_and_from_mlflow(ran, tmp_path):
    suite, results, _ = ran
    records = records_from_suite(suite, results)
    md = build_report(records, "markdown", tmp_path / "spectra.png", "tiny")
    assert "| lpvae-h1" in md and " ± " in md and "bpd (bits/dim, ↓)" in md and "linear_probe (%, ↑)" in md
    assert "sample k=100" in md and "MAP mean" in md and (tmp_path / "spectra.png").exists()
    assert "\\toprule" in build_report(records, "latex")
    paper = [{"dataset": "synthetic", "learner": "vae", "metric": "bpd", "value": 1.23, "source": "Table 9"}]
    side = build_report(records, "markdown", paper=paper)
    assert "1.23" in side and "Table 9" in side
    df = pd.read_csv(pd.io.common.StringIO(build_report(records, "csv")))
    bpd = df[df["metric"] == "bpd"]
    assert list(bpd["learner"]) == ["vae", "lpvae-h1"] and set(bpd["n_seeds"]) == {2}
    from_mlflow = records_from_mlflow(f"sqlite:///{results / 'mlflow.db'}", "repbench", {"suite": "tiny"})
    assert len(from_mlflow) == 4
    rows = [line for line in build_report(from_mlflow, "markdown").splitlines() if line.startswith("| lpvae-h1")]
    assert len(rows) == 1 and "2" in rows[0].split("|")[4]  # one row, two seeds


def test_json_and_csv_reports_are_tidy_rows_that_validate_against_the_schema_and_round_trip(ran, tmp_path):
    import jsonschema
    from repbench.report import read_tidy
    from repbench.report.tidy import SCHEMA
    suite, results, _ = ran
    for fmt in ("json", "csv"):
        out = CliRunner().invoke(cli, ["report", "--suite", str(suite.path), "--results-dir", str(results),
                                       "--format", fmt, "--out", str(tmp_path / f"report.{fmt}")])
        assert out.exit_code == 0, out.output
    text = (tmp_path / "report.json").read_text()
    jsonschema.validate(json.loads(text), json.loads(SCHEMA.read_text()))
    rows = read_tidy(text)
    assert read_tidy((tmp_path / "report.csv").read_text()) == rows == json.loads(text)["rows"]
    keys = [(r["learner"], r["dataset"], r["preset"], r["metric"]) for r in rows]
    assert len(keys) == len(set(keys))                     # one row per learner x dataset x preset x value
    by = {(r["learner"], r["metric"]): r for r in rows}
    runs = {}
    for folder in (results / "runs").iterdir():
        record = json.loads((folder / "metrics.json").read_text())
        runs.setdefault(record["display_name"], {})[record["seed"]] = record["metrics"]
    for learner in ("vae", "lpvae-h1"):
        per_seed = [runs[learner][s]["bpd"] for s in (0, 1)]
        bpd = by[(learner, "bpd")]
        assert bpd["values"] == per_seed and bpd["seeds"] == [0, 1] and bpd["n_seeds"] == 2
        assert bpd["mean"] == pytest.approx(sum(per_seed) / 2, abs=1e-12)
        assert bpd["std"] == pytest.approx(abs(per_seed[0] - per_seed[1]) / 2 ** 0.5, abs=1e-12)
        assert (bpd["unit"], bpd["direction"], bpd["status"]) == ("bits/dim", "lower", "ok")
        assert (bpd["settings"], bpd["metric_version"], bpd["model_version"]) == ({"elbo_samples": 1}, 1, 2)
        linear = by[(learner, "linear_probe.sample_k1")]
        assert (linear["entry"], linear["metric_version"], linear["unit"], linear["direction"]) == \
            ("rep_types", 2, "%", "higher")
        assert linear["settings"]["test_samples"] == 5 and linear["settings"]["linear_method"] == "linearsvc"
    assert by[("vae", "mutual_info")]["direction"] == "neither"
    invalid = json.loads(text)
    invalid["rows"][0]["mean"] = None  # an "ok" row without its number breaks the schema
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(invalid, json.loads(SCHEMA.read_text()))
    md = build_report(records_from_suite(suite, results))
    import re
    assert "Code versions that made these tables" in md and re.search(r"\| model +\| lpvae-h1 +\| 2 +\|", md)
    assert re.search(r"\| metric +\| rep_types +\| 2 +\|", md) and re.search(r"\| metric +\| bpd +\| 1 +\|", md)


def test_check_passes_then_catches_regressions_and_drift(ran, tmp_path):
    suite, results, _ = ran
    write_baseline(suite, results)
    failures, passes = check_suite(suite, results)
    assert failures == [] and len(passes) == 2 + 1 + 2  # probe x 2 learners, bpd x lpvae-*, 2 baseline lines
    strict = load_suite(write(suite.path.parent, SUITE.replace("min: 20", "min: 101"), "strict.yaml"))
    failures, _ = check_suite(strict, results)
    assert any(f.startswith("REGRESSION linear_probe vae") and "threshold >= 101" in f for f in failures)
    stored = suite.baseline_file.read_text()
    for shift, verdict in ((-1.0, "REGRESSION bpd lpvae-h1"), (1.0, "IMPROVED bpd lpvae-h1")):
        base = json.loads(stored)  # bpd is lower-is-better: a baseline 1 lower makes today's 1 worse
        base["results"][0]["metrics"]["bpd"] += shift
        base["results"][0]["seeds"]["bpd"] = [v + shift for v in base["results"][0]["seeds"]["bpd"]]
        suite.baseline_file.write_text(json.dumps(base))
        failures, passes = check_suite(suite, results)
        found = failures if verdict.startswith("REGRESSION") else passes
        assert [f for f in found if f.startswith(verdict)] and "(mean of seeds 0, 1) vs baseline" in \
            next(f for f in found if f.startswith(verdict)), (failures, passes)
        assert failures == [] if shift > 0 else len(failures) == 1
    out = CliRunner().invoke(cli, ["check", str(suite.path), "--results-dir", str(results)])
    assert out.exit_code == 0 and "IMPROVED bpd" in out.output and "--write-baseline" in out.output
    took = CliRunner().invoke(cli, ["check", str(suite.path), "--results-dir", str(results), "--write-baseline"])
    assert took.exit_code == 0, took.output  # the improvement becomes the baseline: today's values, each seed's
    failures, passes = check_suite(suite, results)
    assert failures == [] and not any(p.startswith("IMPROVED") for p in passes), (failures, passes)
    assert any(p.startswith("ok  bpd lpvae-h1") and "+0.000" in p for p in passes), passes


# Issue 30, item 6: only a change for the worse fails, in the metric's own direction; "neither" metrics keep a
# two-sided band; with several seeds on both sides, a one-sided Welch test decides whether it is beyond the tolerance.
# (metric, tolerance, the baseline's values per seed, today's, the verdict, words of its line)
VERDICTS = [
    ("bpd", 0.05, [9.0], [8.0], "IMPROVED", "-1.000, tolerance 0.05 (means compared); `check --write-baseline`"),
    ("bpd", 0.05, [9.0], [9.2], "REGRESSION", "9.200 (seed 0) vs baseline 9.000: +0.200, tolerance 0.05"),
    ("bpd", 0.05, [9.0], [9.04], "ok", "+0.040"),
    ("linear_probe", 1.0, [90.0], [95.0], "IMPROVED", "+5.00"),
    ("linear_probe", 1.0, [90.0], [88.0], "REGRESSION", "-2.00, tolerance 1"),
    ("mutual_info", 0.5, [1.0], [2.0], "DRIFT", "+1.00"),
    ("mutual_info", 0.5, [1.0], [0.2], "DRIFT", "-0.80"),
    ("mutual_info", 0.5, [1.0], [1.3], "ok", "+0.30"),
    ("linear_probe", 0.5, [90.0, 91.0, 92.0], [89.0, 90.0, 91.0], "ok",
     "90.00 (mean of seeds 0, 1, 2) vs baseline 91.00 (mean of 3 seeds): -1.00, tolerance 0.5 (one-sided Welch test "
     "over 3 vs 3 seeds, p = 0.29)"),
    ("linear_probe", 0.5, [90.0, 91.0, 92.0], [85.0, 86.0, 87.0], "REGRESSION", "one-sided Welch test over 3 vs 3"),
    ("bpd", 0.01, [9.00, 9.02, 9.04], [9.10, 9.12, 9.14], "REGRESSION", "+0.100, tolerance 0.01 (one-sided Welch"),
    ("bpd", 0.01, [9.00, 9.02, 9.04], [8.90, 8.92, 8.94], "IMPROVED", "-0.100"),
    ("mutual_info", 0.1, [1.0, 1.1, 1.2], [1.5, 1.6, 1.7], "DRIFT", "one-sided Welch test over 3 vs 3 seeds"),
    ("linear_probe", 1.0, [90.0], [float("nan")], "REGRESSION", "cannot be compared never passes"),
    ("bpd", 0.05, [9.0], [None], "REGRESSION", "n/a (the metric does not apply to this learner)"),
    ("bpd", 0.05, [None], [None], None, ""),  # does not apply, then or now
]


@pytest.mark.parametrize("case", VERDICTS, ids=[f"{c[0]}-{c[4]}-{len(c[2])}-{i}" for i, c in enumerate(VERDICTS)])
def test_the_gate_fails_only_a_change_for_the_worse(case):
    from repbench.suites.gate import verdict
    metric, tol, old, new, expected, words = case
    status, line = verdict(metric, tol, old, new, list(range(len(new))))
    assert status == expected and words in line, (status, line)


def test_a_baseline_written_before_per_seed_values_is_still_read():
    from repbench.suites.gate import read_baseline
    smoke = load_suite(ROOT / "benchmarks" / "smoke.yaml")
    assert "seeds" not in json.loads(smoke.baseline_file.read_text())["results"][0]  # the old format
    base = read_baseline(smoke)
    assert base[("vae", "synthetic", "smoke")]["seeds"] is None
    assert base[("vae", "synthetic", "smoke")]["metrics"]["bpd"] == pytest.approx(9.1639, abs=1e-4)


def test_check_flags_cells_never_run(tmp_path):
    suite = load_suite(write(tmp_path, SUITE))
    failures, _ = check_suite(suite, tmp_path / "empty")
    assert any(f.startswith("MISSING") for f in failures)


def test_a_seed_missing_fails_once_and_is_not_gated_on_the_other_seeds(ran, tmp_path):
    import shutil
    suite, results, _ = ran
    copy = tmp_path / "results"
    shutil.copytree(results, copy)
    write_baseline(suite, copy)
    for folder in copy.glob("runs/lpvae-h1-*-s1-*"):
        shutil.rmtree(folder)
    failures, passes = check_suite(suite, copy)
    assert [f for f in failures if "lpvae-h1" in f] == [
        f"MISSING  lpvae-h1 / synthetic / smoke / seed 1: no finished run; run `repbench suite {suite.path} "
        f"--results-dir {copy}`"]
    assert not [p for p in passes if "lpvae-h1" in p] and any("vae (" in p for p in passes)
    with pytest.raises(RepbenchError, match=r"partial baseline: 1 cell\(s\) .*lpvae-h1 / synthetic / smoke / seed 1"):
        write_baseline(suite, copy)


@pytest.mark.slow
def test_ui_serves_the_local_store(ran):
    _, results, _ = ran
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "repbench.cli", "ui", "--port", str(port), "--results-dir",
                             str(results)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    try:
        assert "starting" in proc.stdout.readline()
        line = proc.stdout.readline()  # printed only once the server answers (or '' if `ui` gave up)
        assert f"http://127.0.0.1:{port}" in line, line
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).status == 200
    finally:
        proc.terminate()  # repbench ui passes SIGTERM on to the MLflow server it started
        try:
            proc.communicate(timeout=30)
        finally:
            os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None


LINUX_PROC = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")


@pytest.mark.parametrize("left", ["stopped", "lost", pytest.param("rebooted", marks=LINUX_PROC),
                                  pytest.param("pid-reused", marks=LINUX_PROC)])
def test_suite_continues_an_interrupted_cell_in_its_own_folder(tmp_path, left):
    """`stopped`: Ctrl-C recorded KILLED. `lost`: the machine went away mid-run, so run.json still says RUNNING
    for a process that no longer exists. `rebooted` and `pid-reused`: it names a pid that runs now (this test's
    own), but from an earlier boot (a fresh machine has the same host name and reuses pids), or a process that
    started at another time."""
    (tmp_path / "s.yaml").write_text("name: one\nlearners: [{name: vae}]\ndatasets: [synthetic]\npresets: [smoke]\n"
                                     "metrics: [bpd]\nbattery: {iw_samples: 2}\n")
    suite = load_suite(tmp_path / "s.yaml")
    results = tmp_path / "results"
    run_suite(suite, results_dir=results, progress=False)
    (folder,) = (results / "runs").iterdir()
    # make it look interrupted after its last epoch: not finished, no metrics yet
    state = json.loads((folder / "run.json").read_text())
    ended = subprocess.Popen(["true"])
    ended.wait()  # its pid names no live process
    left_as = {"stopped": {"status": "KILLED"},
               "lost": {"status": "RUNNING", "process": {"hostname": platform.node(), "pid": str(ended.pid)}},
               "rebooted": {"status": "RUNNING", "process": {**this_process(), "boot_id": "an-earlier-boot"}},
               "pid-reused": {"status": "RUNNING", "process": {**this_process(), "pid_start_ticks": "1"}}}[left]
    (folder / "run.json").write_text(json.dumps({**state, **left_as}))
    (folder / "metrics.json").unlink()
    (outcome,) = run_suite(suite, results_dir=results, progress=False)
    assert outcome["status"] == "FINISHED" and [f.name for f in (results / "runs").iterdir()] == [folder.name]
    assert json.loads((folder / "run.json").read_text())["status"] == "FINISHED"
    assert (folder / "metrics.json").exists()


def test_a_live_process_is_never_taken_for_an_orphan():
    from repbench.runs.records import _alive
    me = this_process()
    old_record = {"hostname": me["hostname"], "pid": me["pid"]}  # run.json of before boot ids were recorded
    assert _alive(me) and _alive(old_record) and _alive({**me, "pid_start_ticks": ""}) and _alive({})


def test_parallel_cells_finish_in_order_with_their_share_of_the_cores(tmp_path, capsys):
    import torch
    from mlflow.tracking import MlflowClient
    (tmp_path / "s.yaml").write_text("name: two\nlearners: [vae, {name: lpvae, options: {h: 1}}]\n"
                                     "datasets: [synthetic]\npresets: [smoke]\nmetrics: [bpd]\n"
                                     "battery: {iw_samples: 2}\n")
    suite = load_suite(tmp_path / "s.yaml")
    parallel = run_suite(suite, results_dir=tmp_path / "par", jobs=2)
    lines = capsys.readouterr().out.splitlines()  # each worker's epochs, shown by the suite
    for name in ("vae-synthetic-smoke-s0", "lpvae-h1-synthetic-smoke-s0"):
        assert [line for line in lines if line.startswith(f"{name}: epoch 1/1, train_loss ")], lines
    assert [o["cell"] for o in parallel] == list(suite.cells)
    assert [o["status"] for o in parallel] == ["FINISHED", "FINISHED"], parallel
    for o in parallel:
        state = json.loads((Path(o["record"]["folder"]) / "run.json").read_text())
        assert state["environment"]["threads"] == str(max(1, torch.get_num_threads() // 2))
        assert state["epochs_done"] == 1 and state["epoch_finished_at"]
    runs = MlflowClient(f"sqlite:///{tmp_path / 'par' / 'mlflow.db'}").search_runs(
        [e.experiment_id for e in MlflowClient(f"sqlite:///{tmp_path / 'par' / 'mlflow.db'}").search_experiments()])
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]
    serial = run_suite(suite, results_dir=tmp_path / "ser")
    assert "lpvae-h1-synthetic-smoke-s0: epoch 1/1, train_loss " in capsys.readouterr().out
    for p, s in zip(parallel, serial):  # another thread count reorders sums, nothing more
        assert p["record"]["metrics"]["bpd"] == pytest.approx(s["record"]["metrics"]["bpd"], rel=1e-4)


def test_only_runs_the_named_learners_cells_and_the_whole_suite_reuses_them(tmp_path):
    (tmp_path / "s.yaml").write_text("name: two\nlearners: [vae, {name: lpvae, options: {h: 1}}]\n"
                                     "datasets: [synthetic]\npresets: [smoke]\nseeds: [0, 1]\nmetrics: [bpd]\n"
                                     "battery: {iw_samples: 2}\n")
    args = ["suite", str(tmp_path / "s.yaml"), "-q", "--results-dir", str(tmp_path / "r")]
    first = CliRunner().invoke(cli, args + ["--only", "lpvae-h1"])
    assert first.exit_code == 0, first.output
    assert "--only: 2 of the suite's 4 cells; the whole suite runs the others" in first.stderr
    assert sorted(f.name.split("-synthetic")[0] for f in (tmp_path / "r" / "runs").iterdir()) == ["lpvae-h1"] * 2
    partial = CliRunner().invoke(cli, ["report", "--suite", str(tmp_path / "s.yaml"), "--results-dir",
                                       str(tmp_path / "r")])
    assert partial.exit_code == 0 and "note: 2 of 4 cells have no finished run and are left out: vae / synthetic" \
        in partial.output, partial.output
    whole = CliRunner().invoke(cli, args)
    assert whole.exit_code == 0, whole.output
    header = next(line for line in whole.output.splitlines() if line.startswith("| cell"))
    assert "| bpd" in header and "mutual_info" not in header  # the columns of what the suite measures
    statuses = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in whole.output.splitlines()
                if line.startswith("| ") and "seed" in line}
    assert statuses == {"lpvae-h1 / synthetic / smoke / seed 0": "REUSED", "lpvae-h1 / synthetic / smoke / seed 1":
                        "REUSED", "vae / synthetic / smoke / seed 0": "FINISHED",
                        "vae / synthetic / smoke / seed 1": "FINISHED"}, whole.output


def test_jobs_below_one_is_an_error(tmp_path):
    (tmp_path / "s.yaml").write_text("name: x\nlearners: [vae]\ndatasets: [synthetic]\npresets: [smoke]\n")
    with pytest.raises(RepbenchError, match="--jobs must be >= 1"):
        run_suite(load_suite(tmp_path / "s.yaml"), results_dir=tmp_path, jobs=0)


def test_a_reused_run_is_completed_with_what_the_suite_measures_and_tagged(tmp_path):
    """A finished run that measured less, or with other settings, is reused for training only: the suite measures
    the rest from the cached representations and records how every value was measured."""
    results = tmp_path / "r"
    first = CliRunner().invoke(cli, ["run", "--model", "fpvae", "--preset", "smoke", "--dataset", "synthetic", "-q",
                                     "--metrics", "bpd", "--linear-method", "svc", "--results-dir", str(results)])
    assert first.exit_code == 0, first.output
    (folder,) = (results / "runs").iterdir()
    smoke = load_suite(ROOT / "benchmarks" / "smoke.yaml")
    outcomes = {str(o["cell"]): o for o in run_suite(smoke, results_dir=results, progress=False)}
    reused = outcomes["fpvae / synthetic / smoke / seed 0"]
    assert reused["status"] == "REUSED" and Path(reused["record"]["folder"]) == folder
    assert set(reused["record"]["measured_now"]) == {"mutual_info", "intrinsic_dim", "linear_probe"}
    record = json.loads((folder / "metrics.json").read_text())
    linear = dict(record["measured_with"]["linear_probe"])
    assert linear.pop("fits")["linear_probe"]["converged"] == [True]
    assert linear == {"probe_seeds": 1, "linear_method": "linearsvc", "probe_protocol": "fixed", "version": 2}
    assert record["measured_with"]["bpd"] == {"elbo_samples": 1, "version": 1}
    assert all(record["metrics"][m] is not None for m in ("bpd", "mutual_info", "intrinsic_dim", "linear_probe"))
    again = run_suite(smoke, results_dir=results, progress=False)  # now nothing is missing
    assert all(o["status"] == "REUSED" and not o["record"].get("measured_now") for o in again)
    from_tags = records_from_mlflow(f"sqlite:///{results / 'mlflow.db'}", "repbench", {"suite": "smoke"})
    assert len(from_tags) == len(records_from_suite(smoke, results)) == 4
    failures, _ = check_suite(smoke, results)
    assert not [f for f in failures if "MISSING" in f or "missing" in f], failures


def test_nan_and_infinite_values_fail_every_gate(ran, tmp_path):
    import shutil
    suite, results, _ = ran
    copy = tmp_path / "results"
    shutil.copytree(results, copy)
    write_baseline(suite, copy)
    for state in copy.glob("runs/lpvae-h1*/metrics.json"):
        record = json.loads(state.read_text())
        record["metrics"].update(bpd=float("nan"), linear_probe=float("inf"))
        state.write_text(json.dumps(record))
    failures, passes = check_suite(suite, copy)
    assert any(f.startswith("REGRESSION bpd lpvae-h1") and "nan" in f for f in failures), failures
    assert any(f.startswith("REGRESSION linear_probe lpvae-h1") and "inf" in f for f in failures)
    assert any(f.startswith("REGRESSION bpd lpvae-h1") and "vs baseline" in f and "never passes" in f
               for f in failures)  # bpd is lower-is-better: a failing baseline line is a REGRESSION, not a DRIFT
    assert not any("lpvae-h1" in p and ("bpd" in p or "linear_probe" in p) for p in passes)
    with pytest.raises(RepbenchError, match="non-finite values"):
        write_baseline(suite, copy)
    md = build_report(records_from_suite(suite, copy))
    assert "non-finite" in md and "nan" not in md.lower().replace("non-finite", "").replace("nan or infinite", "")


@pytest.mark.slow
def test_ctrl_c_in_a_suite_advises_running_the_suite_again(tmp_path):
    (tmp_path / "s.yaml").write_text("name: slow\nlearners: [{name: vae, options: {epochs: 50, train_limit: 600}}]\n"
                                     "datasets: [synthetic]\npresets: [smoke]\nmetrics: [bpd]\n"
                                     "battery: {iw_samples: 2}\n")
    proc = subprocess.Popen([sys.executable, "-m", "repbench.cli", "suite", str(tmp_path / "s.yaml"), "-q",
                             "--results-dir", str(tmp_path / "r")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not list(tmp_path.glob("r/runs/*/checkpoint.pt")) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "run the same `repbench suite` command again" in err and "--resume" not in err
    (folder,) = (tmp_path / "r" / "runs").iterdir()
    assert json.loads((folder / "run.json").read_text())["status"] == "KILLED"


def test_report_compares_pairs_across_seeds_and_draws_its_figures(ran, tmp_path):
    from repbench.report.tables import build
    from repbench.report.stats import welch
    suite, results, _ = ran
    records = records_from_suite(suite, results)
    report = build(records, "tiny", compare=suite.compare, figures_dir=tmp_path / "figs")
    (section,) = [s for s in report.sections if s.key == "compare"]
    row = next(r for r in section.rows if r[3] == "bpd")
    vae = [r["bpd"] for r in records if r["learner"] == "vae"]
    lp = [r["bpd"] for r in records if r["learner"] == "lpvae-h1"]
    d = welch(vae, lp)
    assert row[0] == "lpvae-h1 − vae" and row[5].mean == pytest.approx(d.diff)
    assert row[6] == f"[{d.low:+.3f}, {d.high:+.3f}]" and row[7] == ("yes" if d.excludes_zero else "no")
    names = {p.name for _, p in report.figures}
    assert names == {"spectra.png", "probe_vs_mi.png", "curves.png"}
    for _, path in report.figures:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = CliRunner().invoke(cli, ["report", "--suite", str(suite.path), "--results-dir", str(results),
                                   "--figures", str(tmp_path / "cli-figs")])
    assert out.exit_code == 0 and "Differences across training seeds" in out.output and "95% interval" in out.output


def test_report_out_into_a_new_folder_makes_it(ran, tmp_path):
    suite, results, _ = ran
    target = tmp_path / "new" / "folder" / "report.md"
    out = CliRunner().invoke(cli, ["report", "--suite", str(suite.path), "--results-dir", str(results), "--out",
                                   str(target)])
    assert out.exit_code == 0, out.output
    assert target.read_text().rstrip("\n") == out.stdout.rstrip("\n") and "Table 2" in target.read_text()


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no pdflatex here (apt-get install texlive-latex-base "
                                                             "texlive-latex-recommended)")
def test_latex_tables_compile_with_pdflatex(ran, tmp_path):
    suite, results, _ = ran
    tables = build_report(records_from_suite(suite, results), "latex", compare=suite.compare,
                          paper=[{"dataset": "synthetic", "learner": "vae", "metric": "bpd", "value": 1.5,
                                  "source": "Table 9 (made up for the test)"}])
    assert "\\begin{table}" in tables and "\\caption{" in tables and "\\pm" in tables and "\\mathbf{" in tables
    assert "± 0.00" not in tables
    (tmp_path / "doc.tex").write_text("\\documentclass{article}\\usepackage{booktabs}\\usepackage{graphicx}\n"
                                      "\\begin{document}\n" + tables + "\\end{document}\n")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "Overfull \\hbox" not in done.stdout, "a table is wider than the page"
    assert (tmp_path / "doc.pdf").stat().st_size > 1000


def test_ray_not_installed_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where Ray is not installed
    out = CliRunner().invoke(cli, ["suite", str(Path(__file__).resolve().parents[2] / "benchmarks" / "smoke.yaml"),
                                   "--ray", "auto", "--results-dir", str(tmp_path)])
    assert out.exit_code == 2 and out.stderr == "error: --ray needs Ray, which is not installed here: " \
                                                "pip install 'repbench[ray]'\n", out.output


def test_spread_over_seeds_is_the_sample_std():
    from repbench.report.stats import stat
    assert stat([1.0, 2.0, 3.0], 2).text == "2.00 ± 1.00"  # n - 1: the population std would be 0.82
    assert stat([5.0], 2).text == "5.00"


def test_pairs_are_compared_on_the_probes_with_the_fewest_labels():
    from repbench.report.tables import build
    from repbench.report.stats import welch
    acc = {"vae": (60.0, 61.0, 62.0), "lpvae-h2": (64.0, 66.0, 65.0)}
    records = [{"learner": lr, "dataset": "d", "preset": "quick", "seed": s, "linear_probe": 80.0 + s,
                "linear_probe.labels_100": acc[lr][s], "linear_probe.labels_600": 70.0 + s}
               for lr in acc for s in range(3)]
    (section,) = [s for s in build(records, compare=[("vae", "lpvae-h2")]).sections if s.key == "compare"]
    rows = {r[3]: r for r in section.rows}
    d = welch(acc["vae"], acc["lpvae-h2"])                     # +4.0, the same spread on both sides
    assert rows["linear_probe.labels_100"][5].mean == pytest.approx(4.0)
    assert rows["linear_probe.labels_100"][6] == f"[{d.low:+.1f}, {d.high:+.1f}]" and d.low > 0
    assert rows["linear_probe.labels_100"][7] == "yes" and "linear_probe.labels_600" not in rows
    assert rows["linear_probe"][7] == "no"                      # identical across learners


def test_table6_puts_the_published_accuracy_beside_a_subset_of_its_dataset():
    records = [{"learner": "m2-h1-n100", "dataset": "mnist5k", "preset": "quick", "seed": s,
                "classifier_accuracy": a} for s, a in ((0, 60.0), (1, 62.0))]
    paper = [{"dataset": "mnist", "learner": "m2-h1-n100", "metric": "classifier_accuracy", "value": 96.41,
              "source": "Table 6"}, {"dataset": "svhn", "learner": "m2-h1-n100", "metric": "classifier_accuracy",
                                     "value": 50.0, "source": "Table 6"}]
    table6 = next(s for s in build_report(records, "markdown", paper=paper).split("\n\n") if "| m2-h1-n100" in s
                  and "Table 6" in s)
    assert "61.0 ± 1.4" in table6 and "96.41 (Table 6)" in table6 and "50 (" not in table6


def test_an_unconverged_probe_fails_every_gate_and_shows_as_such(tmp_path, monkeypatch, capsys):
    """A linear probe whose solver stops short is recorded as such per value (measured_with's fits), fails
    `check` like NaN (a threshold any number would pass included), and never fills a table cell."""
    from mlflow.tracking import MlflowClient
    import repbench.metrics.probes as probes
    from repbench.cli import print_result
    from repbench.report import tidy_rows
    suite = load_suite(write(tmp_path, "name: short\nlearners: [pca]\ndatasets: [synthetic]\npresets: [smoke]\n"
                                       "metrics: [linear_probe]\nthresholds: [{metric: linear_probe, min: 0}]\n"))
    monkeypatch.setattr(probes, "MAX_ITER", 1)  # the real solver, stopped after one iteration
    (outcome,) = run_suite(suite, results_dir=tmp_path / "r", progress=False)
    record = outcome["record"]
    assert record["measured_with"]["linear_probe"]["fits"] == {"linear_probe": {"converged": [False],
                                                                                "iterations": [1]}}
    assert 0 <= record["metrics"]["linear_probe"] <= 100   # a number was measured, and is kept, flagged
    failures, passes = check_suite(suite, tmp_path / "r")
    assert any(f.startswith("REGRESSION linear_probe pca") and "nan" in f for f in failures), failures
    assert not any("linear_probe" in p for p in passes)
    md = build_report(records_from_suite(suite, tmp_path / "r"))
    assert "| unconverged " in md
    (row,) = [r for r in tidy_rows(records_from_suite(suite, tmp_path / "r")) if r["metric"] == "linear_probe"]
    assert (row["status"], row["mean"], row["values"], row["n_seeds"]) == ("unconverged", None, [None], 0)
    tags = MlflowClient(f"sqlite:///{tmp_path / 'r' / 'mlflow.db'}").get_run(record["mlflow_run_id"]).data.tags
    assert tags["unconverged"] == "linear_probe,linear_probe_std"
    assert json.loads(tags["measured_with.linear_probe"])["fits"]["linear_probe"]["converged"] == [False]
    from_mlflow = records_from_mlflow(f"sqlite:///{tmp_path / 'r' / 'mlflow.db'}", "repbench", {"suite": "short"})
    assert from_mlflow[0]["linear_probe"] == "unconverged"
    print_result(record)
    printed = capsys.readouterr()
    assert "unconverged (" in printed.out and "linear_probe: the probe's solver stopped" in printed.err
    monkeypatch.undo()  # the same settings and version: reused as it is, still flagged
    (again,) = run_suite(suite, results_dir=tmp_path / "r", progress=False)
    assert again["status"] == "REUSED" and not again["record"].get("measured_now")


def test_a_metric_whose_code_version_changed_is_measured_again_and_the_rest_reused(tmp_path):
    """A record the previous code wrote (no versions: version 1 of every metric; no probe protocol: the fixed
    one) keeps its intrinsic_dim and MLP probe, whose code is unchanged, and has its linear probe (version 2: the
    primal solver) measured again."""
    suite = load_suite(write(tmp_path, "name: versions\nlearners: [pca]\ndatasets: [synthetic]\npresets: [smoke]\n"
                                       "metrics: [intrinsic_dim, linear_probe, nonlinear_probe]\n"))
    (first,) = run_suite(suite, results_dir=tmp_path / "r", progress=False)
    path = Path(first["record"]["folder"]) / "metrics.json"
    old = json.loads(path.read_text())
    for settings in old["measured_with"].values():
        del settings["version"]
        settings.pop("fits", None)
        settings.pop("probe_protocol", None)
    old["metrics"]["linear_probe"] = -1.0   # what the old code measured: to be replaced, not served
    path.write_text(json.dumps(old))
    (again,) = run_suite(suite, results_dir=tmp_path / "r", progress=False)
    assert again["status"] == "REUSED" and again["record"]["measured_now"] == ["linear_probe"]
    now = json.loads(path.read_text())
    assert now["metrics"]["linear_probe"] == first["record"]["metrics"]["linear_probe"] >= 0
    assert now["measured_with"]["linear_probe"]["version"] == 2 and now["measured_with"]["intrinsic_dim"] == \
        {"id_threshold": 0.01, "version": 1}


def test_a_baseline_that_fails_the_suites_own_thresholds_is_not_stored(ran, tmp_path):
    suite, results, _ = ran
    strict = load_suite(write(tmp_path, SUITE.replace("metric: bpd, max: 10", "metric: bpd, max: 0.5")
                              .replace("tiny-baseline.json", "strict.json")))
    assert strict.cells == suite.cells
    with pytest.raises(RepbenchError, match=r"fails the suite's own thresholds: 1 failing \(bpd lpvae-h1 "):
        write_baseline(strict, results)
    assert not strict.baseline_file.exists()


def test_a_partial_suite_is_refused_as_partial_even_when_no_group_is_whole(ran, tmp_path):
    """Seed 1 of every learner removed: every group is left out, yet runs exist; the refusal names what is missing,
    not 'no finished runs'."""
    import shutil
    suite, results, _ = ran
    copy = tmp_path / "results"
    shutil.copytree(results, copy)
    for folder in copy.glob("runs/*-s1-*"):
        shutil.rmtree(folder)
    with pytest.raises(RepbenchError, match=r"partial baseline: 2 cell\(s\) .*seed 1"):
        write_baseline(suite, copy)
    with pytest.raises(RepbenchError, match=r"no finished runs of suite 'tiny'"):
        write_baseline(suite, tmp_path / "nothing")


def test_the_summary_shows_only_what_the_suite_measures(tmp_path):
    # a reused run may hold values the suite did not ask for, measured with settings it never chose
    base = ["--results-dir", str(tmp_path), "-q"]
    cell = "learners: [vae]\ndatasets: [synthetic]\npresets: [smoke]\n"
    (tmp_path / "both.yaml").write_text(f"name: both\n{cell}metrics: [bpd, intrinsic_dim]\n")
    (tmp_path / "bpd.yaml").write_text(f"name: bpd\n{cell}metrics: [bpd]\n")
    first = CliRunner().invoke(cli, ["suite", str(tmp_path / "both.yaml")] + base, catch_exceptions=False)
    assert first.exit_code == 0 and "intrinsic_dim" in first.output, first.output
    again = CliRunner().invoke(cli, ["suite", str(tmp_path / "bpd.yaml")] + base, catch_exceptions=False)
    header = next(line for line in again.output.splitlines() if line.startswith("| cell"))
    assert again.exit_code == 0 and "REUSED" in again.output and "bpd" in header and "intrinsic_dim" not in header

"""The command line: every bad input gives one line on stderr and a non-zero exit, never a traceback."""
import json
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from repbench.cli import EXIT_ERROR, cli


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def assert_one_line_error(result, pattern):
    import re
    assert result.exit_code == EXIT_ERROR, result.output
    err = result.stderr.strip()
    assert "Traceback" not in result.output and len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and re.search(pattern, err), err


@pytest.mark.parametrize("args,pattern", [
    (["--model", "lpvea"], r"unknown learner 'lpvea'; did you mean 'lpvae'\? \(available: .*fpvae.*vae\)"),
    (["--dataset", "nope"], r"unknown dataset 'nope'.*available: .*mnist5k"),
    (["--model", "lpvae", "--h", "-1"], r"h must be an integer >= 0"),
    (["--model", "fpvae", "--h", "2"], r"learner 'fpvae' takes no option 'h'"),
    (["--model", "vae", "--h", "1"], r"learner 'vae' takes no option 'h'"),
    (["-o", "widht=3"], r"takes no option 'widht' \(did you mean 'width'\?\)"),
    (["-o", "width=wide"], r"width' expects int, got 'wide'"),
    (["-o", "novalue"], r"--option expects KEY=VALUE"),
])
def test_bad_input_is_one_line(args, pattern, tmp_path):
    assert_one_line_error(invoke("run", "--results-dir", str(tmp_path), *args), pattern)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a CUDA device is present")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path):
    result = invoke("run", "--device", "cuda", "--preset", "smoke", "--results-dir", str(tmp_path))
    assert_one_line_error(result, r"no CUDA device is available \(use --device cpu\)")


def test_missing_data_says_how_to_get_it(tmp_path):
    result = invoke("run", "--dataset", "mnist", "--data-root", str(tmp_path), "--results-dir", str(tmp_path))
    assert_one_line_error(result, r"dataset 'mnist' not found .*--download")


def test_resume_without_an_interrupted_run(tmp_path):
    result = invoke("run", "--preset", "smoke", "--dataset", "synthetic", "--resume", "--results-dir", str(tmp_path))
    assert_one_line_error(result, r"no interrupted run")


def test_corrupt_checkpoint_on_resume(tmp_path):
    common = ["run", "--model", "vae", "--preset", "smoke", "--dataset", "synthetic", "--grid", "0", "-q",
              "--results-dir", str(tmp_path)]
    assert invoke(*common).exit_code == 0
    (folder,) = (tmp_path / "runs").iterdir()
    state = json.loads((folder / "run.json").read_text())
    (folder / "run.json").write_text(json.dumps({**state, "status": "KILLED"}))
    (folder / "checkpoint.pt").write_bytes(b"\x00" * 100)
    assert_one_line_error(invoke(*common, "--resume"), r"checkpoint .* is corrupt")


def test_nan_loss_fails_the_run_cleanly(tmp_path):
    result = invoke("run", "--model", "vae", "--preset", "smoke", "--dataset", "synthetic", "-o", "lr=1e30", "-q",
                    "--results-dir", str(tmp_path))
    assert_one_line_error(result, r"non-finite loss")
    (folder,) = (tmp_path / "runs").iterdir()
    state = json.loads((folder / "run.json").read_text())
    assert state["status"] == "FAILED" and "non-finite" in state["error"]
    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(state["mlflow_run_id"])
    assert run.info.status == "FAILED" and "non-finite" in run.data.tags["error"]


def test_an_unexpected_failure_fails_the_run_with_one_line_and_keeps_the_traceback(tmp_path, monkeypatch):
    """A failure inside a library (here a simulated kernel error) must not leave the run marked RUNNING."""
    import repbench.learners.torch_learner

    def kernel_error(*args, **kw):
        raise RuntimeError("INTERNAL ASSERT FAILED in a kernel\nsecond line")
    monkeypatch.setattr(repbench.learners.torch_learner, "train", kernel_error)
    result = invoke("run", "--model", "vae", "--preset", "smoke", "--dataset", "synthetic", "-q",
                    "--results-dir", str(tmp_path))
    assert_one_line_error(result, r"failed unexpectedly \(RuntimeError: INTERNAL ASSERT FAILED in a kernel\); "
                                  r"the traceback is in .*traceback.txt")
    (folder,) = (tmp_path / "runs").iterdir()
    state = json.loads((folder / "run.json").read_text())
    assert state["status"] == "FAILED" and "RuntimeError" in state["error"]
    assert "kernel_error" in (folder / "traceback.txt").read_text()
    from mlflow.tracking import MlflowClient
    assert MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(state["mlflow_run_id"]).info.status == "FAILED"


def test_ls_lists_learners_datasets_presets():
    out = invoke("ls").output
    for name in ("vae", "lpvae", "fpvae", "mnist5k", "fashion-mnist", "cifar10", "svhn", "synthetic", "smoke",
                 "quick", "paper"):
        assert name in out


def test_run_help_documents_every_option():
    out = invoke("run", "--help").output
    for opt in ("--model", "--h", "--dataset", "--preset", "--seed", "--epochs", "--device", "--tracking-uri",
                "--resume", "--option", "--download", "--data-root", "--results-dir"):
        assert opt in out


@pytest.mark.slow
def test_a_run_stopped_before_its_first_epoch_says_there_is_nothing_to_resume(tmp_path):
    args = [sys.executable, "-m", "repbench.cli", "run", "--model", "vae", "--epochs", "1", "--grid", "0", "-q",
            "--results-dir", str(tmp_path)]  # one epoch of 4,000 digits at quick width: caught before its end
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not list(tmp_path.glob("runs/*/run.json")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    (folder,) = (tmp_path / "runs").iterdir()
    state = json.loads((folder / "run.json").read_text())
    assert not (folder / "checkpoint.pt").exists(), "the epoch ended before the interrupt; the test needs a longer one"
    assert state["status"] == "KILLED" and "no epoch had finished, so there is nothing to resume" in state["error"]


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_mlflow_run(tmp_path):
    """A real process, a real Ctrl-C (SIGINT), then --resume."""
    args = [sys.executable, "-m", "repbench.cli", "run", "--model", "vae", "--preset", "smoke", "--dataset",
            "synthetic", "--epochs", "8", "-o", "train_limit=600", "-o", "width=32", "-o", "hidden=128", "--grid",
            "0", "-q", "--metrics", "bpd",
            "--results-dir", str(tmp_path)]
    # A shell's background job inherits SIGINT ignored, and Python then never raises KeyboardInterrupt: give the
    # child the default disposition, as a terminal's Ctrl-C would find it.
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not list(tmp_path.glob("runs/*/checkpoint.pt")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (proc.returncode, err[-3000:])
    assert "interrupted" in err and "--resume" in err and "Traceback" not in err
    (folder,) = (tmp_path / "runs").iterdir()
    first = json.loads((folder / "run.json").read_text())
    assert first["status"] == "KILLED" and "the last finished epoch's checkpoint is kept" in first["error"]

    done = subprocess.run(args + ["--resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    final = json.loads((folder / "run.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    assert final["status"] == "FINISHED" and final["mlflow_run_id"] == first["mlflow_run_id"]
    assert [r["epoch"] for r in metrics["history"]] == list(range(1, 9))
    from mlflow.tracking import MlflowClient
    run = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(first["mlflow_run_id"])
    assert run.info.status == "FINISHED" and "bpd" in run.data.metrics
    assert final["error"] is None and "error" not in run.data.tags  # the interruption's note went with it


def test_a_probe_mean_and_its_spread_print_to_the_same_decimals(capsys):
    from repbench.cli import print_result
    settings = {"linear_probe": {"probe_seeds": 3}, "nonlinear_probe": {"probe_seeds": 1}}
    metrics = {"bpd": 1.32249, "linear_probe": 86.3, "linear_probe_std": 0.0,
               "nonlinear_probe": 90.6667, "nonlinear_probe_std": 0.25}
    print_result({"name": "r", "status": "FINISHED", "folder": "f", "metrics": metrics, "measured_with": settings})
    out = capsys.readouterr().out
    assert "| 86.30 ± 0.00 " in out                         # not 86.3 ± 0.00
    assert "| 90.67 " in out and "90.67 ±" not in out        # one probe seed: no spread
    assert "| 1.322 " in out


def test_a_suite_summary_column_keeps_the_metric_decimals():
    from repbench.cli import _fmt
    metrics = {"linear_probe": 77.0, "bpd": 3.3, "intrinsic_dim": 16, "mutual_info": None}
    assert [_fmt(metrics, k) for k in ("linear_probe", "bpd", "intrinsic_dim", "mutual_info", "nonlinear_probe")] \
        == ["77.0", "3.300", "16", "n/a", "-"]


def test_a_run_of_a_finished_configuration_says_it_trains_again_and_how_to_reuse_it(tmp_path):
    common = ["run", "--model", "vae", "--preset", "smoke", "--dataset", "synthetic", "--grid", "0", "-q",
              "--metrics", "bpd", "--results-dir", str(tmp_path)]
    first = CliRunner().invoke(cli, common)
    assert first.exit_code == 0 and "note:" not in first.stderr, first.output
    (folder,) = (tmp_path / "runs").iterdir()
    again = CliRunner().invoke(cli, common)
    assert again.exit_code == 0, again.output
    assert f"note: {folder.name} is a finished run of this configuration; `repbench run` trains it again" in \
        again.stderr and f"`repbench eval --run {folder.name}`" in again.stderr and "a suite" in again.stderr
    assert len(list((tmp_path / "runs").iterdir())) == 2

"""The speed benchmarks and the GPU check run end to end at the smoke size and report every ratio they promise."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch


def load(name: str):
    path = Path(__file__).parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_speed_benchmark_reports_reference_fast_and_matmul_ratios(tmp_path):
    speed = load("speed")
    out = speed.main(["--presets", "smoke", "--min-seconds", "0", "--batch", "20", "--no-sampling",
                      "--device", "cpu", "--json", str(tmp_path / "speed.json")])
    assert out["matmul_gflops"] > 0 and (tmp_path / "speed.json").exists()
    fast = [r for r in out["training"] if r["impl"] == "fast"]
    assert len(fast) == len(speed.LEARNERS) == len(out["training"]) // 2
    assert all(r["speedup"] > 0 and 0 < r["fraction_of_matmul"] and r["images_per_s"] > 0 for r in fast)


def test_sampling_comparison_times_all_three_orders():
    speed = load("speed")
    row = speed.sampling_speed("lpvae", {"h": 1}, "smoke", (1, 8, 8), torch.device("cpu"))
    assert row["raster_reference_s"] > 0 and row["raster_s"] > 0 and row["wavefront_s"] > 0
    assert row["wavefront_vs_reference"] == row["raster_reference_s"] / row["wavefront_s"]


@pytest.mark.slow
def test_battery_benchmark_times_each_metric_before_and_after_against_training(tmp_path):
    from click.testing import CliRunner
    from repbench.cli import cli
    out = CliRunner().invoke(cli, ["run", "--model", "vae", "--preset", "smoke", "--dataset", "synthetic", "--grid", "0",
                                   "--results-dir", str(tmp_path), "-q"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    folder = next((tmp_path / "runs").iterdir())
    result = load("battery_speed").main(["--run", str(folder), "--repeats", "1", "--threads", "1",
                                         "--json", str(tmp_path / "battery.json")])
    assert result["training_s"] > 0 and result["epochs"] == 1 and result["recorded_training_s"] >= 0
    for variant in ("before", "after"):
        timed = result[f"{variant}_seconds"]
        assert {"bpd", "nonlinear_probe", "rep_types", "label_efficiency", "likelihood", "extract"} <= set(timed)
        assert result[f"{variant}_battery_vs_training"] == result[f"{variant}_battery_s"] / result["training_s"]
    assert result["probes_speedup"] == result["before_probes_s"] / result["after_probes_s"] and \
        "nonlinear_probe_speedup" not in result  # the probes' fits share one step now: timed alone, below
    before, after = result["before_metrics"], result["after_metrics"]  # the same values, to float noise
    assert before.keys() == after.keys() and before["bpd"] == after["bpd"]
    assert all(abs(before[k] - after[k]) <= 1.0 for k in before if "probe" in k and before[k] is not None)
    assert (tmp_path / "battery.json").exists()
    alone = load("battery_speed").main(["--run", str(folder), "--repeats", "1", "--threads", "1", "--variants",
                                        "before,after", "--metrics", "nonlinear_probe"])
    assert alone["nonlinear_probe_speedup"] == alone["before_seconds"]["nonlinear_probe"] / (
        alone["after_seconds"]["nonlinear_probe"] + alone["after_seconds"]["probes"]) > 0


HIDE_MLFLOW_AND_THE_INSTALL = '''
import importlib.abc, importlib.metadata, sys
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("mlflow", "mlxtend"):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)", name=name)
sys.meta_path[:] = [Hide()] + [f for f in sys.meta_path if "editable" not in repr(f).lower()]
found = importlib.metadata.entry_points
def without_repbench(**kw):
    eps = found(**kw)
    return [e for e in eps if not (e.dist and e.dist.name == "repbench")] if "group" in kw else eps
importlib.metadata.entry_points = without_repbench
'''


@pytest.mark.slow
def test_gpu_check_runs_from_the_source_tree_without_mlflow_mlxtend_or_an_install(tmp_path):
    # A sitecustomize on PYTHONPATH hides MLflow, mlxtend, the editable install's import hook and repbench's
    # entry points from the check and from every Python it starts: a fresh GPU machine, as far as imports go.
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(HIDE_MLFLOW_AND_THE_INSTALL)
    root = Path(__file__).parents[1]
    out = subprocess.run(["bash", str(root / "benchmarks" / "gpu_check.sh"), "--out", str(tmp_path / "gpu"),
                          "--device", "cpu", "--tiny", "--step-seconds", "0.1", "--epochs", "1"],
                         env={**os.environ, "PYTHONPATH": str(hide), "PYTHON": sys.executable}, capture_output=True,
                         text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads((tmp_path / "gpu" / "results.json").read_text())
    assert all(isinstance(v, float) for v in result["stages"].values()), result["stages"]  # none failed or skipped
    assert "skipped" in result["gpu_tests"]["summary"] and result["gpu_tests"]["exit"] == 0  # no CUDA here
    assert len(result["step_speed"]) == 6 and all(r["images_per_s"] > 0 and r["step_gflop"] >= 0
                                                  for r in result["step_speed"])
    assert [r["learner"] for r in result["slice"]] == ["vae", "lpvae-h2"]
    assert all(0 <= r["linear_probe"] <= 100 and r["bpd"] > 0 for r in result["slice"])
    assert {"nonlinear_probe", "rep_types", "likelihood"} <= set(result["battery"]["timings_s"])
    assert "Table 2 slice" in (tmp_path / "gpu" / "summary.md").read_text()


def test_gpu_check_says_in_one_line_what_is_missing(tmp_path):
    root = Path(__file__).parents[1]
    out = subprocess.run([sys.executable, str(root / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path),
                          "--data-root", str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(root)})
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert out.stderr.startswith("gpu_check: ") and ("CUDA" in out.stderr or "fashion" in out.stderr.lower())

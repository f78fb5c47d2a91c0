"""The speed benchmark runs end to end at the smoke size and reports every ratio it promises."""
import importlib.util
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
    assert result["nonlinear_probe_speedup"] == \
        result["before_seconds"]["nonlinear_probe"] / result["after_seconds"]["nonlinear_probe"]
    before, after = result["before_metrics"], result["after_metrics"]  # the same values, to float noise
    assert before.keys() == after.keys() and before["bpd"] == after["bpd"]
    assert all(abs(before[k] - after[k]) <= 1.0 for k in before if "probe" in k and before[k] is not None)
    assert (tmp_path / "battery.json").exists()

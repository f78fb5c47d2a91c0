"""The speed benchmark runs end to end at the smoke size and reports every ratio it promises."""
import importlib.util
from pathlib import Path

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

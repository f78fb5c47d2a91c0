"""The GPU check: one command on a borrowed GPU machine, within a time budget, everything written under --out.

    bash benchmarks/gpu_check.sh --out results/gpu/NAME --data-root DIR       # on the GPU machine, 8 minutes
    python benchmarks/gpu_check.py --out DIR --device cpu --tiny               # the same path at toy size (CI)

It runs from the source tree (PYTHONPATH, no install: the learners register from pyproject.toml and models/),
needs torch, numpy, scikit-learn, scipy, click, tabulate, tqdm, pyyaml (and pytest for the GPU tests), and
neither MLflow nor mlxtend: nothing is tracked, the results are files. In order, each stage only if the budget
has room for it:
1. the GPU tests, `pytest -m gpu` (pytest-gpu.txt);
2. the training step's images/s at the paper preset for vae, lpvae h=2 and fpvae, float32 and bf16 autocast,
   with the step's FLOPs counted (torch.utils.flop_counter) and the fraction of the device's published peak;
3. a Table 2 slice: vae and lpvae h=2 at the paper preset on the real Fashion-MNIST (IDX files under
   --data-root), a few epochs each, with the summary metrics (one probe seed, the quick battery's probes);
4. the default battery's seconds, metric by metric, on the 10,000 test images, with the slice's lpvae h=2.
summary.md holds the tables, results.json the numbers; both are rewritten after every stage.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NEEDED = ("torch", "numpy", "sklearn", "scipy", "click", "tabulate", "tqdm", "yaml")
# Published dense peaks in TFLOP/s (bf16 tensor cores, TF32 tensor cores, plain float32), by name fragment.
PEAKS = {"H200": (989.4, 494.7, 66.9), "H100 SXM": (989.4, 494.7, 66.9), "H100 80GB HBM3": (989.4, 494.7, 66.9),
         "H100 PCIe": (756.0, 378.0, 51.2), "A100": (312.0, 156.0, 19.5), "L4": (121.0, 60.0, 30.3)}
STEP_LEARNERS = (("vae", {}), ("lpvae", {"h": 2}), ("fpvae", {}))
SLICE_LEARNERS = (("vae", {}), ("lpvae", {"h": 2}))


def peaks_of(name: str) -> tuple[float, float, float] | None:
    return next((p for fragment, p in PEAKS.items() if fragment in name), None)


class Check:
    """The stages' shared state: the budget, the results and the files they go to."""

    def __init__(self, args):
        self.args, self.start, self.out = args, time.monotonic(), Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.results: dict = {"stages": {}}
        self.lines: list[str] = []

    def left_s(self) -> float:
        return self.args.budget_s - (time.monotonic() - self.start)

    def say(self, line: str) -> None:
        print(line, flush=True)
        self.lines.append(line)
        self.save()

    def save(self) -> None:
        self.results["elapsed_s"] = round(time.monotonic() - self.start, 1)
        (self.out / "results.json").write_text(json.dumps(self.results, indent=2, default=str))
        (self.out / "summary.md").write_text("# GPU check\n\n" + "\n".join(self.lines) + "\n")

    def stage(self, name: str, needs_s: float, fn) -> None:
        if self.left_s() < needs_s:
            self.results["stages"][name] = "skipped"
            self.say(f"\n{name}: skipped, {self.left_s():.0f} s of the budget left and it needs about {needs_s:.0f}")
            return
        t0 = time.monotonic()
        try:
            fn(self)
            self.results["stages"][name] = round(time.monotonic() - t0, 1)
        except Exception as exc:  # a failed stage is reported and the next one still runs
            self.results["stages"][name] = f"failed: {type(exc).__name__}: {exc}"
            self.say(f"\n{name}: FAILED: {type(exc).__name__}: {str(exc)[:300]}")


# ------------------------------------------------------------------------------------------ stages
def environment(c: Check) -> None:
    import torch
    from repbench.runs import resolve_device
    device = resolve_device(c.args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    peaks = peaks_of(name)
    c.results.update(device=name, torch=torch.__version__, cuda=torch.version.cuda, peaks_tflops=peaks)
    c.say(f"device: {name}; torch {torch.__version__}, CUDA {torch.version.cuda}; tf32 matmul "
          f"{torch.backends.cuda.matmul.allow_tf32}, cudnn.benchmark {torch.backends.cudnn.benchmark}")
    c.say(f"published peaks (TFLOP/s, dense): bf16 {peaks[0]}, tf32 {peaks[1]}, fp32 {peaks[2]}" if peaks else
          f"published peaks: unknown for '{name}' (known: {', '.join(PEAKS)}); fractions of peak are not given")


def gpu_tests(c: Check) -> None:
    if importlib.util.find_spec("pytest") is None:
        c.say("\nGPU tests: not run: pytest is missing (pure-Python wheels of pytest, pluggy, iniconfig and "
              "packaging on PYTHONPATH are enough)")
        return
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py") if "mark.gpu" in p.read_text())
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", *files]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(c.left_s() - 60, 30))
    (c.out / "pytest-gpu.txt").write_text(out.stdout + out.stderr)
    last = (out.stdout.strip().splitlines() or ["(no output)"])[-1]
    c.results["gpu_tests"] = {"exit": out.returncode, "summary": last}
    c.say(f"\nGPU tests (`pytest -m gpu`, {len(files)} files): {last}")


def step_speed(c: Check) -> None:
    import torch
    from tabulate import tabulate
    from repbench.learners import create_learner
    from repbench.learners.train import make_optimizer
    from torch.utils.flop_counter import FlopCounterMode
    peaks, rows = c.results.get("peaks_tflops"), []
    preset, shape, batch = ("smoke", (1, 12, 12), 20) if c.args.tiny else ("paper", (1, 28, 28), 100)
    for name, options in STEP_LEARNERS:
        for dtype in ("float32", "bf16"):
            learner = create_learner(name, preset=preset, image_shape=shape, device=c.args.device, **options)
            module, device = learner.module.train(), learner.device
            x = torch.randint(0, 256, (batch, *shape), dtype=torch.uint8, device=device)
            opt = make_optimizer(module, 1e-4, device)

            def step():
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16"):
                    loss = learner.loss(module, x)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            with FlopCounterMode(display=False) as counter:
                step()
            seconds = timed_steps(step, device, c.args.step_seconds)
            tflops = counter.get_total_flops() / seconds / 1e12
            peak = None if peaks is None else (peaks[0] if dtype == "bf16" else peaks[1])
            rows.append({"learner": learner.display_name, "dtype": dtype, "images_per_s": round(batch / seconds, 1),
                         "step_gflop": round(counter.get_total_flops() / 1e9, 1), "tflops": round(tflops, 2),
                         "fraction_of_peak": None if peak is None else round(tflops / peak, 3)})
    c.results["step_speed"] = rows
    c.say(f"\nTraining step, {preset} preset, batch {batch} (fraction of the bf16 peak for bf16, of the tf32 peak "
          f"for float32, whose matrix products use TF32 on Ampere and later):\n\n"
          + tabulate(rows, headers="keys", tablefmt="github"))


def timed_steps(step, device, seconds: float) -> float:
    """Mean seconds per step over at least `seconds` of steps, after three (cuDNN's autotuning)."""
    import torch
    for _ in range(3):
        step()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    n, t0 = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - t0 < seconds:
        step()
        n += 1
        if n % 5 == 0:
            sync()
    sync()
    return (time.perf_counter() - t0) / n


def table2_slice(c: Check) -> None:
    from tabulate import tabulate
    from repbench.learners import create_learner
    from repbench.measure import BatteryConfig, run_battery
    data = slice_data(c.args)
    preset = "smoke" if c.args.tiny else "paper"
    cfg = BatteryConfig(metrics=("bpd", "mutual_info", "intrinsic_dim", "linear_probe", "nonlinear_probe"),
                        probe_seeds=1)
    rows, c.results["slice"] = [], []
    for name, options in SLICE_LEARNERS:
        learner = create_learner(name, preset=preset, image_shape=data.image_shape, device=c.args.device,
                                 epochs=c.args.epochs, **options)
        t0 = time.monotonic()
        learner.fit(data.train_x, data.test_x, progress=False)
        train_s = time.monotonic() - t0
        res = run_battery(learner, data, cfg, progress=False)
        row = {"learner": learner.display_name, "epochs": c.args.epochs, "train_s": round(train_s, 1),
               **{k: round(v, 3) for k, v in res.metrics.items() if v is not None and not k.endswith("_std")}}
        rows.append(row)
        c.results["slice"].append({**row, "timings_s": res.timings_s})
        c.slice_learner = learner
    c.say(f"\nTable 2 slice: {preset} preset on {data.name} ({len(data.train_x)} / {len(data.test_x)} images), "
          f"{c.args.epochs} epochs each; one probe seed, the quick battery's probes (LinearSVC, a 20-epoch MLP), "
          f"not the paper's protocol:\n\n" + tabulate(rows, headers="keys", tablefmt="github"))


def slice_data(args):
    from repbench.data import load_dataset
    return load_dataset("synthetic") if args.tiny else load_dataset("fashion-mnist", args.data_root)


def battery_time(c: Check) -> None:
    import tempfile
    from tabulate import tabulate
    from repbench.measure import battery_for, run_battery
    learner = getattr(c, "slice_learner", None)
    if learner is None:
        c.say("\nbattery: not run: no trained model (the Table 2 slice did not finish)")
        return
    data = slice_data(c.args)
    with tempfile.TemporaryDirectory() as cache:
        res = run_battery(learner, data, battery_for("quick"), cache_dir=Path(cache), progress=False)
    c.results["battery"] = {"learner": learner.display_name, "test_images": len(data.test_x),
                            "timings_s": res.timings_s, "seconds": round(sum(res.timings_s.values()), 1)}
    c.say(f"\nDefault battery on {learner.display_name}, {len(data.test_x)} test images and {len(data.train_x)} "
          f"training images, {c.results['battery']['seconds']} s in all; seconds by metric (`extract` and "
          f"`likelihood` are shared steps, not counted in the metrics that start them):\n\n"
          + tabulate(res.timings_s.items(), headers=["metric", "seconds"], tablefmt="github"))


# ------------------------------------------------------------------------------------------ main
def missing() -> list[str]:
    return [m for m in NEEDED if importlib.util.find_spec(m) is None]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for every file the check writes")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--data-root", default=None, help="folder holding fashion-mnist/ (its four IDX files)")
    ap.add_argument("--budget-s", type=float, default=450.0, help="stop starting stages after this (seconds)")
    ap.add_argument("--epochs", type=int, default=2, help="training epochs of each Table 2 slice learner")
    ap.add_argument("--step-seconds", type=float, default=3.0, help="time each training step setting this long")
    ap.add_argument("--tiny", action="store_true", help="smoke preset and generated data: the path, not the numbers")
    args = ap.parse_args(argv)
    if args.epochs < 1 or args.budget_s <= 0 or args.step_seconds <= 0:
        ap.error("--epochs must be >= 1, --budget-s and --step-seconds > 0")
    if missing():
        print(f"gpu_check needs {', '.join(missing())}: not installed here", file=sys.stderr)
        raise SystemExit(2)
    sys.path.insert(0, str(ROOT))
    from repbench.errors import RepbenchError
    from repbench.runs import resolve_device
    try:
        resolve_device(args.device)
        if not args.tiny:
            slice_data(args)  # missing data: one line before any work
    except RepbenchError as exc:
        print(f"gpu_check: {exc}", file=sys.stderr)
        raise SystemExit(2)
    c = Check(args)
    c.stage("environment", 0, environment)
    c.stage("gpu_tests", 120, gpu_tests)
    c.stage("step_speed", 60, step_speed)
    c.stage("table2_slice", 90, table2_slice)
    c.stage("battery", 120, battery_time)  # the last stage: a kill at the deadline loses only its numbers
    c.say(f"\ndone in {time.monotonic() - c.start:.0f} s")
    return c.results


if __name__ == "__main__":
    main()

"""Training speed of each learner, as a fraction of this machine's own matrix-multiply throughput.

    python benchmarks/speed.py [--presets quick paper] [--device cpu] [--json out.json]

Everything is measured in one run, so the ratios hold across machines: images/s for one Adam step on a batch
of real MNIST digits, the step's FLOPs (forward + backward, counted by torch's FlopCounterMode) divided by its
time, and that rate as a fraction of a large float32 matrix multiply on the same device.
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from tabulate import tabulate
from torch.utils.flop_counter import FlopCounterMode

import repbench
from repbench.runner import resolve_device

LEARNERS = [("vae", {}), ("lpvae", {"h": 1}), ("lpvae", {"h": 2}), ("fpvae", {})]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops(device: torch.device, n: int = 2048, seconds: float = 2.0) -> float:
    """Sustained float32 FLOP/s of an n x n matrix multiply."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    sync(device)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
    sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - start)


def step_speed(name: str, options: dict, preset: str, x: torch.Tensor, device: torch.device,
               min_seconds: float) -> dict:
    learner = repbench.create_learner(name, preset=preset, image_shape=tuple(x.shape[1:]), device=device, **options)
    module = learner.module.train()
    opt = torch.optim.Adam(module.parameters(), lr=3e-4)

    def step():
        loss = learner.loss(module, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    step()  # warm-up: allocations, kernel selection
    with FlopCounterMode(display=False) as counter:
        step()
    sync(device)
    steps, start = 0, time.perf_counter()
    while steps < 2 or time.perf_counter() - start < min_seconds:
        step()
        steps += 1
    sync(device)
    seconds = (time.perf_counter() - start) / steps
    return {"learner": learner.name + (f" h={options['h']}" if "h" in options else ""), "preset": preset,
            "width": learner.config.width, "batch": len(x), "images_per_s": len(x) / seconds,
            "step_gflop": counter.get_total_flops() / 1e9, "achieved_gflops": counter.get_total_flops() / seconds / 1e9}


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["quick", "paper"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--min-seconds", type=float, default=3.0, help="time each configuration at least this long")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    x = repbench.load_dataset("mnist5k").train_x[:args.batch].to(device)
    peak = matmul_flops(device)
    rows = []
    for preset in args.presets:
        for name, options in LEARNERS:
            row = step_speed(name, options, preset, x, device, args.min_seconds)
            row["fraction_of_matmul"] = row["achieved_gflops"] * 1e9 / peak
            rows.append(row)
            print(f"  {row['learner']:<10} {preset:<6} {row['images_per_s']:8.1f} img/s", flush=True)
    print(f"\ndevice: {device} ({torch.get_num_threads()} threads); float32 matmul: {peak / 1e9:.1f} GFLOP/s\n")
    print(tabulate(rows, headers="keys", floatfmt=".3g", tablefmt="github"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": str(device), "matmul_gflops": peak / 1e9, "rows": rows}, f, indent=2)
    return rows


if __name__ == "__main__":
    main()

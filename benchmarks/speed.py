"""Training speed of each learner, as a fraction of this machine's own matrix-multiply throughput.

    python benchmarks/speed.py [--presets quick paper] [--device cpu] [--json out.json]
    python benchmarks/speed.py --targets [--repeats 3]     # the allocator / evaluation / threads targets (targets.py)

Everything is measured in one run, so the ratios hold across machines: images/s for one Adam step on a batch
of real MNIST digits, the step's FLOPs (forward + backward, counted by torch's FlopCounterMode) divided by its
time, that rate as a fraction of a large float32 matrix multiply on the same device, the speed-up of the fast
path over the straightforward reference implementation (`repbench_models.reference`), and the time to sample
a 10 x 10 grid in raster order against wavefront order for the local models.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from tabulate import tabulate
from torch.utils.flop_counter import FlopCounterMode

import repbench
from repbench.config import PRESETS
from repbench.runs.runner import resolve_device
from repbench.learners.train import make_optimizer
from repbench_models import reference

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
               min_seconds: float, impl: str = "fast") -> dict:
    """Images/s of one training step (forward, backward, Adam) with the fast path or the reference one."""
    learner = repbench.create_learner(name, preset=preset, image_shape=tuple(x.shape[1:]), device=device, **options)
    module = learner.module.train()
    if impl == "fast":
        opt, loss_fn = make_optimizer(module, 3e-4, device), lambda: learner.loss(module, x)
    else:
        opt, loss_fn = reference.optimizer(module, 3e-4), lambda: reference.loss(module, x)

    def step():
        loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    step()  # warm-up: allocations, kernel selection
    with FlopCounterMode(display=False) as counter:
        step()
    seconds = timed(step, device, min_seconds)
    return {"learner": label(name, options), "preset": preset, "impl": impl, "width": learner.config.width,
            "images_per_s": len(x) / seconds, "step_gflop": counter.get_total_flops() / 1e9,
            "achieved_gflops": counter.get_total_flops() / seconds / 1e9}


def sampling_speed(name: str, options: dict, preset: str, shape: tuple, device: torch.device) -> dict:
    """Seconds to draw a 10 x 10 grid (local heads): raster order with a whole decoder pass per pixel (the
    reference), raster order computing only each pixel's patch, and wavefront order."""
    learner = repbench.create_learner(name, preset=preset, image_shape=shape, device=device, **options)
    model = learner.module.eval()
    z = torch.randn(100, learner.config.z_dim, device=device)
    row = {"learner": label(name, options), "preset": preset,
           "raster_reference_s": timed(lambda: reference.generate(model, z), device, 0.0, min_steps=1)}
    for order in ("raster", "wavefront"):
        row[f"{order}_s"] = timed(lambda: model.generate(z, order=order), device, 0.0, min_steps=1)
    row["wavefront_vs_reference"] = row["raster_reference_s"] / row["wavefront_s"]
    row["wavefront_vs_raster"] = row["raster_s"] / row["wavefront_s"]
    return row


def timed(fn, device: torch.device, min_seconds: float, min_steps: int = 2) -> float:
    sync(device)
    steps, start = 0, time.perf_counter()
    while steps < min_steps or time.perf_counter() - start < min_seconds:
        fn()
        steps += 1
    sync(device)
    return (time.perf_counter() - start) / steps


def label(name: str, options: dict) -> str:
    return name + (f" h={options['h']}" if "h" in options else "")


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--targets" in argv:  # measured in fresh processes, since malloc's settings are per process
        import targets
        return targets.main([a for a in argv if a != "--targets"])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["quick", "paper"], choices=sorted(PRESETS))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--min-seconds", type=float, default=3.0, help="time each configuration at least this long")
    ap.add_argument("--no-sampling", action="store_true", help="skip the sampling comparison")
    ap.add_argument("--colour", action="store_true",
                    help="time the colour models on generated 3x32x32 images instead of MNIST digits")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    if args.colour:  # the step's cost does not depend on the pixel values
        x = torch.randint(0, 256, (args.batch, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    else:
        x = repbench.load_dataset("mnist5k").train_x[:args.batch]
    x = x.to(device)
    peak = matmul_flops(device)
    train_rows, sample_rows = [], []
    for preset in args.presets:
        for name, options in LEARNERS:
            ref = step_speed(name, options, preset, x, device, args.min_seconds, "reference")
            row = step_speed(name, options, preset, x, device, args.min_seconds, "fast")
            for r in (ref, row):
                r["fraction_of_matmul"] = r["achieved_gflops"] * 1e9 / peak
            row["speedup"] = row["images_per_s"] / ref["images_per_s"]
            train_rows += [ref, row]
            print(f"  {row['learner']:<10} {preset:<6} reference {ref['images_per_s']:7.1f} img/s, "
                  f"fast {row['images_per_s']:7.1f} img/s", flush=True)
    if not args.no_sampling:
        for name, options in LEARNERS:
            if name == "lpvae":
                sample_rows.append(sampling_speed(name, options, args.presets[0], tuple(x.shape[1:]), device))
    print(f"\ndevice: {device} ({torch.get_num_threads()} threads); float32 matmul: {peak / 1e9:.1f} GFLOP/s\n")
    print(tabulate(train_rows, headers="keys", floatfmt=".3g", tablefmt="github"))
    if sample_rows:
        print("\nsampling a 10 x 10 grid (seconds)\n")
        print(tabulate(sample_rows, headers="keys", floatfmt=".3g", tablefmt="github"))
    out = {"device": str(device), "threads": torch.get_num_threads(), "matmul_gflops": peak / 1e9,
           "training": train_rows, "sampling": sample_rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    main()

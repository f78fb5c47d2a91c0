"""The speed targets, measured as ratios in one run, with the allocator in use as a user gets it.

    python benchmarks/targets.py [--repeats 3] [--threads N] [--json out.json]   # about half an hour on 2 quiet cores
    python benchmarks/speed.py --targets [same options]                          # the same

Steps and evaluations use --threads threads (default: every core, what a single `repbench run` uses).

Each measurement runs in a fresh process (malloc's settings are per process) and the configurations alternate,
repeat after repeat, so a change in the machine's load hits both sides of a ratio alike. "today" is the
configuration before the allocator change: glibc's malloc untouched (REPBENCH_MALLOC=system) and evaluation
batches of 500.
- width-256 local step (lpvae h=2, paper preset, batch 100): tuned malloc vs system malloc, >= 1.3x;
  page faults per step of each;
- bpd_iw evaluation (k = 10 on 1,000 images, lpvae h=2 quick): now vs today, >= 1.8x;
- batch 400 vs batch 100 at width 256, images per second: within 10%;
- the width-64 step (quick) against the thin-matrix ceiling of its head, a [B*H*W, 64] x [64, 64] matmul:
  within 15%;
- threads: two one-thread processes vs one two-thread process, images per second in all (what --jobs gives).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.abspath(__file__)
TODAY = {"malloc": "system", "eval_batch": 500}


THREADS = os.cpu_count() or 1


def probe(kind: str, malloc: str, threads: int | None = None, **kw) -> dict:
    """Run one measurement in a fresh process; return its JSON."""
    threads = threads or THREADS
    env = {**os.environ, "REPBENCH_MALLOC": malloc, "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, HERE, "--probe", kind, "--args", json.dumps({**kw, "threads": threads})],
                         env=env, capture_output=True, text=True, timeout=1800)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ in the child
def child(kind: str, args: dict) -> dict:
    import resource
    import torch
    import repbench
    from repbench.malloc import tune
    from repbench.learners.train import make_optimizer
    torch.set_num_threads(args["threads"])
    data = repbench.load_dataset("mnist5k")
    learner = repbench.create_learner("lpvae", h=2, preset=args.get("preset", "paper"), image_shape=(1, 28, 28))
    module = learner.module
    if kind == "step":
        x = data.train_x[:args["batch"]]
        opt = make_optimizer(module.train(), 3e-4, torch.device("cpu"))

        def step():
            loss = learner.loss(module, x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        faults = warm_up(step)
        times, per_step = [], []
        while len(times) < 2 or sum(times) < args["seconds"]:
            r0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
            per_step.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
        dt, flops = statistics.median(times), step_flops(learner, module, x)
        return {"images_per_s": len(x) / dt, "faults_per_step": statistics.median(per_step),
                "faults_warm_up": faults, "gflops": flops / dt / 1e9, "malloc": tune()}
    if kind == "iw":
        from repbench.measure.battery import likelihood_pass
        x = data.test_x[:args["images"]]
        learner.fitted = True
        t0 = time.perf_counter()
        likelihood_pass(learner, x, args["k"], torch.Generator().manual_seed(0), args["eval_batch"], False)
        return {"seconds": time.perf_counter() - t0, "malloc": tune()}
    if kind == "thin":
        a, b = torch.randn(args["rows"], 64), torch.randn(64, 64)
        for _ in range(3):
            a @ b
        t0, n = time.perf_counter(), 0
        while time.perf_counter() - t0 < args["seconds"]:
            a @ b
            n += 1
        return {"gflops": 2 * args["rows"] * 64 * 64 * n / (time.perf_counter() - t0) / 1e9}
    raise ValueError(kind)


def warm_up(step, most: int = 4) -> list[int]:
    """Steps until the heap has grown to its working size (a step's page faults fall below 1% of the first's;
    with the system malloc they never do), at most `most`; the page faults of each."""
    import resource
    faults = []
    while len(faults) < most and (not faults or faults[-1] > faults[0] / 100):
        r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        step()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
    return faults


def cpu_name() -> str:
    """The CPU model and its widest vector instructions (the run records' field), e.g. 'AMD EPYC, avx2'."""
    from repbench.runs.records import cpu_features
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 "unknown CPU")
    return f"{model}, {cpu_features()}"


def step_flops(learner, module, x) -> float:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        learner.loss(module, x).backward()
    return counter.get_total_flops()


# ------------------------------------------------------------------------------------------ the head
def alternate(configs: dict[str, dict], repeats: int) -> dict[str, list[dict]]:
    """Run every configuration once per repeat, in turn; results by configuration."""
    out = {name: [] for name in configs}
    for _ in range(repeats):
        for name, cfg in configs.items():
            out[name].append(probe(**cfg))
    return out


def median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def concurrent_images_per_s(processes: int, threads: int, seconds: float, malloc: str) -> float:
    """Images per second in all of `processes` simultaneous one-cell trainings (quick width)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "REPBENCH_MALLOC": malloc}
    cmd = [sys.executable, HERE, "--probe", "step", "--args",
           json.dumps({"batch": 100, "seconds": seconds, "threads": threads, "preset": "quick"})]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    return sum(json.loads(p.communicate()[0].strip().splitlines()[-1])["images_per_s"] for p in procs)


def part_step(repeats: int, s: float) -> dict:
    step = alternate({"system": dict(kind="step", malloc="system", batch=100, seconds=s),
                      "tuned": dict(kind="step", malloc="tuned", batch=100, seconds=s),
                      "tuned_400": dict(kind="step", malloc="tuned", batch=400, seconds=s),
                      "system_400": dict(kind="step", malloc="system", batch=400, seconds=s)}, repeats)
    return {"width256_step_speedup": median(step["tuned"], "images_per_s") / median(step["system"], "images_per_s"),
            "batch400_vs_100": median(step["tuned_400"], "images_per_s") / median(step["tuned"], "images_per_s"),
            "faults_per_step": {m: median(step[m], "faults_per_step") for m in step},
            "faults_warm_up": {m: step[m][0]["faults_warm_up"] for m in step},
            "images_per_s": {m: median(step[m], "images_per_s") for m in step}}


def part_iw(repeats: int, s: float) -> dict:
    from repbench.config import eval_batch
    from repbench.measure.battery import BatteryConfig
    default = eval_batch(BatteryConfig().eval_batch_size, "cpu")  # what a user gets now, timed beside 100 and 500
    iw = alternate({"today": dict(kind="iw", malloc="system", images=1000, k=10, eval_batch=TODAY["eval_batch"],
                                  preset="quick"),
                    **{f"tuned_{b}": dict(kind="iw", malloc="tuned", images=1000, k=10, eval_batch=b,
                                          preset="quick") for b in sorted({default, 100, 500})}}, repeats)
    return {"bpd_iw_speedup": median(iw["today"], "seconds") / median(iw[f"tuned_{default}"], "seconds"),
            "eval_batch_size": default, "bpd_iw_seconds": {m: median(iw[m], "seconds") for m in iw}}


def part_quick(repeats: int, s: float) -> dict:
    quick = alternate({"step": dict(kind="step", malloc="tuned", batch=100, seconds=s, preset="quick"),
                       "thin": dict(kind="thin", malloc="tuned", rows=100 * 28 * 28, seconds=s)}, repeats)
    return {"width64_vs_thin_ceiling": median(quick["step"], "gflops") / median(quick["thin"], "gflops"),
            "width64_gflops": median(quick["step"], "gflops"), "thin_gflops": median(quick["thin"], "gflops")}


def part_jobs(repeats: int, s: float) -> dict:
    jobs = {f"{malloc}: {label}": [] for malloc in ("tuned", "system") for label in ("--jobs 1", "--jobs 2")}
    for _ in range(repeats):  # --jobs 1 trains one cell on every core; --jobs 2 two cells on half each
        for malloc in ("tuned", "system"):
            jobs[f"{malloc}: --jobs 1"].append(concurrent_images_per_s(1, THREADS, s * 2, malloc))
            jobs[f"{malloc}: --jobs 2"].append(concurrent_images_per_s(2, max(1, THREADS // 2), s * 2, malloc))
    return {"threads_images_per_s": {k: statistics.median(v) for k, v in jobs.items()}}


PARTS = {"step": part_step, "iw": part_iw, "quick": part_quick, "jobs": part_jobs}
TARGETS = {"width256_step_speedup": 1.3, "bpd_iw_speedup": 1.8, "batch400_vs_100": 0.9,
           "width64_vs_thin_ceiling": 0.85}


def main(argv=None) -> dict:
    global THREADS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8.0, help="time each step measurement at least this long")
    ap.add_argument("--threads", type=int, default=THREADS, help="threads per measurement (default: every core)")
    ap.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS), help="measure only these")
    ap.add_argument("--json", default=None)
    ap.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--args", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.probe:
        print(json.dumps(child(args.probe, json.loads(args.args))))
        return {}
    THREADS = args.threads
    result = {"repeats": args.repeats, "cpu_threads": os.cpu_count(), "threads": THREADS, "cpu": cpu_name()}
    for part in args.parts:
        result.update(PARTS[part](args.repeats, args.seconds))
    for key, bound in TARGETS.items():
        if key in result:
            print(f"{'ok  ' if result[key] >= bound else 'MISS'} {key}: {result[key]:.2f} (target >= {bound})")
    print(json.dumps({k: v for k, v in result.items() if k not in TARGETS}, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()

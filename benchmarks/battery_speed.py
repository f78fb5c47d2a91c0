"""The metric battery's time on a finished run, metric by metric, against the training time of the same run.

    python benchmarks/battery_speed.py --run RESULTS/runs/FOLDER [--repeats 3] [--variants train,before,after]
                                       [--metrics nonlinear_probe,...] [--threads N] [--json out.json]

Every measurement is a fresh process; the variants alternate, repeat after repeat, and each number is the median
of the repeats, so a change in the machine's load hits every variant alike:
- `train`: two training epochs of the run's configuration; the second (its test loss included, as every epoch
  of a run) times its epochs, the training time it stands for (the first also warms up the process, once a run);
- `before`: the battery of the run's preset with the probes as they were (one MLP per seed at the process's
  thread count, k test samples one pass each, linear probes at every BLAS thread), kept below for the comparison;
- `after`: the battery as `repbench run` runs it now (its probe fits side by side, one per thread).
Both batteries run at --threads (default: every core, what a lone `repbench run` uses), from a cold
representation cache. Ratios: each battery's total against the training time, and the nonlinear probe's
seconds before / after. The run's recorded training time (run.json) is shown too, measured under the load the
machine had then.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

HERE = os.path.abspath(__file__)
VARIANTS = ("train", "before", "after")
# at most, at least; the nonlinear probe's speed-up is measured by a battery of it alone (--metrics nonlinear_probe)
TARGETS = {"after_battery_vs_training": 0.15, "nonlinear_probe_speedup": 5.0}
PROBE_TIMINGS = ("linear_probe", "nonlinear_probe", "knn_probe", "rep_types", "label_efficiency", "probes")


# ------------------------------------------------------------------------------------------ the probes before
def old_nonlinear_probe(train_reps, train_y, test_reps, test_y, *, seed=0, epochs=20, batch_size=100, lr=1e-3,
                        hidden=200, dropout=0.1, standardize=True, device="cpu") -> float:
    """The MLP probe before the battery was made fast: one nn.Sequential per seed, the global generator seeded
    inside fork_rng, one forward pass per test sample."""
    import numpy as np
    import torch
    import torch.nn as nn
    from repbench.metrics.probes import _accuracy, _as_samples
    g = torch.Generator().manual_seed(seed)
    train = torch.as_tensor(np.asarray(train_reps), dtype=torch.float32)
    test = torch.as_tensor(_as_samples(test_reps), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(train_y), dtype=torch.long)
    mu, sd = (train.mean(0), train.std(0).clamp(min=1e-8)) if standardize else (0.0, 1.0)
    train, test = ((train - mu) / sd).to(device), ((test - mu) / sd).to(device)
    classes = int(max(y.max(), int(np.max(test_y)))) + 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(train.shape[1], hidden), nn.ReLU(), nn.Dropout(dropout), nn.BatchNorm1d(hidden),
                            nn.Linear(hidden, classes)).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        y = y.to(device)
        for _ in range(epochs):
            order = torch.randperm(len(train), generator=g).to(device)
            for i in range(0, len(order), batch_size):
                idx = order[i:i + batch_size]
                if len(idx) < 2:
                    continue
                loss = nn.functional.cross_entropy(net(train[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    net.eval()
    with torch.inference_mode():
        probs = torch.stack([torch.softmax(net(t), 1) for t in test]).mean(0)
    return _accuracy(probs.cpu().numpy(), test_y)


def use_old_probes() -> None:
    """Put the probe loops of before (a seed at a time, no thread scope) in place of today's."""
    import torch
    from repbench.metrics import probes

    def run_probe(probe, args, seed, cfg, device, epochs=None):  # a probe.Fit, as the battery's entries read
        if probe == "linear_probe":
            return probes.linear_probe_fit(*args, seed=seed, method=cfg.linear_method)
        if probe == "knn_probe":
            return probes.Fit(probes.knn_probe(*args, k=cfg.knn_k, distance=cfg.knn_distance))
        return probes.Fit(old_nonlinear_probe(*args, seed=seed, epochs=epochs or cfg.nonlinear_epochs,
                                              dropout=cfg.nonlinear_dropout, standardize=cfg.nonlinear_standardize,
                                              device=device))

    def probe_accuracies(inputs, cfg, probe, rep_type):  # shared between metrics, as before
        return inputs.memo(("before", probe, rep_type), lambda: old_probe_accuracies(inputs, cfg, probe, rep_type))

    def old_probe_accuracies(inputs, cfg, probe, rep_type):
        accs = []
        for s in range(cfg.probe_seeds):
            g = torch.Generator().manual_seed(1000 + s)
            k = cfg.test_samples if rep_type == "sample_k100" else 1
            train = probes.rep_view(inputs.reps["train"], rep_type, 1, g).numpy()
            test = probes.rep_view(inputs.reps["test"], rep_type, k, g).numpy()
            accs.append(run_probe(probe, (train, inputs.data.train_y.numpy(), test, inputs.data.test_y.numpy()), s,
                                  cfg, inputs.device))
        return accs

    def few_label_accuracies(inputs, cfg, probe, n):
        from repbench.data import labelled_subset
        from repbench.errors import RepbenchError
        train_y, accs = inputs.data.train_y, []
        for s in range(cfg.probe_seeds):
            try:
                idx = labelled_subset(train_y, n, seed=s)
            except RepbenchError:
                return None
            args = (inputs.reps["train"]["mean"][idx].numpy(), train_y[idx].numpy(),
                    inputs.reps["test"]["mean"].numpy(), inputs.data.test_y.numpy())
            epochs = max(cfg.nonlinear_epochs, -(-probes.MIN_STEPS // -(-n // 100)))
            accs.append(run_probe(probe, args, s, cfg, inputs.device, epochs))
        return accs

    probes.probe_accuracies, probes.few_label_accuracies = probe_accuracies, few_label_accuracies


# ------------------------------------------------------------------------------------------ in the child
def child(variant: str, folder: Path, metrics: list[str] | None, threads: int) -> dict:
    import torch
    from repbench.learners import learner_from_params
    from repbench.measure import battery_for, run_battery
    from repbench.data import load_dataset
    torch.set_num_threads(threads)
    state = json.loads((folder / "run.json").read_text())
    params = state["params"]
    if variant == "train":  # two epochs, the second timed: the first pays for warming up, once per run
        params = {**params, "options": {**params.get("options", {}), "epochs": 2}}
    learner = learner_from_params(params)
    data = load_dataset(state["dataset"]).limit(*learner.data_limits())
    load = os.getloadavg()[0]
    start, cpu = time.perf_counter(), time.process_time()
    if variant == "train":
        ends = []
        learner.fit(data.train_x, data.test_x, progress=False, on_epoch=lambda _: ends.append(time.perf_counter()))
        out = {"epoch_s": [ends[0] - start, ends[1] - ends[0]]}
    else:
        if variant == "before":
            use_old_probes()
        cfg = battery_for(learner.preset, {"metrics": tuple(metrics)} if metrics else None)
        learner.load(folder / "checkpoint.pt")
        with tempfile.TemporaryDirectory() as cache:
            res = run_battery(learner, data, cfg, seed=learner.seed, cache_dir=Path(cache),
                              checkpoint=folder / "checkpoint.pt", progress=False)
        out = {"timings_s": res.timings_s, "metrics": res.metrics}
    return {**out, "seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu,
            "threads": torch.get_num_threads(), "load_1min": [load, os.getloadavg()[0]]}


def measure(variant: str, folder: Path, metrics: list[str] | None, threads: int) -> dict:
    """One measurement in a fresh process."""
    cmd = [sys.executable, HERE, "--child", variant, "--run", str(folder), "--threads", str(threads)]
    out = subprocess.run(cmd + (["--metrics", ",".join(metrics)] if metrics else []), capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{variant} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ the report
def recorded_training_s(folder: Path) -> float | None:
    """Seconds from the run's start to its last epoch, as run.json recorded them."""
    state = json.loads((folder / "run.json").read_text())
    try:
        return (datetime.fromisoformat(state["epoch_finished_at"]) -
                datetime.fromisoformat(state["environment"]["started_at"])).total_seconds()
    except (KeyError, TypeError, ValueError):
        return None


def summarize(runs: dict[str, list[dict]], epochs: int) -> dict:
    med = lambda rows, f: statistics.median(f(r) for r in rows)
    out = {}
    if runs.get("train"):
        out["training_s"] = med(runs["train"], lambda r: r["epoch_s"][1]) * epochs
        out["first_epoch_s"] = med(runs["train"], lambda r: r["epoch_s"][0])
    for v in ("before", "after"):
        if runs.get(v):
            names = runs[v][0]["timings_s"]
            out[f"{v}_seconds"] = {m: med(runs[v], lambda r: r["timings_s"][m]) for m in names}
            out[f"{v}_battery_s"] = med(runs[v], lambda r: r["seconds"])
            out[f"{v}_probes_s"] = med(runs[v], lambda r: sum(r["timings_s"].get(m, 0.0) for m in PROBE_TIMINGS))
            out[f"{v}_metrics"] = runs[v][0]["metrics"]
            if "training_s" in out:
                out[f"{v}_battery_vs_training"] = out[f"{v}_battery_s"] / out["training_s"]
    if runs.get("before") and runs.get("after"):
        # the probes' seconds: the fits now run side by side as one shared step (`probes`), before each in its metric
        out["probes_speedup"] = out["before_probes_s"] / max(out["after_probes_s"], 1e-9)
        if set(out["after_seconds"]) & set(PROBE_TIMINGS) <= {"nonlinear_probe", "probes"}:
            out["nonlinear_probe_speedup"] = out["probes_speedup"]  # a battery of the nonlinear probe alone
    return out


def table(summary: dict) -> str:
    from tabulate import tabulate
    before, after = summary.get("before_seconds", {}), summary.get("after_seconds", {})
    rows = [[m, before.get(m), after.get(m), before[m] / after[m] if m in before and after.get(m) else None]
            for m in dict.fromkeys([*before, *after])]
    rows.append(["all probe fits", summary.get("before_probes_s"), summary.get("after_probes_s"),
                 summary.get("probes_speedup")])
    rows.append(["whole battery", summary.get("before_battery_s"), summary.get("after_battery_s"), None])
    return tabulate(rows, headers=["metric", "before s", "after s", "speed-up"], floatfmt=".3g", tablefmt="github")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, type=Path, help="a finished run's folder (results/runs/...)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"some of {', '.join(VARIANTS)}")
    ap.add_argument("--metrics", default=None, help="time only these metrics (default: the preset's battery)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    metrics = args.metrics.split(",") if args.metrics else None
    if args.child:
        print(json.dumps(child(args.child, args.run, metrics, args.threads)))
        return {}
    variants = args.variants.split(",")
    if not (args.run / "checkpoint.pt").exists() or set(variants) - set(VARIANTS) or args.repeats < 1:
        ap.error(f"--run needs a finished run's folder, --variants some of {', '.join(VARIANTS)}, --repeats >= 1")
    sys.path.insert(0, os.path.dirname(HERE))
    from targets import cpu_name
    runs = {v: [] for v in variants}
    for _ in range(args.repeats):
        for v in variants:
            runs[v].append(measure(v, args.run, metrics, args.threads))
            print(f"{v}: {runs[v][-1]['seconds']:.1f} s (load {runs[v][-1]['load_1min'][0]:.1f})", flush=True)
    epochs = json.loads((args.run / "run.json").read_text())["params"]["train_config"]["epochs"]
    result = {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "threads": args.threads, "repeats": args.repeats,
              "run": args.run.name, "epochs": epochs, "recorded_training_s": recorded_training_s(args.run),
              **summarize(runs, epochs), "raw": runs}
    print(f"\n{result['cpu']}; {args.threads} threads; medians of {args.repeats}; training "
          f"{result.get('training_s', float('nan')):.0f} s ({epochs} epochs x the median second epoch; run.json recorded "
          f"{result['recorded_training_s'] or float('nan'):.0f} s)\n")
    print(table(result))
    for key, bound in TARGETS.items():
        if key in result:
            met = result[key] <= bound if key.endswith("training") else result[key] >= bound
            print(f"{'ok  ' if met else 'MISS'} {key}: {result[key]:.3g} (target {'<=' if key.endswith('training') else '>='} {bound})")
    if "before_battery_vs_training" in result:
        print(f"     before_battery_vs_training: {result['before_battery_vs_training']:.3g}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()

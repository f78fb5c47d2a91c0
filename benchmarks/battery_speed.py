"""Time of each representation metric at Fashion-MNIST scale (60,000 train / 10,000 test, d = 32), on this machine.

    python benchmarks/battery_speed.py [--train 60000] [--seeds 1] [--json out.json]

The representations are real: the top 32 principal components of Fashion-MNIST (the `pca` learner), with a
posterior std of 0.5 x each component's spread standing in for an encoder's, so the sample-based types are
exercised at full size. The linear probe runs both in liblinear (`linearsvc`, the default) and in torch
(`torch`, the same objective by L-BFGS); the table shows their accuracies side by side.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from tabulate import tabulate

import repbench
from repbench.measure.battery import BatteryConfig, probe_table
from repbench.metrics import intrinsic_dim, mutual_info


def representations(n_train: int) -> tuple[dict, np.ndarray, np.ndarray]:
    data = repbench.load_dataset("fashion-mnist").limit(n_train, None)
    pca = repbench.create_learner("pca", preset="quick", d=32).fit(data.train_x)
    reps = {}
    for split, x in (("train", data.train_x), ("test", data.test_x)):
        mean = pca.represent(x).float()
        reps[split] = {"mean": mean}
    spread = reps["train"]["mean"].std(0)
    for split in reps:
        reps[split]["std"] = (0.5 * spread).expand_as(reps[split]["mean"]).contiguous()
    return reps, data.train_y.numpy(), data.test_y.numpy()


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=60000)
    ap.add_argument("--seeds", type=int, default=1, help="probe seeds (the battery's default is 3)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    (reps, ty, vy), t_prep = timed(lambda: representations(args.train))
    print(f"representations ready in {t_prep:.1f} s: train {tuple(reps['train']['mean'].shape)}, "
          f"test {tuple(reps['test']['mean'].shape)}", flush=True)
    rows = []
    _, t = timed(lambda: mutual_info(reps["test"]["mean"], reps["test"]["std"]))
    rows.append({"metric": "mutual_info", "what": "test means and stds", "seconds": t})
    _, t = timed(lambda: intrinsic_dim(reps["test"]["mean"]))
    rows.append({"metric": "intrinsic_dim", "what": "PCA of test means", "seconds": t})
    for method in ("linearsvc", "torch"):
        cfg = BatteryConfig(probe_seeds=args.seeds, linear_method=method)
        for rep_type in ("mean", "sample_k100"):
            table, t = timed(lambda: probe_table(reps, ty, vy, cfg, (rep_type,), ("linear_probe",), "cpu", False))
            rows.append({"metric": f"linear_probe[{method}]", "what": rep_type, "seconds": t / args.seeds,
                         "accuracy": float(np.mean(table["linear_probe"][rep_type]))})
            print(rows[-1], flush=True)
    cfg = BatteryConfig(probe_seeds=args.seeds)
    for rep_type in ("mean", "sample_k100"):
        table, t = timed(lambda: probe_table(reps, ty, vy, cfg, (rep_type,), ("nonlinear_probe",), "cpu", False))
        rows.append({"metric": "nonlinear_probe", "what": rep_type, "seconds": t / args.seeds,
                     "accuracy": float(np.mean(table["nonlinear_probe"][rep_type]))})
        print(rows[-1], flush=True)
    print(f"\n{torch.get_num_threads()} threads; seconds are per probe seed\n")
    print(tabulate(rows, headers="keys", floatfmt=".3g", tablefmt="github"))
    by = {r["metric"] + r["what"]: r for r in rows}
    for t in ("mean", "sample_k100"):
        gap = by[f"linear_probe[torch]{t}"]["accuracy"] - by[f"linear_probe[linearsvc]{t}"]["accuracy"]
        print(f"torch - liblinear accuracy on {t}: {gap:+.2f} points")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    main()

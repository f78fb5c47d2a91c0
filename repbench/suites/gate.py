"""Regression gates: a suite's newest results against its fixed thresholds and against a stored baseline."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..errors import RepbenchError
from ..runs import trusted_metrics
from .schema import Cell, Suite, suite_command
from .runner import latest_results


def grouped(suite: Suite, results_dir: Path, tracking_uri: str | None = None
            ) -> tuple[dict[tuple[str, str, str], dict[str, float | None]], list[Cell]]:
    """(learner, dataset, preset) -> metric -> mean over the suite's seeds, from the run folders (or with
    `tracking_uri` from that store alone); and the cells with no finished run. A group with a seed missing is
    left out: its mean would be over other seeds than the suite's, a number measured with other settings."""
    by: dict[tuple[str, str, str], list[dict]] = {}
    done = set()
    for cell, rec in latest_results(suite, results_dir, tracking_uri):
        by.setdefault((cell.display, cell.dataset, cell.preset), []).append(trusted_metrics(rec))  # unconverged: NaN
        done.add(str(cell))
    missing = [c for c in suite.cells if str(c) not in done]
    for key in {(c.display, c.dataset, c.preset) for c in missing}:
        by.pop(key, None)
    out = {}
    for key, runs in by.items():
        names = {m for r in runs for m in r}
        out[key] = {m: (float(np.mean(vals)) if (vals := [r[m] for r in runs if r.get(m) is not None]) else None)
                    for m in names}
    return out, missing


def check_suite(suite: Suite, results_dir: Path, tracking_uri: str | None = None) -> tuple[list[str], list[str]]:
    """(failures, passes) as printable lines: one MISSING line for each cell with no finished run, whose group
    (all its seeds) is then left out of the thresholds and the baseline rather than gated on fewer seeds."""
    results, missing = grouped(suite, results_dir, tracking_uri)
    failures = [f"MISSING  {cell}: no finished run; run `{suite_command(suite, results_dir)}`" for cell in missing]
    left_out = {(c.display, c.dataset, c.preset) for c in missing}
    passes = []
    for t in suite.thresholds:
        for (learner, dataset, preset), metrics in sorted(results.items()):
            if not t.applies(learner, dataset):
                continue
            value = metrics.get(t.metric)
            shown = "missing" if value is None else f"{value:.4g}"
            line = f"{t.metric} {learner} ({dataset}/{preset}): {shown}, threshold {t.describe()}"
            (failures if t.violated(value) else passes).append(("REGRESSION " if t.violated(value) else "ok  ") + line)
    if suite.baseline_file is not None:
        f, p = compare_baseline(suite, results, left_out, results_dir)
        failures += f
        passes += p
    return failures, passes


def compare_baseline(suite: Suite, results: dict, left_out: set = frozenset(), results_dir: Path = Path("results")
                     ) -> tuple[list[str], list[str]]:
    """Lines for each baseline entry; the groups in `left_out` (a cell missing) are skipped, as their MISSING
    lines already fail the check."""
    path = suite.baseline_file
    if not path.exists():
        once = " once every cell has finished" if left_out else ""
        return [f"MISSING  baseline {path}: write it with `{suite_command(suite, results_dir, 'check')} "
                f"--write-baseline`{once}"], []
    try:
        base = json.loads(path.read_text())
        entries = [e for e in base["results"] if isinstance(e["metrics"], dict) and e["learner"] and e["dataset"]]
    except (OSError, ValueError, KeyError, TypeError):
        raise RepbenchError(f"baseline {path} is corrupt or not a repbench baseline; write it again with "
                            f"`repbench check {suite.path} --write-baseline`") from None
    failures, passes = [], []
    for entry in entries:
        key = (entry["learner"], entry["dataset"], entry["preset"])
        if key in left_out:
            continue
        current = results.get(key, {})
        for metric, tol in suite.tolerance.items():
            old, new = entry["metrics"].get(metric), current.get(metric)
            if old is None:
                continue
            line = f"{metric} {key[0]} ({key[1]}/{key[2]}): {'missing' if new is None else f'{new:.4g}'}, " \
                   f"baseline {old:.4g} ± {tol:g}"
            # a NaN, an infinity or a missing value never matches a baseline, nor does an untrustworthy baseline
            drifted = new is None or not math.isfinite(new) or not math.isfinite(old) or abs(new - old) > tol
            (failures if drifted else passes).append(("DRIFT " if drifted else "ok  ") + line)
    return failures, passes


def write_baseline(suite: Suite, results_dir: Path, tracking_uri: str | None = None) -> Path:
    if suite.baseline_file is None:
        raise RepbenchError(f"{suite.path} names no baseline file (add `baseline: {{file: ..., tolerance: ...}}`)")
    results, missing = grouped(suite, results_dir, tracking_uri)
    if not results:
        raise RepbenchError(f"no finished runs of suite '{suite.name}' under {results_dir}; run it first")
    if missing:
        raise RepbenchError(f"refusing to store a partial baseline: {len(missing)} cell(s) have no finished run "
                            f"({'; '.join(map(str, missing[:3]))}{'; ...' if len(missing) > 3 else ''}); run "
                            f"`{suite_command(suite, results_dir)}` first")
    untrusted = [f"{m} of {k[0]}" for k, v in sorted(results.items()) for m, x in v.items()
                 if x is not None and not math.isfinite(x)]
    if untrusted:
        raise RepbenchError(f"refusing to store a baseline with non-finite values ({', '.join(untrusted[:5])})")
    entries = [{"learner": k[0], "dataset": k[1], "preset": k[2], "metrics": v} for k, v in sorted(results.items())]
    from ..files import write_json
    suite.baseline_file.parent.mkdir(parents=True, exist_ok=True)
    write_json(suite.baseline_file, {"suite": suite.name, "results": entries})
    return suite.baseline_file

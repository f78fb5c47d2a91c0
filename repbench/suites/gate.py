"""Regression gates: a suite's results against its fixed thresholds and against a stored baseline.

Every value gated is one the suite's own settings measured (runner.latest_results); a cell or a metric the gate
cannot see so is a failing MISSING line, never a pass, and a gate that would gate nothing is an error. Against a
baseline only a change for the worse fails, in the metric's own direction ("neither" metrics keep a two-sided
band); with several training seeds on both sides it must be beyond the tolerance by a one-sided Welch test."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import RepbenchError
from ..metrics import METRICS, metric_info
from ..runs import trusted_metrics
from .schema import Suite, battery_of, measures, suite_command
from .runner import latest_results

Group = tuple[str, str, str]  # learner (display name), dataset, preset
SIGNIFICANCE = 0.05           # of the one-sided Welch test that a change is beyond the tolerance


@dataclass
class Gathered:
    """A suite's values by group: value name -> one value per seed (None: does not apply), for the names every
    seed of the group has; MISSING lines for what the suite's settings did not measure."""
    values: dict[Group, dict[str, list]] = field(default_factory=dict)
    seeds: dict[Group, list[int]] = field(default_factory=dict)
    batteries: dict[Group, object] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    left_out: set[Group] = field(default_factory=set)                 # a cell without a finished run
    unmeasured: dict[Group, set[str]] = field(default_factory=dict)   # metrics measured with other settings


def gather(suite: Suite, results_dir: Path, tracking_uri: str | None = None) -> Gathered:
    """The suite's values (from the run folders, or with `tracking_uri` from that store alone). A group with a cell
    missing is left out whole, and a metric some seed lacks is left out of its group: a mean over other seeds
    than the suite's is a number measured with other settings."""
    found = {str(cell): rec for cell, rec in latest_results(suite, results_dir, tracking_uri)}
    hint, g, by_group = suite_command(suite, results_dir), Gathered(), {}
    for cell in suite.cells + suite.features:
        key, rec = (cell.display, cell.dataset, cell.preset), found.get(str(cell))
        g.batteries[key] = cfg = battery_of(suite.battery, cell)
        if rec is None:
            g.missing.append(f"MISSING  {cell}: no finished run; run `{hint}`")
            g.left_out.add(key)
            continue
        for metric in rec["left_out"]:
            wanted = METRICS.get(metric).resolved_settings(cfg)
            settings = "".join(f"{k}={v}, " for k, v in wanted.items() if k != "version")
            g.missing.append(f"MISSING  {metric} of {cell}: no run of its configuration measured it with the "
                             f"suite's settings ({settings}version {wanted['version']} of its code); run `{hint}`")
            g.unmeasured.setdefault(key, set()).add(metric)
        by_group.setdefault(key, []).append((cell.seed, trusted_metrics(rec)))  # unconverged: NaN
    for key, runs in by_group.items():
        if key in g.left_out:
            continue
        names = set.intersection(*(set(values) for _, values in runs))
        g.values[key] = {n: [values[n] for _, values in runs] for n in sorted(names)}
        g.seeds[key] = [seed for seed, _ in runs]
    return g


def check_suite(suite: Suite, results_dir: Path, tracking_uri: str | None = None) -> tuple[list[str], list[str]]:
    """(failures, passes) as printable lines, each saying what it compared."""
    if not suite.thresholds and suite.baseline_file is None:
        raise RepbenchError(f"suite '{suite.name}' ({suite.path}) has no thresholds and no baseline: `check` would "
                            f"gate nothing (add thresholds: or baseline: to the file)")
    g = gather(suite, results_dir, tracking_uri)
    failures, passes = threshold_lines(suite, g)
    failures = g.missing + failures
    if suite.baseline_file is not None:
        f, p = compare_baseline(suite, g, results_dir)
        failures += f
        passes += p
    return failures, passes


def threshold_lines(suite: Suite, g: Gathered) -> tuple[list[str], list[str]]:
    """(failures, passes) of the suite's thresholds on the gathered values."""
    failures, passes = [], []
    for t in suite.thresholds:
        for key, values in sorted(g.values.items()):
            if not t.applies(*key) or not measures(g.batteries[key], t.metric) or _unmeasured(g, key, t.metric):
                continue
            shown, value = _described(t.metric, values.get(t.metric), g.seeds[key])
            bad = value is None or t.violated(value)
            line = f"{t.metric} {_where(key)}: {shown}, threshold {t.describe()}"
            (failures if bad else passes).append(("REGRESSION " if bad else "ok  ") + line)
    return failures, passes


def _unmeasured(g: Gathered, key: Group, name: str) -> bool:
    """Whether a value's metric already has a MISSING line for this group (not gated a second time)."""
    return any(METRICS.get(m).owns(name) for m in g.unmeasured.get(key, ()))


def _where(key: Group) -> str:
    return f"{key[0]} ({key[1]}/{key[2]})"


def _described(name: str, values: list | None, seeds: list) -> tuple[str, float | None]:
    """What a line shows of a group's values, and their mean (None: missing or does not apply)."""
    if values is None:
        return "missing (not among its values)", None
    if any(v is None for v in values):
        return "n/a (the metric does not apply to this learner)", None
    mean, digits = float(np.mean(values)), max(metric_info(name)[2], 2)
    if len(values) == 1:
        return f"{mean:.{digits}f} (seed {seeds[0]})", mean
    return f"{mean:.{digits}f} (mean of seeds {', '.join(map(str, seeds))})", mean


# ------------------------------------------------------------------------------------------ the baseline
def read_baseline(suite: Suite, results_dir: Path = Path("results")) -> dict[Group, dict] | None:
    """Group -> {"metrics": means, "seeds": per-seed values or None (a baseline written before they were kept)};
    None when the file does not exist. A corrupt or empty file, a value that is not a number, or a file written
    for another suite is a one-line error."""
    path, again = suite.baseline_file, f"write it again with `{suite_command(suite, results_dir, 'check')} " \
                                       f"--write-baseline`"
    if not path.exists():
        return None
    try:
        base = json.loads(path.read_text())
        entries = {(e["learner"], e["dataset"], e["preset"]): e for e in base["results"]}
        assert all(isinstance(e["metrics"], dict) and isinstance(e.get("seeds", {}), dict) for e in entries.values())
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        raise RepbenchError(f"baseline {path} is corrupt or not a repbench baseline; {again}") from None
    if base.get("suite", suite.name) != suite.name:
        raise RepbenchError(f"baseline {path} was written for suite '{base['suite']}', not '{suite.name}': give this "
                            f"suite a file of its own (`baseline: {{file: ...}}` in {suite.path}), then "
                            f"`{suite_command(suite, results_dir, 'check')} --write-baseline`")
    if not entries:
        raise RepbenchError(f"baseline {path} holds no results, so it would gate nothing; {again}")
    for key, e in entries.items():
        numbers = [(m, v) for m, v in e["metrics"].items()] + \
            [(m, x) for m, v in e.get("seeds", {}).items() for x in (v if isinstance(v, list) else [v])]
        bad = next(((m, v) for m, v in numbers if v is not None and (isinstance(v, bool) or
                                                                   not isinstance(v, (int, float)))), None)
        if bad:
            raise RepbenchError(f"baseline {path}: {bad[0]} of {_where(key)} is {bad[1]!r}, not a number; {again}")
        edited = next((m for m, v in e.get("seeds", {}).items() if not isinstance(v, list) or not v or
                       not isinstance(e["metrics"].get(m), (int, float)) or
                       not math.isclose(float(np.mean(v)), e["metrics"][m], rel_tol=1e-9, abs_tol=1e-12)), None)
        if edited:  # the Welch test reads the seeds, a reader the mean: they must say the same
            raise RepbenchError(f"baseline {path}: the mean of {edited} of {_where(key)} disagrees with its per-seed "
                                f"values; {again}")
    return {k: {"metrics": e["metrics"], "seeds": e.get("seeds")} for k, e in entries.items()}


def compare_baseline(suite: Suite, g: Gathered, results_dir: Path = Path("results")) -> tuple[list[str], list[str]]:
    """Lines for each group and tolerance. Groups left out (a cell missing) are skipped, as their MISSING lines
    already fail the check; a group or a metric the baseline lacks, or an entry for a group the suite does not
    have, fails: the baseline would gate nothing there."""
    base = read_baseline(suite, results_dir)
    write = f"`{suite_command(suite, results_dir, 'check')} --write-baseline`"
    if base is None:
        once = " once every cell has finished" if g.left_out else ""
        return [f"MISSING  baseline {suite.baseline_file}: write it with {write}{once}"], []
    failures, passes = [], []
    groups = set(g.values) | g.left_out
    failures += [f"MISSING  {_where(k)} in the suite: the baseline has an entry the suite no longer makes; write "
                 f"it again with {write}" for k in sorted(set(base) - groups)]
    for key, values in sorted(g.values.items()):
        entry = base.get(key)
        for metric in suite.tolerance:
            if not measures(g.batteries[key], metric) or _unmeasured(g, key, metric):
                continue
            if entry is None or metric not in entry["metrics"]:
                failures.append(f"MISSING  baseline of {metric} {_where(key)}: the baseline has none; write it with "
                                f"{write}")
                continue
            old = (entry["seeds"] or {}).get(metric) or [entry["metrics"][metric]]
            status, line = verdict(metric, suite.tolerance[metric], old, values.get(metric), g.seeds[key])
            if status is not None:
                label = "ok  " if status == "ok" else f"{status} "
                (failures if status in ("REGRESSION", "DRIFT") else passes).append(f"{label}{metric} {_where(key)}: "
                                                                                   f"{line}")
    return failures, passes


def verdict(metric: str, tol: float, old: list, new: list | None, seeds: list) -> tuple[str | None, str]:
    """(REGRESSION, DRIFT, IMPROVED or ok; None when neither side applies) and what was compared. Lower-is-better
    and higher-is-better metrics fail only for the worse; "neither" metrics fail outside a two-sided band."""
    shown, mean = _described(metric, new, seeds)
    if new is not None and all(v is None for v in new) and all(v is None for v in old):
        return None, ""  # does not apply to this learner, then or now
    if mean is None or any(v is None for v in old) or not math.isfinite(mean) or \
            not all(math.isfinite(v) for v in old):  # nothing untrusted or missing passes
        return ("REGRESSION", f"{shown} vs baseline {_baseline(old)}; a value that cannot be compared never passes")
    direction, digits = metric_info(metric)[1], max(metric_info(metric)[2], 2)
    change = mean - float(np.mean(old))
    beyond, how = _beyond(direction, tol, old, new)
    compared = f"{shown} vs baseline {_baseline(old, digits)}: {change:+.{digits}f}, tolerance {tol:g} ({how})"
    if beyond:
        return ("DRIFT" if direction == "neither" else "REGRESSION"), compared
    better = -change if direction == "lower" else change
    if direction != "neither" and better > tol:
        return "IMPROVED", compared + "; `check --write-baseline` stores it as the new baseline"
    return "ok", compared


def _baseline(old: list, digits: int = 2) -> str:
    mean = float(np.mean(old))
    return f"{mean:.{digits}f}" + (f" (mean of {len(old)} seeds)" if len(old) > 1 else "")


def _beyond(direction: str, tol: float, old: list, new: list) -> tuple[bool, str]:
    """Whether `new` is worse than `old` by more than `tol` (either way for "neither"), and how that was decided:
    with two or more seeds on both sides (and some spread), a one-sided Welch test at SIGNIFICANCE (each side of
    a two-sided band at half of it); else the means."""
    from scipy import stats
    old_a, new_a = np.asarray(old, dtype=float), np.asarray(new, dtype=float)
    sides = {"lower": ["greater"], "higher": ["less"], "neither": ["greater", "less"]}[direction]
    if len(old_a) < 2 or len(new_a) < 2 or (old_a.var() == 0 and new_a.var() == 0):
        change = new_a.mean() - old_a.mean()
        return any(change > tol if s == "greater" else change < -tol for s in sides), "means compared"
    level = SIGNIFICANCE / len(sides)
    p = [stats.ttest_ind(new_a, old_a + (tol if s == "greater" else -tol), equal_var=False, alternative=s).pvalue
         for s in sides]
    return min(p) < level, f"one-sided Welch test over {len(new_a)} vs {len(old_a)} seeds, p = {min(p):.2g}"


def write_baseline(suite: Suite, results_dir: Path, tracking_uri: str | None = None) -> Path:
    """Store the suite's values as its baseline: per group the means and each seed's values (for the Welch test)."""
    if suite.baseline_file is None:
        raise RepbenchError(f"{suite.path} names no baseline file (add `baseline: {{file: ..., tolerance: ...}}`)")
    g = gather(suite, results_dir, tracking_uri)
    unrun = sum("no finished run;" in m for m in g.missing)
    if unrun == len(suite.cells) + len(suite.features):
        raise RepbenchError(f"no finished runs of suite '{suite.name}' under {results_dir}; run it first")
    if g.missing:
        what = "; ".join(m.removeprefix("MISSING  ").split(":")[0] for m in g.missing[:3])
        raise RepbenchError(f"refusing to store a partial baseline: {len(g.missing)} cell(s) or metric(s) were not "
                            f"measured with the suite's settings ({what}{'; ...' if len(g.missing) > 3 else ''}); "
                            f"run `{suite_command(suite, results_dir)}` first")
    # the more specific cause first: a NaN also fails every threshold
    untrusted = [f"{n} of {k[0]}" for k, v in sorted(g.values.items()) for n, xs in v.items()
                 if any(x is not None and not math.isfinite(x) for x in xs)]
    if untrusted:
        raise RepbenchError(f"refusing to store a baseline with non-finite values ({', '.join(untrusted[:5])})")
    failing, _ = threshold_lines(suite, g)
    if failing:  # a baseline is a known-good state: one that fails the suite's own thresholds is not
        raise RepbenchError(f"refusing to store a baseline that fails the suite's own thresholds: {len(failing)} "
                            f"failing ({failing[0].removeprefix('REGRESSION ')}{'; ...' if len(failing) > 1 else ''});"
                            f" see `{suite_command(suite, results_dir, 'check')}`")
    entries = [{"learner": k[0], "dataset": k[1], "preset": k[2], "seed_ids": g.seeds[k],
                "metrics": {n: (None if None in xs else float(np.mean(xs))) for n, xs in v.items()},
                "seeds": {n: xs for n, xs in v.items() if None not in xs}} for k, v in sorted(g.values.items())]
    from ..files import write_json
    suite.baseline_file.parent.mkdir(parents=True, exist_ok=True)
    write_json(suite.baseline_file, {"suite": suite.name, "results": entries})
    return suite.baseline_file

"""Runs -> pandas -> the paper's tables (markdown, LaTeX or CSV) with mean +- std over seeds, and a figure.

Table 1: probe accuracy by representation type (rows) and learner (columns).
Table 2: bpd, mutual information, intrinsic dimension, nonlinear and linear probe (columns) by learner (rows).
Runs come from a suite's run folders (the newest finished run of each cell) or from MLflow (by experiment/tags).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from .metrics import ARROWS, metric_info, summary_metrics
from .metrics.probes import REP_TYPE_LABELS
from .registry import RepbenchError

FORMATS = ("markdown", "latex", "csv")


NOT_APPLICABLE, NOT_MEASURED, UNTRUSTED = "n/a", "—", "non-finite"


def table_values(metrics: dict, not_applicable=()) -> dict:
    """A record's values for a table: None (does not apply) becomes "n/a", NaN or an infinity "non-finite";
    a value never measured stays absent and shows as "—"."""
    out = {}
    for name, value in metrics.items():
        if value is None or name in not_applicable:
            out[name] = NOT_APPLICABLE
        elif not math.isfinite(value):
            out[name] = UNTRUSTED
        else:
            out[name] = float(value)
    return out


def records_from_suite(suite, results_dir: Path) -> list[dict]:
    from .suite import latest_results
    rows = []
    for cell, rec in latest_results(suite, results_dir):
        rows.append({"learner": cell.display, "dataset": cell.dataset, "preset": cell.preset, "seed": cell.seed,
                     **table_values(rec.get("metrics", {})), "_spectrum": rec.get("spectrum") or []})
    return rows


def records_from_mlflow(tracking_uri: str, experiment: str, tags: dict[str, str]) -> list[dict]:
    """Finished runs of an experiment matching the tags; the newest run of each cell. A client of its own, so the
    process-wide MLflow URI (and the MLFLOW_TRACKING_URI it would set) is left alone."""
    from .tracking import connect, unreachable
    problem = unreachable(tracking_uri)
    if problem:
        raise RepbenchError(problem)
    for k, v in tags.items():
        if "'" in k + v or "`" in k + v:
            raise RepbenchError(f"--tag {k}={v}: quotes are not allowed in tag filters")
    client = connect(tracking_uri)
    try:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            raise RepbenchError(f"no MLflow experiment '{experiment}' at {tracking_uri}")
        filters = " and ".join(["attributes.status = 'FINISHED'"] + [f"tags.`{k}` = '{v}'" for k, v in tags.items()])
        runs = client.search_runs([exp.experiment_id], filter_string=filters, max_results=50000)
    except RepbenchError:
        raise
    except Exception as exc:  # a store that fails mid-way: one line, not MLflow's traceback
        raise RepbenchError(f"cannot read runs from {tracking_uri}: {type(exc).__name__}: "
                            f"{(str(exc).splitlines() or [''])[0][:200]}") from None
    rows = []
    for r in runs:
        t = r.data.tags
        if not {"display_name", "dataset", "preset", "seed"} <= set(t):
            continue  # not a repbench run
        spectrum = _read_json(Path(t.get("run_folder", "/nonexistent")) / "metrics.json").get("spectrum") or []
        not_applicable = [n for n in t.get("not_applicable", "").split(",") if n]
        rows.append({"learner": t["display_name"], "dataset": t["dataset"], "preset": t["preset"],
                     "seed": int(t["seed"]), "_spectrum": spectrum, "_start": r.info.start_time,
                     **table_values({**r.data.metrics, **{n: None for n in not_applicable}})})
    if rows:  # several runs of one cell: keep the newest
        rows = (pd.DataFrame(rows).sort_values("_start").groupby(["learner", "dataset", "preset", "seed"])
                .tail(1).drop(columns="_start").to_dict("records"))
    return rows


def _read_json(path: Path) -> dict:
    from .records import read_json
    return read_json(path)


def _cell(values: pd.Series, digits: int) -> str:
    """mean ± std over the seeds that measured a value; no ± for one seed; the markers otherwise."""
    present = [v for v in values if not (isinstance(v, float) and math.isnan(v))]  # NaN here means absent
    if not present:
        return NOT_MEASURED
    if UNTRUSTED in present:
        return UNTRUSTED
    numbers = np.array([v for v in present if not isinstance(v, str)], dtype=float)
    if not len(numbers):
        return NOT_APPLICABLE
    return f"{numbers.mean():.{digits}f}" + (f" ± {numbers.std():.{digits}f}" if len(numbers) > 1 else "")


def _header(metric: str) -> str:
    unit, direction, _ = metric_info(metric)
    arrow = ARROWS.get(direction, "")
    return f"{metric} ({unit}{', ' + arrow if arrow else ''})"


def _digits(metric: str) -> int:
    return metric_info(metric)[2]


def table2(df: pd.DataFrame) -> pd.DataFrame:
    out = {}
    for (learner, dataset, preset), g in df.groupby(["learner", "dataset", "preset"], sort=False):
        out[(learner, dataset, preset, len(g))] = {_header(m): _cell(g[m], _digits(m)) if m in g else NOT_MEASURED
                                                   for m in summary_metrics()}
    t = pd.DataFrame.from_dict(out, orient="index")
    t.index = pd.MultiIndex.from_tuples(t.index, names=["learner", "dataset", "preset", "seeds"])
    return t.reset_index()


def table1(df: pd.DataFrame, probe: str = "linear_probe") -> pd.DataFrame:
    out = {}
    for label_key, label in REP_TYPE_LABELS.items():
        col = probe if label_key == "mean" else f"{probe}.{label_key}"
        out[label] = {learner: _cell(g[col], 1) if col in g else NOT_MEASURED
                      for learner, g in df.groupby("learner", sort=False)}
    t = pd.DataFrame.from_dict(out, orient="index")
    t.index.name = f"{probe} (%) by representation"
    return t.reset_index()


def render(table: pd.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return table.to_csv(index=False)
    style = {"markdown": "github", "latex": "latex_booktabs"}[fmt]
    return tabulate(table.values.tolist(), headers=list(table.columns), tablefmt=style, disable_numparse=True)


def load_paper_numbers(path: Path) -> list[dict]:
    """Published numbers: a YAML list of {dataset, learner, metric, value, source}; errors name the file."""
    import yaml
    path = Path(path)
    try:
        rows = yaml.safe_load(path.read_text()) or []
    except OSError as exc:
        raise RepbenchError(f"cannot read paper numbers {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise RepbenchError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(rows, list):
        raise RepbenchError(f"{path}: expected a list of entries (dataset, learner, metric, value, source)")
    for r in rows:
        if not isinstance(r, dict):
            raise RepbenchError(f"{path}: entry {r!r} is not a mapping")
        missing = {"dataset", "learner", "metric", "value", "source"} - set(r)
        if missing:
            raise RepbenchError(f"{path}: entry {r} lacks {', '.join(sorted(missing))}")
        if isinstance(r["value"], bool) or not isinstance(r["value"], (int, float)):
            raise RepbenchError(f"{path}: entry {r} has a value that is not a number")
    return rows


def paper_table(df: pd.DataFrame, paper: list[dict]) -> pd.DataFrame | None:
    """Ours beside the published number for every (dataset, learner, metric) the paper file covers."""
    rows = []
    for p in paper:
        g = df[(df["dataset"] == p["dataset"]) & (df["learner"] == p["learner"])]
        if g.empty:
            continue
        ours = _cell(g[p["metric"]], _digits(p["metric"])) if p["metric"] in g else NOT_MEASURED
        rows.append([p["learner"], p["dataset"], _header(p["metric"]), ours, f"{p['value']:g}", p["source"]])
    return pd.DataFrame(rows, columns=["learner", "dataset", "metric", "repbench", "paper", "source"]) if rows else None


def build_report(records: list[dict], fmt: str = "markdown", figure: Path | None = None, title: str = "",
                 paper: list[dict] | None = None) -> str:
    if fmt not in FORMATS:
        raise RepbenchError(f"unknown format '{fmt}'; use {', '.join(FORMATS)}")
    if not records:
        raise RepbenchError("no finished runs match; run the suite first (`repbench suite FILE`)")
    df = pd.DataFrame(records)
    parts = [f"Table 2{': ' + title if title else ''} (mean ± std over seeds; ↑ higher is better, ↓ lower, "
             f"no arrow: neither; {NOT_APPLICABLE}: does not apply, {NOT_MEASURED}: not measured)",
             render(table2(df), fmt)]
    for probe in ("linear_probe", "nonlinear_probe"):
        if f"{probe}.sample_k1" in df:  # the representation types ran
            parts += [f"Table 1: {probe.replace('_', ' ')} accuracy by representation type", render(table1(df, probe), fmt)]
    if paper is not None:
        side = paper_table(df, paper)
        parts += ["Beside the paper's published numbers", render(side, fmt) if side is not None else
                  "(the paper file has no numbers for these learners and datasets)"]
    if figure is not None:
        spectra = {}
        for learner, g in df.groupby("learner", sort=False):
            runs = [np.asarray(s) for s in g["_spectrum"] if len(s)]
            if runs and len({len(r) for r in runs}) == 1:
                spectra[learner] = np.mean(runs, axis=0).tolist()
        if spectra:
            from .plots import spectrum_plot
            spectrum_plot(spectra, Path(figure))
            parts.append(f"Figure: PCA spectra of all learners in {figure}")
    return "\n\n".join(parts) + "\n"

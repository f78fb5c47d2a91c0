"""Runs -> pandas -> the paper's tables (markdown, LaTeX or CSV) with mean +- std over seeds, and a figure.

Table 1: probe accuracy by representation type (rows) and learner (columns).
Table 2: bpd, mutual information, intrinsic dimension, nonlinear and linear probe (columns) by learner (rows).
Runs come from a suite's run folders (the newest finished run of each cell) or from MLflow (by experiment/tags).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from .metrics import ARROWS, metric_info, summary_metrics
from .metrics.probes import REP_TYPE_LABELS
from .registry import RepbenchError

FORMATS = ("markdown", "latex", "csv")


def records_from_suite(suite, results_dir: Path) -> list[dict]:
    from .suite import latest_results
    rows = []
    for cell, rec in latest_results(suite, results_dir):
        rows.append({"learner": cell.display, "dataset": cell.dataset, "preset": cell.preset, "seed": cell.seed,
                     **{k: v for k, v in rec["metrics"].items()}, "_spectrum": rec.get("spectrum") or []})
    return rows


def records_from_mlflow(tracking_uri: str, experiment: str, tags: dict[str, str]) -> list[dict]:
    """Finished runs of an experiment matching the tags; the newest run of each cell. A client of its own, so the
    process-wide MLflow URI (and the MLFLOW_TRACKING_URI it would set) is left alone."""
    import json
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise RepbenchError(f"no MLflow experiment '{experiment}' at {tracking_uri}")
    filters = " and ".join(["attributes.status = 'FINISHED'"] + [f"tags.`{k}` = '{v}'" for k, v in tags.items()])
    rows = []
    for r in client.search_runs([exp.experiment_id], filter_string=filters, max_results=50000):
        t = r.data.tags
        folder = Path(t.get("run_folder", "/nonexistent"))
        spectrum = json.loads((folder / "metrics.json").read_text()).get("spectrum") or [] \
            if (folder / "metrics.json").exists() else []
        rows.append({"learner": t["display_name"], "dataset": t["dataset"], "preset": t["preset"],
                     "seed": int(t["seed"]), "_spectrum": spectrum, "_start": r.info.start_time, **r.data.metrics})
    if rows:  # several runs of one cell: keep the newest
        rows = (pd.DataFrame(rows).sort_values("_start").groupby(["learner", "dataset", "preset", "seed"])
                .tail(1).drop(columns="_start").to_dict("records"))
    return rows


def _cell(values: pd.Series, digits: int) -> str:
    v = values.dropna()
    if v.empty:
        return "n/a"
    return f"{v.mean():.{digits}f}" + (f" ± {v.std(ddof=0):.{digits}f}" if len(v) > 1 else "")


def _header(metric: str) -> str:
    unit, direction, _ = metric_info(metric)
    arrow = ARROWS.get(direction, "")
    return f"{metric} ({unit}{', ' + arrow if arrow else ''})"


def _digits(metric: str) -> int:
    return metric_info(metric)[2]


def table2(df: pd.DataFrame) -> pd.DataFrame:
    out = {}
    for (learner, dataset, preset), g in df.groupby(["learner", "dataset", "preset"], sort=False):
        out[(learner, dataset, preset, len(g))] = {_header(m): _cell(g[m], _digits(m)) if m in g else "n/a"
                                                   for m in summary_metrics()}
    t = pd.DataFrame.from_dict(out, orient="index")
    t.index = pd.MultiIndex.from_tuples(t.index, names=["learner", "dataset", "preset", "seeds"])
    return t.reset_index()


def table1(df: pd.DataFrame, probe: str = "linear_probe") -> pd.DataFrame:
    out = {}
    for label_key, label in REP_TYPE_LABELS.items():
        col = probe if label_key == "mean" else f"{probe}.{label_key}"
        out[label] = {learner: _cell(g[col], 1) if col in g else "n/a"
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
    import yaml
    rows = yaml.safe_load(Path(path).read_text()) or []
    for r in rows:
        missing = {"dataset", "learner", "metric", "value", "source"} - set(r)
        if missing:
            raise RepbenchError(f"{path}: entry {r} lacks {', '.join(sorted(missing))}")
    return rows


def paper_table(df: pd.DataFrame, paper: list[dict]) -> pd.DataFrame | None:
    """Ours beside the published number for every (dataset, learner, metric) the paper file covers."""
    rows = []
    for p in paper:
        g = df[(df["dataset"] == p["dataset"]) & (df["learner"] == p["learner"])]
        if g.empty:
            continue
        ours = _cell(g[p["metric"]], _digits(p["metric"])) if p["metric"] in g else "n/a"
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
             f"no arrow: neither)",
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

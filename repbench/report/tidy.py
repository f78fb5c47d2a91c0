"""The report for programs: tidy rows, one per learner x dataset x preset x value, as JSON or CSV.

Each row holds the mean over training seeds, the sample std, how many seeds measured a number, the value's unit
and direction, the battery settings and the metric and model code versions it was measured with, and the
per-seed values. A value that cannot be trusted (NaN, a probe that did not converge, seeds measured with
different settings) has no mean, and its `status` says why. The JSON document's shape is
`results.schema.json`, beside this file.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pandas as pd

from ..metrics import entry_of, metric_info
from .stats import MIXED, NOT_APPLICABLE, NOT_MEASURED, UNCONVERGED, UNTRUSTED, Stat, shown, stat

FORMAT = "repbench-results/1"
TIDY_FORMATS = ("json", "csv")
SCHEMA = Path(__file__).with_name("results.schema.json")
STATUS = {NOT_APPLICABLE: "not_applicable", NOT_MEASURED: "not_measured", UNTRUSTED: "non_finite",
          UNCONVERGED: "unconverged", MIXED: "mixed_settings"}
COLUMNS = ["learner", "dataset", "preset", "metric", "entry", "unit", "direction", "status", "mean", "std",
           "n_seeds", "metric_version", "model_version", "settings", "seeds", "values"]
NESTED = ("settings", "seeds", "values")  # JSON-encoded in a CSV cell


def tidy_rows(records: list[dict]) -> list[dict]:
    """The report's records (one per cell and seed, values as tables show them) as tidy rows."""
    df = pd.DataFrame(records)
    values = [c for c in df.columns if not c.startswith("_") and c not in ("learner", "dataset", "preset", "seed")
              and not c.endswith("_std") and entry_of(c) is not None]
    rows = []
    for (learner, dataset, preset), g in df.groupby(["learner", "dataset", "preset"], sort=False):
        for name in values:
            present = g[g[name].map(lambda v: not (isinstance(v, float) and pd.isna(v)))]
            if len(present):
                rows.append(_row(learner, dataset, preset, name, present))
    return rows


def _row(learner: str, dataset: str, preset: str, name: str, g: pd.DataFrame) -> dict:
    unit, direction, digits = metric_info(name)
    entry = entry_of(name).name
    measured = [(r.get("_record") or {}) for r in g.to_dict("records")]
    settings = [_settings(rec, entry) for rec in measured]
    cell = stat(list(g[name]), digits)
    mixed = any(s != settings[0] for s in settings)   # a mean over seeds measured differently is no number
    status = "mixed_settings" if mixed else STATUS.get(cell.text, "ok")
    common = None if mixed else {k: v for k, v in settings[0].items() if k != "version"}
    numbers = [v if isinstance(v, float) else None for v in g[name]]
    return {"learner": learner, "dataset": dataset, "preset": preset, "metric": name, "entry": entry,
            "unit": unit, "direction": direction, "status": status,
            "mean": cell.mean if status == "ok" else None, "std": cell.std if status == "ok" else None,
            "n_seeds": sum(v is not None for v in numbers),
            "metric_version": None if mixed else settings[0]["version"],
            "model_version": model_version(measured[0]), "settings": common,
            "seeds": [int(s) for s in g["seed"]], "values": numbers}


def model_version(record: dict) -> int:
    """The version of a run's model code: from its run.json, or its MLflow run's parameters; 1 before versions."""
    from ..files import read_json
    state = read_json(Path(record["_folder"]) / "run.json") if record.get("_folder") else {}
    version = (state.get("params") or {}).get("model_version", (record.get("params") or {}).get("model_version", 1))
    return int(version)


class Cells:
    """The tables' cells, each read from the tidy row of its learner x dataset x preset x value, so that the
    markdown, LaTeX and HTML tables show the very number (or marker) that the JSON and CSV rows hold."""

    def __init__(self, rows: list[dict]):
        self.rows = {(r["learner"], r["dataset"], r["preset"], r["metric"]): r for r in rows}

    def row(self, learner: str, dataset: str, preset: str, metric: str) -> dict | None:
        return self.rows.get((learner, dataset, preset, metric))

    def __call__(self, learner: str, dataset: str, preset: str, metric: str) -> Stat:
        row = self.row(learner, dataset, preset, metric)
        if row is None:
            return Stat(NOT_MEASURED)
        if row["status"] != "ok":
            return Stat({v: k for k, v in STATUS.items()}[row["status"]])
        return shown(row["mean"], row["std"], metric_info(row["metric"])[2])


def _settings(record: dict, entry: str) -> dict:
    """The settings and version a record's values of `entry` were measured with (not how its fits ended)."""
    from ..runs.record import DIAGNOSTICS, measured_with
    have = measured_with(record).get(entry, {"version": 1})
    return {k: v for k, v in have.items() if k not in DIAGNOSTICS}


def render_tidy(records: list[dict], fmt: str, title: str = "") -> str:
    """`fmt` json: {"format", "title", "rows"}; csv: a header, then one line per row (nested fields as JSON)."""
    rows = tidy_rows(records)
    if fmt == "json":
        return json.dumps({"format": FORMAT, "title": title, "rows": rows}, indent=1) + "\n"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: json.dumps(v) if k in NESTED else ("" if v is None else v) for k, v in row.items()}
                     for row in rows)
    return buffer.getvalue()


def read_tidy(text: str) -> list[dict]:
    """Rows back from render_tidy's JSON or CSV (empty cells are None, numbers numbers)."""
    if text.lstrip().startswith("{"):
        return json.loads(text)["rows"]
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        rows.append({k: json.loads(v) if k in NESTED else _scalar(k, v) for k, v in row.items()})
    return rows


def _scalar(key: str, text: str):
    if text == "":
        return None
    if key in ("mean", "std"):
        return float(text)
    return int(text) if key in ("n_seeds", "metric_version", "model_version") else text

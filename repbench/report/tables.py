"""Runs -> pandas -> the paper's tables with mean ± std over training seeds, differences with confidence
intervals, the published numbers beside ours, and figures.

Table 2: bpd, mutual information, intrinsic dimension, nonlinear and linear probe (columns) by learner (rows).
Table 1: probe accuracy by representation type. Label efficiency: probes on n labels. Table 6: semi-supervised
classifier accuracy. Runs come from a suite's run folders (the newest finished run of each cell) or from MLflow.
Seeds are averaged only within a learner x dataset x preset x configuration, never across them.
Rendering (markdown, CSV, LaTeX, HTML) lives in render.py and leaderboard.py; this file computes what to show.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..metrics import ARROWS, metric_info, summary_metrics
from ..metrics.probes import PROBES, REP_TYPE_LABELS
from ..errors import RepbenchError, first_line
from .stats import NOT_APPLICABLE, NOT_MEASURED, UNCONVERGED, UNTRUSTED, Stat
from .tidy import Cells, model_version, tidy_rows

CELL = ["learner", "dataset", "preset", "seed"]
STATUS_TEXT = {"non_finite": "non-finite", "unconverged": "did not converge", "mixed_settings":
               "seeds measured with different settings", "not_applicable": "does not apply",
               "not_measured": "not measured"}
DEFAULT_PAPER = Path(__file__).resolve().parents[2] / "benchmarks" / "reference" / "paper_numbers.yaml"
PAPER_DATASET = {"mnist5k": "mnist"}  # our datasets that are subsets of a published one


@dataclass
class Section:
    key: str
    title: str
    columns: list[str]                       # headers; the first `labels` are row labels
    rows: list[list]                         # str for labels, Stat for values
    labels: int = 1
    directions: dict[str, str] = field(default_factory=dict)   # column -> higher / lower / neither
    note: str = ""
    # label columns whose values rows must share to be compared (the best is bolded only among those rows)
    comparable: tuple[str, ...] = ("dataset", "preset")


@dataclass
class Report:
    title: str
    sections: list[Section]
    figures: list[tuple[str, Path]] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ records
def table_values(metrics: dict, not_applicable=(), unconverged=()) -> dict:
    """A record's values for a table: None (does not apply) becomes "n/a", NaN or an infinity "non-finite", a
    probe whose solver did not converge "unconverged"; a value never measured stays absent and shows as "—"."""
    out = {}
    for name, value in metrics.items():
        if value is None or name in not_applicable:
            out[name] = NOT_APPLICABLE
        elif name in unconverged:
            out[name] = UNCONVERGED
        elif not math.isfinite(value):
            out[name] = UNTRUSTED
        else:
            out[name] = float(value)
    return out


def records_from_suite(suite, results_dir: Path, tracking_uri: str | None = None) -> list[dict]:
    """Each cell's values as the suite measures them (suites.latest_results): from the run folders, or with
    `tracking_uri` from that store alone. A metric that some seed of a learner has not measured so is left out of
    all its seeds: a mean over fewer seeds than the row's `seeds` would be a number measured otherwise."""
    from ..metrics import METRICS
    from ..suites import latest_results
    from ..runs import unconverged
    rows, lacking = [], {}
    for cell, rec in latest_results(suite, results_dir, tracking_uri):
        rows.append({"learner": cell.display, "dataset": cell.dataset, "preset": cell.preset, "seed": cell.seed,
                     **table_values(rec.get("metrics", {}), unconverged=unconverged(rec)),
                     "_spectrum": rec.get("spectrum") or [], "_history": rec.get("history") or [], "_record": rec,
                     "_config": configuration(cell.build().params() if hasattr(cell, "build") else {})})
        lacking.setdefault((cell.display, cell.dataset, cell.preset), set()).update(rec["left_out"])
    for row in rows:
        for metric in lacking[(row["learner"], row["dataset"], row["preset"])]:
            for name in [n for n in row if not n.startswith("_") and METRICS.get(metric).owns(n)]:
                del row[name]
    return rows


def configuration(params: dict) -> str:
    """What sets a run's trained weights apart from other runs of its learner, dataset and preset, without its
    seed: its parameters (a run folder's, or MLflow's flattened strings), less the machine, the process, the
    battery and what only evaluates. Values are read back from their text, so both spellings compare equal."""
    from ..config import EVALUATION_ONLY
    from ..runs.tracking import flatten
    flat = flatten(params)
    resolved = any(k.startswith("model_config.") for k in flat)  # then the options are in it, resolved
    kept = {k: _value_of(v) for k, v in flat.items()
            if k not in ("seed", "dataset", "device") and not k.startswith(("env.", "battery."))
            and not (resolved and k.startswith("options.")) and k.rsplit(".", 1)[-1] not in EVALUATION_ONLY}
    return json.dumps(kept, sort_keys=True)


def _value_of(value):
    """A parameter's value as Python sees it ('(1, 28, 28)', '[1, 28, 28]' and [1, 28, 28] alike)."""
    import ast
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            try:
                value = json.loads(value)
            except ValueError:
                return value
    return list(value) if isinstance(value, tuple) else value


def left_out_values(records: list[dict]) -> list[str]:
    """The suite's metrics of each cell that its runs measured only with other settings (their learner's row
    shows them as not measured, for every seed)."""
    return [f"{m} of {r['learner']} / {r['dataset']} / {r['preset']} / seed {r['seed']}" for r in records
            for m in r["_record"].get("left_out", [])]


def missing_cells(suite, records: list[dict]) -> list[str]:
    """The suite's cells that have no row in `records` (no finished run), in the suite's order."""
    have = {(r["learner"], r["dataset"], r["preset"], r["seed"]) for r in records}
    return [str(c) for c in suite.cells if (c.display, c.dataset, c.preset, c.seed) not in have]


def records_from_mlflow(tracking_uri: str, experiment: str, tags: dict[str, str], history: bool = False
                        ) -> list[dict]:
    """Finished runs of an experiment matching the tags; the newest run of each cell. A client of its own, so the
    process-wide MLflow URI (and the MLFLOW_TRACKING_URI it would set) is left alone."""
    from ..runs import connect, unreachable
    store = Path(tracking_uri.removeprefix("sqlite:///")) if tracking_uri.startswith("sqlite:///") else None
    if store is not None and not store.exists():  # reading must not leave an empty store in a mistyped folder
        raise RepbenchError(f"no MLflow store at {store}: nothing has run there (check --results-dir, or give "
                            f"--tracking-uri)")
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
        rows = [_mlflow_row(client, r, history) for r in runs if {"display_name", "dataset", "preset", "seed"}
                <= set(r.data.tags)]
    except RepbenchError:
        raise
    except Exception as exc:  # a store that fails mid-way: one line, not MLflow's traceback
        raise RepbenchError(f"cannot read runs from {tracking_uri}: {type(exc).__name__}: "
                            f"{(str(exc).splitlines() or [''])[0][:200]}") from None
    if rows:  # several runs of one cell: keep the newest
        rows = (pd.DataFrame(rows).sort_values("_start").groupby(CELL + ["_config"]).tail(1).drop(columns="_start")
                .to_dict("records"))
    return rows


def _mlflow_row(client, r, history: bool) -> dict:
    from ..runs import read_record, unconverged
    t = r.data.tags
    folder = Path(t.get("run_folder", "/nonexistent"))
    # read as strictly as a suite's report reads it: a damaged record here would lose its values' settings
    record = read_record(folder / "metrics.json") if (folder / "metrics.json").exists() else {}
    if record:
        record["_folder"] = str(folder)
    steps = record.get("history") or []
    if history and not steps:  # no run folder on this machine: the curves from the server
        by_epoch: dict[int, dict] = {}
        for name in ("test_loss", "test_mutual_info", "train_loss"):
            for m in client.get_metric_history(r.info.run_id, name):
                by_epoch.setdefault(m.step, {"epoch": m.step})[name] = m.value
        steps = [by_epoch[k] for k in sorted(by_epoch) if k > 0]
    not_applicable = [n for n in t.get("not_applicable", "").split(",") if n]
    flagged = {n for n in t.get("unconverged", "").split(",") if n} | unconverged(record)
    return {"learner": t["display_name"], "dataset": t["dataset"], "preset": t["preset"], "seed": int(t["seed"]),
            "_config": configuration(dict(r.data.params)),
            "_spectrum": record.get("spectrum") or [], "_history": steps, "_start": r.info.start_time,
            "_record": {**record, "mlflow_run_id": r.info.run_id, "tags": dict(t), "params": dict(r.data.params)},
            **table_values({**r.data.metrics, **{n: None for n in not_applicable}}, unconverged=flagged)}


# ------------------------------------------------------------------------------------------ cells


def header(metric: str) -> str:
    unit, direction, _ = metric_info(metric)
    arrow = ARROWS.get(direction, "")
    return f"{metric} ({unit}{', ' + arrow if arrow else ''})"


# ------------------------------------------------------------------------------------------ sections
def table2(df: pd.DataFrame, cells: Cells) -> Section:
    metrics = summary_metrics()
    rows = [[learner, dataset, preset, str(len(g))] + [cells(learner, dataset, preset, m) for m in metrics]
            for (learner, dataset, preset), g in df.groupby(["learner", "dataset", "preset"], sort=False)]
    return Section("table2", "Table 2: likelihood, latent information, intrinsic dimension and probes",
                   ["learner", "dataset", "preset", "seeds"] + [header(m) for m in metrics], rows, labels=4,
                   directions={header(m): metric_info(m)[1] for m in metrics})


def table1(df: pd.DataFrame, probe: str, cells: Cells) -> list[Section]:
    """One table per dataset and preset (the paper's layout: a column per learner), so that no column mixes
    runs of other data or another training length."""
    sections = []
    for (dataset, preset), part in df.groupby(["dataset", "preset"], sort=False):
        learners = list(dict.fromkeys(part["learner"]))
        rows = [["seeds"] + [str(int((part["learner"] == lr).sum())) for lr in learners]]
        for key, label in REP_TYPE_LABELS.items():
            col = probe if key == "mean" else f"{probe}.{key}"
            rows.append([label] + [cells(lr, dataset, preset, col) for lr in learners])
        sections.append(Section(f"table1.{probe}.{dataset}.{preset}",
                                f"Table 1: {probe.replace('_', ' ')} accuracy (%) by representation type, "
                                f"{dataset}, {preset}", [f"{probe} (%) by representation"] + learners, rows,
                                directions={lr: "neither" for lr in learners}, comparable=()))
    return sections


def _n_labels(column: str) -> int:
    """The number of labelled images of a label-efficiency column ('linear_probe.labels_100' -> 100)."""
    return int(column.rsplit("_", 1)[1])


_PROBE_ORDER = ("linear_probe", "nonlinear_probe", "knn_probe")


def _label_columns(df: pd.DataFrame) -> list[str]:
    """The label-efficiency columns probe by probe (linear, nonlinear, k-NN, then others by name), each by its
    number of labels: one order whatever the order of the columns (it came from a set, and changed between runs)."""
    def key(c):
        probe = c.split(".")[0]
        return (_PROBE_ORDER.index(probe) if probe in _PROBE_ORDER else len(_PROBE_ORDER), probe, _n_labels(c))
    return sorted({c for c in df.columns if ".labels_" in c and not c.endswith("_std")}, key=key)


def label_table(df: pd.DataFrame, cells: Cells) -> Section | None:
    cols = _label_columns(df)
    if not cols:
        return None
    rows = [[learner, dataset, preset, str(len(g))] + [cells(learner, dataset, preset, c) for c in cols]
            for (learner, dataset, preset), g in df.groupby(["learner", "dataset", "preset"], sort=False)]
    heads = [c.replace("_probe.labels_", " @ ") for c in cols]
    return Section("labels", "Label efficiency: probe accuracy (%) with n labelled training images",
                   ["learner", "dataset", "preset", "seeds"] + heads, rows, labels=4,
                   directions={h: "higher" for h in heads},
                   note="class-balanced labelled subsets chosen by probe seed, the same for every learner")


def classifier_table(df: pd.DataFrame, paper: list[dict] | None, cells: Cells) -> Section | None:
    if "classifier_accuracy" not in df or not any(isinstance(v, float) and not math.isnan(v)
                                                  for v in df["classifier_accuracy"]):
        return None
    rows = []
    for (learner, dataset, preset), g in df.groupby(["learner", "dataset", "preset"], sort=False):
        published = [p for p in paper or [] if p["metric"] == "classifier_accuracy" and p["learner"] ==
                     g["_display"].iloc[0] and p["dataset"] == PAPER_DATASET.get(dataset, dataset)]
        rows.append([learner, dataset, preset, str(len(g)),
                     cells(learner, dataset, preset, "classifier_accuracy"),
                     "; ".join(f"{p['value']:g} ({p['source']})" for p in published) or "—"])
    return Section("table6", "Table 6: semi-supervised test accuracy (%) of the learner's own classifier",
                   ["learner", "dataset", "preset", "seeds", "classifier_accuracy (%, ↑)", "paper"], rows,
                   labels=4, directions={"classifier_accuracy (%, ↑)": "higher"})


def compare_table(df: pd.DataFrame, pairs, cells: Cells) -> Section | None:
    """b - a for each pair and summary metric, for each probe with the fewest labels (where a representation
    is most likely to differ) and for the accuracy of learners' own classifiers (Table 6), with Welch's 95%
    interval across training seeds. Only values a table would show as a number are compared: a side whose seeds
    did not converge or were measured differently is named."""
    from .stats import welch
    if not pairs:
        return None
    labels = _label_columns(df)
    least = min(map(_n_labels, labels), default=None)
    fewest = [c for c in labels if _n_labels(c) == least]
    rows = []
    for a, b in pairs:
        for (dataset, preset), g in df.groupby(["dataset", "preset"], sort=False):
            for m in summary_metrics() + fewest + ["classifier_accuracy"]:
                sides = [cells.row(x, dataset, preset, m) for x in (a, b)]
                if None in sides or (m == "classifier_accuracy" and
                                     any(r["status"] == "not_applicable" for r in sides)):
                    continue  # a learner without a classifier has no Table 6 value to compare
                bad = [f"{x}: {STATUS_TEXT[r['status']]}" for x, r in zip((a, b), sides) if r["status"] != "ok"]
                if bad:
                    rows.append([f"{b} − {a}", dataset, preset, m, "—", Stat(NOT_MEASURED), "not compared (" +
                                 "; ".join(bad) + ")", "—"])
                    continue
                other = measured_otherwise(sides)
                if other:  # a difference of values measured two ways is the settings' as much as the learners'
                    rows.append([f"{b} − {a}", dataset, preset, m, "—", Stat(NOT_MEASURED),
                                 f"not compared ({a} / {b} measured with {other})", "—"])
                    continue
                va, vb = ([v for v in r["values"] if v is not None] for r in sides)
                d, digits = welch(va, vb), metric_info(m)[2]
                ci = "needs ≥ 2 seeds each" if d.low is None else f"[{d.low:+.{digits}f}, {d.high:+.{digits}f}]"
                rows.append([f"{b} − {a}", dataset, preset, m, f"{len(va)} / {len(vb)}",
                             Stat(f"{d.diff:+.{digits}f}", d.diff), ci,
                             "—" if d.excludes_zero is None else ("yes" if d.excludes_zero else "no")])
    return Section("compare", "Differences across training seeds (mean of b − mean of a, Welch's t, 95%)",
                   ["pair", "dataset", "preset", "metric", "seeds", "difference", "95% interval", "excludes 0"],
                   rows, labels=5) if rows else None


def measured_with_of(row: dict) -> dict:
    """A tidy row's battery settings and metric code version."""
    return {**(row["settings"] or {}), "version": row["metric_version"]}


def measured_otherwise(rows: list[dict]) -> str:
    """How tidy rows' values were measured where they differ ('knn_k 5 / 10'); '' where alike."""
    seen = [measured_with_of(r) for r in rows]
    return ", ".join(f"{k} {' / '.join(_shown(t.get(k)) for t in seen)}" for k in _differing(seen))


def _differing(seen: list[dict]) -> list[str]:
    return sorted({k for s in seen for k in s if len({_shown(t.get(k)) for t in seen}) > 1})


def settings_table(cells: Cells) -> Section | None:
    """Values that rows of one dataset and preset measured with different settings or metric code. A suite's
    report measures every row alike (other values are left out); runs gathered by tag need not be, and their
    rows sit side by side, so the table says where they differ."""
    groups: dict[tuple, dict[str, dict]] = {}
    for r in cells.rows.values():
        if r["status"] == "ok":
            groups.setdefault((r["entry"], r["dataset"], r["preset"]), {})[r["learner"]] = r
    rows = []
    for (entry, dataset, preset), by_learner in groups.items():
        seen = {lr: measured_with_of(r) for lr, r in by_learner.items()}
        keys = _differing(list(seen.values()))
        if keys:
            rows.append([entry, dataset, preset, "; ".join(
                f"{lr}: " + ", ".join(f"{k} {_shown(s.get(k))}" for k in keys) for lr, s in seen.items())])
    return Section("settings", "Measured with different settings (rows of one dataset and preset that a table "
                   "shows side by side)", ["metric", "dataset", "preset", "settings by learner"], rows,
                   labels=3) if rows else None


def versions_table(df: pd.DataFrame) -> Section:
    """Which code made the tables: each learner's model version and each metric's, as the records say (a record
    of another version is measured again, never reused, so two versions of one name mean runs from two stores)."""
    from ..runs.record import measured_with
    models: dict[str, set] = {}
    metrics: dict[str, set] = {}
    for learner, rec in zip(df["learner"], df["_record"]):
        models.setdefault(learner, set()).add(model_version(rec or {}))
        for name, settings in measured_with(rec or {}).items():
            metrics.setdefault(name, set()).add(settings.get("version", 1))
    show = lambda versions: ", ".join(map(str, sorted(versions)))
    rows = [["model", name, show(v)] for name, v in models.items()] + \
        [["metric", name, show(v)] for name, v in sorted(metrics.items())]
    return Section("versions", "Code versions that made these tables", ["code", "name", "version"], rows, labels=3)


def paper_table(df: pd.DataFrame, paper: list[dict], cells: Cells) -> Section:
    """Ours beside the published number for every (dataset, learner, metric) the paper file covers; our preset
    says when ours is a small-scale run beside a full-scale number."""
    rows = []
    for p in paper:
        ours = df[(df["dataset"].map(lambda d: PAPER_DATASET.get(d, d)) == p["dataset"]) &
                  (df["_display"] == p["learner"])]
        for (learner, dataset, preset), g in ours.groupby(["learner", "dataset", "preset"], sort=False):
            scale = (preset if preset == "paper" else f"{preset}-scale run") + \
                (f", on {dataset}" if dataset != p["dataset"] else "")
            published = f"{p['value']}" + (f" ± {p['std']}" if p.get("std") is not None else "")
            rows.append([learner, p["dataset"], header(p["metric"]), scale, cells(learner, dataset, preset, p["metric"]),
                         Stat(published, float(p["value"]), p.get("std")), p["source"]])
    return Section("paper", "Beside the paper's published numbers",
                   ["learner", "dataset", "metric", "our preset", "repbench", "paper", "source"], rows, labels=4,
                   note="" if rows else "(the paper file has no numbers for these learners and datasets)")


# ------------------------------------------------------------------------------------------ the report
def build(records: list[dict], title: str = "", paper: list[dict] | None = None, compare=(),
          figures_dir: Path | None = None, spectra_figure: Path | None = None) -> Report:
    if not records:
        raise RepbenchError("no finished runs match; run the suite first (`repbench suite FILE`)")
    df = pd.DataFrame(records)
    df["_display"] = df["learner"]  # the learner's own name, for the paper's numbers
    df["learner"] = configuration_names(df)
    named = [{**r, "learner": name} for r, name in zip(records, df["learner"])]
    cells = Cells(tidy_rows(named))  # every format shows the tidy rows' numbers
    sections = [table2(df, cells)]
    for probe in PROBES:
        if f"{probe}.sample_k1" in df:  # the representation types ran
            sections += table1(df, probe, cells)
    sections += [s for s in (label_table(df, cells), classifier_table(df, paper, cells),
                             compare_table(df, compare, cells), settings_table(cells)) if s]
    if paper is not None:
        sections.append(paper_table(df, paper, cells))
    if "_record" in df:
        sections.append(versions_table(df))
    report = Report(title, sections, records=named)
    from .figures import draw_figures
    report.figures = draw_figures(df, figures_dir, spectra_figure)
    return report


def configuration_names(df: pd.DataFrame) -> pd.Series:
    """The learner column, naming what tells configurations apart where a learner has several on one dataset
    and preset (`lpvae-h1 (epochs=1)` beside `lpvae-h1 (epochs=2)`): their runs are never averaged together."""
    names = df["learner"].copy()
    if "_config" not in df:
        return names
    configs = df["_config"].fillna("{}")
    for (learner, _, _), g in df.groupby(["learner", "dataset", "preset"], sort=False):
        parsed = {c: json.loads(c) for c in dict.fromkeys(configs[g.index])}
        if len(parsed) < 2:
            continue
        differ = sorted({k for p in parsed.values() for k in p
                         if len({json.dumps(q.get(k), sort_keys=True) for q in parsed.values()}) > 1})
        for c, p in parsed.items():
            label = ", ".join(f"{k.rsplit('.', 1)[-1]}={_shown(p.get(k))}" for k in differ)
            names[g.index[configs[g.index] == c]] = f"{learner} ({label})"
    return names


def _shown(value) -> str:
    return NOT_MEASURED if value is None else value if isinstance(value, str) else json.dumps(value)


def load_paper_numbers(path: Path | None = None) -> list[dict]:
    """Published numbers: a YAML list of {dataset, learner, metric, value, source}; errors name the file."""
    import yaml
    path = Path(path) if path else DEFAULT_PAPER
    try:
        rows = yaml.safe_load(path.read_text()) or []
    except OSError as exc:
        raise RepbenchError(f"cannot read paper numbers {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise RepbenchError(f"{path}: not UTF-8 text (byte {exc.start}); save the paper numbers as UTF-8 YAML") \
            from None
    except yaml.YAMLError as exc:
        raise RepbenchError(f"{path}: not valid YAML ({first_line(exc)})") from None
    if not isinstance(rows, list):
        raise RepbenchError(f"{path}: expected a list of entries (dataset, learner, metric, value, source)")
    for r in rows:
        if not isinstance(r, dict):
            raise RepbenchError(f"{path}: entry {r!r} is not a mapping")
        missing = {"dataset", "learner", "metric", "value", "source"} - set(r)
        if missing:
            raise RepbenchError(f"{path}: entry {r} lacks {', '.join(sorted(missing))}")
        for key in ("value", "std"):
            if key in r and (isinstance(r[key], bool) or not isinstance(r[key], (int, float))):
                raise RepbenchError(f"{path}: entry {r} has a {key} that is not a number")
    return rows

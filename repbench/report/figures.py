"""The report's figures from its runs: PCA spectra (the paper's Figure 5), linear probe against mutual information
per learner and training seed (sufficiency vs minimality in one picture), and training curves of the test loss and
mutual information per epoch (the paper's Figure 6 a-b).

As in the tables, runs are drawn together only within a learner x dataset x preset (x configuration) group, and a
group a figure cannot draw is named in its caption with the reason, never left out silently."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

GROUP = ["learner", "dataset", "preset"]


def label(learner: str, dataset: str, preset: str) -> str:
    return f"{learner} · {dataset} · {preset}"


def draw_figures(df: pd.DataFrame, folder: Path | None, spectra_path: Path | None) -> list[tuple[str, Path]]:
    """Draw into `folder` (all figures) and/or `spectra_path` (the spectra alone); return (caption, path)."""
    from ..measure import plots
    out = []
    spectra, ids, skipped = mean_spectra(df)
    targets = ([spectra_path] if spectra_path else []) + ([Path(folder) / "spectra.png"] if folder else [])
    for path in targets:
        if spectra:
            path.parent.mkdir(parents=True, exist_ok=True)
            out.append(("PCA spectra of the representations (mean over seeds; ID: the intrinsic dimension of "
                        "Table 2)" + not_drawn(skipped),
                        plots.spectrum_plot(spectra, path, id_threshold(df), ids=ids)))
    if folder is None:
        return out
    Path(folder).mkdir(parents=True, exist_ok=True)  # made above only where spectra were drawn
    points, skipped = probe_mi_points(df)
    if points:
        out.append(("Linear probe against mutual information, one point per learner and training seed" +
                    not_drawn(skipped),
                    plots.scatter_plot(points, Path(folder) / "probe_vs_mi.png", "mutual information (nats)",
                                       "linear probe (%)")))
    curves, skipped = training_curves(df)
    if curves:
        out.append(("Training curves: test loss (bits/dim only for a likelihood) and mutual information per epoch "
                    "(mean and range over seeds)" + not_drawn(skipped),
                    plots.curves_plot(curves, Path(folder) / "curves.png")))
    return out


def not_drawn(skipped: list[str]) -> str:
    return f"; not drawn: {'; '.join(skipped)}" if skipped else ""


def mean_spectra(df: pd.DataFrame) -> tuple[dict[str, list[float]], dict[str, str], list[str]]:
    """Each group's spectrum averaged over its seeds, the group's intrinsic dimension as Table 2 shows it, and
    the groups left out with why."""
    from ..metrics import metric_info
    from .stats import stat
    spectra, ids, skipped = {}, {}, []
    for key, g in df.groupby(GROUP, sort=False):
        runs = [np.asarray(s) for s in g.get("_spectrum", []) if isinstance(s, list) and len(s)]
        if not runs:
            skipped.append(f"{label(*key)} (no spectrum in its records)")
        elif len({len(r) for r in runs}) > 1:
            skipped.append(f"{label(*key)} (its seeds' spectra differ in length: "
                           f"{', '.join(str(len(r)) for r in runs)})")
        else:
            spectra[label(*key)] = np.mean(runs, axis=0).tolist()
            if "intrinsic_dim" in g:
                shown = stat(g["intrinsic_dim"], metric_info("intrinsic_dim")[2])
                if shown.mean is not None:
                    ids[label(*key)] = shown.text
    return spectra, ids, skipped


def id_threshold(df: pd.DataFrame) -> float | None:
    """The fraction of the largest eigenvalue that intrinsic_dim counted from, when every run used the same."""
    records = [r if isinstance(r, dict) else {} for r in df.get("_record", [None] * len(df))]
    found = {(r.get("measured_with") or {}).get("intrinsic_dim", {}).get("id_threshold", 0.01) for r in records}
    return found.pop() if len(found) == 1 else None


def probe_mi_points(df: pd.DataFrame) -> tuple[dict[str, list[tuple[float, float]]], list[str]]:
    """group -> (mutual information, linear probe) of each seed, and the groups with seeds left out with why."""
    if not {"mutual_info", "linear_probe"} <= set(df.columns):
        return {}, []
    points: dict[str, list[tuple[float, float]]] = {}
    skipped = []
    for key, g in df.groupby(GROUP, sort=False):
        xy = [(x, y) for x, y in zip(g["mutual_info"], g["linear_probe"])
              if isinstance(x, float) and isinstance(y, float) and np.isfinite([x, y]).all()]
        if xy:
            points[label(*key)] = xy
        if len(xy) < len(g):
            skipped.append(f"{label(*key)} ({len(g) - len(xy)} of {len(g)} seeds: mutual_info or linear_probe "
                           f"not measured, not applicable or not finite)")
    return points, skipped


def training_curves(df: pd.DataFrame) -> tuple[dict[str, dict], list[str]]:
    """group -> {quantity: [seeds, epochs], quantity + "_epochs": [...], "unit": the test loss's unit} for the
    quantities every seed logged at the same epochs (mutual information only every `curve_every` epochs), and
    the groups left out with why."""
    curves: dict[str, dict] = {}
    skipped: list[str] = []
    if "_history" not in df:
        return curves, skipped
    for key, g in df.groupby(GROUP, sort=False):
        per = {}
        for name in ("test_loss", "test_mutual_info"):
            runs = [[(h["epoch"], h[name]) for h in hist if name in h] for hist in g["_history"]
                    if isinstance(hist, list)]
            runs = [r for r in runs if r]
            if runs and len({tuple(e for e, _ in r) for r in runs}) == 1:
                per[name] = np.array([[v for _, v in r] for r in runs])
                per[name + "_epochs"] = np.array([e for e, _ in runs[0]])
            elif runs:
                skipped.append(f"{label(*key)} {name} (its seeds logged different epochs)")
        if per:
            per["unit"] = loss_unit(registered_name(g))
            curves[label(*key)] = per
        elif not any(s.startswith(label(*key)) for s in skipped):
            skipped.append(f"{label(*key)} (no training curve: not trained by epochs)")
    return curves, skipped


def registered_name(g: pd.DataFrame) -> str | None:
    """The learner's registered name (lpvae for lpvae-h2), from its record or its MLflow tags."""
    for rec in g.get("_record", []):
        rec = rec if isinstance(rec, dict) else {}
        name = rec.get("learner") or (rec.get("tags") or {}).get("learner")
        if name:
            return name
    return None


def loss_unit(learner: str | None) -> str:
    """The unit of a learner's training curves: bits/dim where its loss is a negative log-likelihood (declared
    by the learner: `loss_is_nll`), else its own objective in nats per image."""
    from ..learners import LEARNERS
    from ..errors import RepbenchError
    if learner is None:
        return "unit unknown"
    try:
        cls = LEARNERS.get(learner)
    except RepbenchError:
        return "unit unknown"
    return "bits/dim" if getattr(cls, "loss_is_nll", False) else "nats per image, the learner's objective"

"""The report's figures from its runs: PCA spectra (the paper's Figure 5), linear probe against mutual information
per learner and training seed (sufficiency vs minimality in one picture), and training curves of test bpd and
mutual information per epoch (the paper's Figure 6 a-b)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def draw_figures(df: pd.DataFrame, folder: Path | None, spectra_path: Path | None) -> list[tuple[str, Path]]:
    """Draw into `folder` (all figures) and/or `spectra_path` (the spectra alone); return (caption, path)."""
    from ..measure import plots
    out = []
    spectra = mean_spectra(df)
    targets = ([spectra_path] if spectra_path else []) + ([Path(folder) / "spectra.png"] if folder else [])
    for path in targets:
        if spectra:
            path.parent.mkdir(parents=True, exist_ok=True)
            out.append(("PCA spectra of the representations (mean over seeds)", plots.spectrum_plot(spectra, path)))
    if folder is None:
        return out
    points = probe_mi_points(df)
    if points:
        out.append(("Linear probe against mutual information, one point per learner and training seed",
                    plots.scatter_plot(points, Path(folder) / "probe_vs_mi.png", "mutual information (nats)",
                                       "linear probe (%)")))
    curves = training_curves(df)
    if curves:
        out.append(("Training curves: test bpd and mutual information per epoch (mean and range over seeds)",
                    plots.curves_plot(curves, Path(folder) / "curves.png")))
    return out


def mean_spectra(df: pd.DataFrame) -> dict[str, list[float]]:
    spectra = {}
    for learner, g in df.groupby("learner", sort=False):
        runs = [np.asarray(s) for s in g.get("_spectrum", []) if len(s)]
        if runs and len({len(r) for r in runs}) == 1:
            spectra[learner] = np.mean(runs, axis=0).tolist()
    return spectra


def probe_mi_points(df: pd.DataFrame) -> dict[str, list[tuple[float, float]]]:
    if not {"mutual_info", "linear_probe"} <= set(df.columns):
        return {}
    points: dict[str, list[tuple[float, float]]] = {}
    for _, r in df.iterrows():
        x, y = r["mutual_info"], r["linear_probe"]
        if isinstance(x, float) and isinstance(y, float) and np.isfinite([x, y]).all():
            points.setdefault(f"{r['learner']} ({r['dataset']})", []).append((x, y))
    return points


def training_curves(df: pd.DataFrame) -> dict[str, dict[str, np.ndarray]]:
    """learner -> {quantity: [seeds, epochs]} for the quantities every seed logged at the same epochs."""
    curves: dict[str, dict[str, np.ndarray]] = {}
    if "_history" not in df:
        return curves
    for (learner, dataset), g in df.groupby(["learner", "dataset"], sort=False):
        per = {}
        for name in ("test_loss", "test_mutual_info"):
            runs = [[(h["epoch"], h[name]) for h in hist if name in h] for hist in g["_history"]]
            runs = [r for r in runs if r]
            if runs and len({tuple(e for e, _ in r) for r in runs}) == 1:
                per[name] = np.array([[v for _, v in r] for r in runs])
                per["epochs"] = np.array([e for e, _ in runs[0]])
        if per:
            curves[f"{learner} ({dataset})"] = per
    return curves

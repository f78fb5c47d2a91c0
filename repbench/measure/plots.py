"""Figures a person would rather look at than read: PCA spectrum, probe accuracy by type, sample grids."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def spectrum_plot(spectra: dict[str, list[float]], path: Path, threshold: float | None = 0.01,
                  ids: dict[str, str] | None = None) -> Path:
    """Eigenvalues of the representations' covariance, each normalised by its largest (the paper's Figure 5).
    The legend gives each curve's intrinsic dimension: `ids` where given (a report's table value), else counted
    from the curve at `threshold`; the threshold is drawn as a line (None: none, the runs used different ones)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for label, values in spectra.items():
        v = np.asarray(values, dtype=float)
        if len(v) and v[0] > 0:
            dim = ids.get(label) if ids is not None else (v >= (threshold or 0.01) * v[0]).sum()
            ax.plot(np.arange(1, len(v) + 1), v / v[0], marker="o", ms=3,
                    label=label + (f" (ID {dim})" if dim is not None else ""))
    if threshold is not None:
        ax.axhline(threshold, color="grey", ls="--", lw=1, label=f"{threshold:.0%} of largest")
    ax.set(yscale="log", xlabel="component", ylabel="eigenvalue / largest", title="PCA spectrum of representations")
    ax.legend(fontsize=8 if len(spectra) < 6 else 6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def probe_plot(probes: dict[str, dict[str, list[float]]], path: Path, title: str = "", chance: float | None = None
               ) -> Path:
    """Probe accuracy (%) by representation type, mean and std over probe seeds, on an axis from 0 to 100 with
    the chance level marked; tick labels as in the tables."""
    from ..metrics.probes import REP_TYPE_LABELS
    types = [t for t in REP_TYPE_LABELS if any(t in bt for bt in probes.values())]
    fig, ax = plt.subplots(figsize=(6.2, 3.8))
    width = 0.8 / len(probes)
    for i, (probe, by_type) in enumerate(probes.items()):
        means = [np.mean(by_type[t]) if t in by_type else np.nan for t in types]
        stds = [np.std(by_type[t]) if t in by_type else 0.0 for t in types]
        bars = ax.bar(np.arange(len(types)) + i * width, means, width, yerr=stds, capsize=3,
                      label=probe.replace("_", " "))
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
    ax.set_xticks(np.arange(len(types)) + width * (len(probes) - 1) / 2, [REP_TYPE_LABELS[t] for t in types])
    if chance is not None:
        ax.axhline(chance, color="grey", ls="--", lw=1, label=f"chance ({chance:.0f}%)")
    ax.set(ylabel="test accuracy (%)", ylim=(0, 109), title=title or "probe accuracy by representation")
    # the legend sits above the axes, where no bar can be
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.08), ncol=3, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def conditional_grid(test: torch.Tensor, samples: torch.Tensor, prior: torch.Tensor | None, path: Path,
                     title: str) -> Path:
    """The paper's Figure 8 layout: each row a test image (boxed), then samples of p(x|z) that share that image's z;
    below, samples with z from the prior. uint8 images; samples [n, k, C, H, W]."""
    from torchvision.utils import make_grid
    n, k = samples.shape[:2]
    rows = torch.cat([test[:, None], samples], 1).flatten(0, 1)
    blocks = [("each row: a test image, then samples from p(x | z) with z its posterior mean", rows, k + 1)]
    if prior is not None and len(prior):
        blocks.append(("samples with z from the prior N(0, I)", prior, k + 1))
    fig, axes = plt.subplots(len(blocks), 1, figsize=((k + 1) * 0.75, 0.75 * (n + 1) + 0.9 * len(blocks)),
                             squeeze=False, gridspec_kw={"height_ratios": [math.ceil(len(b[1]) / b[2]) + 0.4
                                                                           for b in blocks]})
    for ax, (label, imgs, per_row) in zip(axes[:, 0], blocks):
        grid = make_grid(imgs.float() / 255, nrow=per_row, padding=2, pad_value=1.0)
        ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_title(label, fontsize=8, loc="left")
        ax.axis("off")
    h, w = test.shape[2:]
    for i in range(n):  # outline the test images so no one mistakes them for samples
        axes[0, 0].add_patch(plt.Rectangle((1, 1 + i * (h + 2)), w + 1, h + 1, fill=False, ec="tab:red", lw=1.2))
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def image_grid(rows: list[tuple[str, torch.Tensor]], path: Path, n: int, title: str) -> Path:
    """Labelled rows of uint8 images [k, C, H, W], n to a row."""
    from torchvision.utils import make_grid
    fig, axes = plt.subplots(len(rows), 1, figsize=(n * 0.8, 0.9 * (len(rows) + 1)), squeeze=False,
                             gridspec_kw={"height_ratios": [math.ceil(len(r[1]) / n) for r in rows]})
    for ax, (label, imgs) in zip(axes[:, 0], rows):
        grid = make_grid(imgs.float() / 255, nrow=n, padding=1, pad_value=1.0)
        ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_title(label, fontsize=9, loc="left")
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def scatter_plot(points: dict[str, list[tuple[float, float]]], path: Path, xlabel: str, ylabel: str) -> Path:
    """One marker per run, one colour per group."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label, xy in points.items():
        xs, ys = zip(*xy)
        ax.scatter(xs, ys, label=f"{label} ({len(xy)} seed{'s' if len(xy) > 1 else ''})", s=28, alpha=0.85)
    ax.set(xlabel=xlabel, ylabel=ylabel, title="probe accuracy against latent information")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def curves_plot(curves: dict[str, dict], path: Path) -> Path:
    """Test loss and mutual information per epoch: the mean over seeds, and their range as a band. The loss has
    a panel per unit (each curve's `unit`: bits/dim for a likelihood, else the learner's own objective), so no
    axis claims a unit that one of its curves is not in."""
    units = list(dict.fromkeys(per.get("unit", "unit unknown") for per in curves.values() if "test_loss" in per))
    panels = [("test_loss", unit, f"test loss ({unit})") for unit in units]
    if any("test_mutual_info" in per for per in curves.values()):
        panels.append(("test_mutual_info", None, "mutual information (nats)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (name, unit, label) in zip(axes[0], panels):
        for learner, per in curves.items():
            if name not in per or (unit is not None and per.get("unit", "unit unknown") != unit):
                continue
            values, epochs = per[name], per[name + "_epochs"]
            line, = ax.plot(epochs, values.mean(0), label=learner, lw=1.5, marker="o", ms=3)
            if len(values) > 1:
                ax.fill_between(epochs, values.min(0), values.max(0), color=line.get_color(), alpha=0.2)
        ax.set(xlabel="epoch", ylabel=label)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        low, high = ax.get_xlim()
        if high - low < 2:  # one epoch (a smoke run): whole epochs around it, not fractions of one
            ax.set_xlim(round((low + high) / 2) - 1, round((low + high) / 2) + 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

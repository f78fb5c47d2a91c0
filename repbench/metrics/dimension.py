"""Intrinsic dimension of representations from their PCA spectrum (the paper's Figure 5)."""
from __future__ import annotations

import numpy as np
import torch

from . import Values, register_metric


def pca_spectrum(reps: torch.Tensor | np.ndarray) -> np.ndarray:
    """Eigenvalues of the covariance of the rows of `reps` [N, d], largest first (float64)."""
    x = torch.as_tensor(np.asarray(reps), dtype=torch.float64)
    x = x - x.mean(0, keepdim=True)
    cov = x.T @ x / max(len(x) - 1, 1)
    return torch.linalg.eigvalsh(cov).flip(0).clamp(min=0).numpy()


def intrinsic_dim(reps: torch.Tensor | np.ndarray, threshold: float = 0.01) -> int:
    """How many eigenvalues are at least `threshold` times the largest; 0 for constant representations."""
    spectrum = pca_spectrum(reps)
    if spectrum[0] <= 0:
        return 0
    return int((spectrum >= threshold * spectrum[0]).sum())


@register_metric("intrinsic_dim", unit="dimensions", direction="lower", digits=1, summary=2,
                 settings=("id_threshold",), version=1,
                 description="number of PCA eigenvalues of the test representations (posterior means) at least "
                             "id_threshold (default 1%) of the largest")
def _intrinsic_dim(inputs, cfg, generator):
    mean = inputs.reps["test"]["mean"]
    return Values({"intrinsic_dim": intrinsic_dim(mean, cfg.id_threshold)}, {"spectrum": pca_spectrum(mean).tolist()})

"""The metric battery: pure functions of tensors, each registered with its unit and direction."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..registry import Registry


@dataclass(frozen=True)
class MetricInfo:
    name: str
    unit: str
    higher_is_better: bool
    description: str


METRICS: Registry[MetricInfo] = Registry("metric")


def describe(name: str, unit: str, higher_is_better: bool, description: str) -> MetricInfo:
    return METRICS.register(name, MetricInfo(name, unit, higher_is_better, description))


from .information import cond_entropy, gaussian_kl, kl_to_standard_normal, mutual_info  # noqa: E402
from .likelihood import (bits_per_dim, importance_weighted_bits_per_dim, nats_to_bits_per_dim,  # noqa: E402
                         sampled_elbo_bits_per_dim)
from .dimension import intrinsic_dim, pca_spectrum  # noqa: E402
from .probes import linear_probe, nonlinear_probe  # noqa: E402

__all__ = ["METRICS", "MetricInfo", "bits_per_dim", "nats_to_bits_per_dim", "mutual_info", "cond_entropy",
           "gaussian_kl", "kl_to_standard_normal", "importance_weighted_bits_per_dim", "sampled_elbo_bits_per_dim",
           "intrinsic_dim", "pca_spectrum", "linear_probe", "nonlinear_probe"]

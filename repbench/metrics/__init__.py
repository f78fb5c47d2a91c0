"""The metric registry: every metric is registered once, with its unit, direction, needs and settings.

A metric module holds pure functions of tensors (`mutual_info(mean, std)`, `linear_probe(...)`, ...) and, beside
them, the battery entry that applies them to a learner's outputs:

    @register_metric("mutual_info", unit="nats", direction="neither", needs=("posterior",), digits=2, version=1,
                     description="mean over test images of KL(q(z|x) || N(0, I))")
    def _mutual_info(inputs, cfg, generator):
        return {"mutual_info": mutual_info(inputs.reps["test"]["mean"], inputs.reps["test"]["std"])}

`inputs` gives what the entry declared it needs (`inputs.reps`, `inputs.likelihood(k, generator)`, the labels in
`inputs.data`), `cfg` is the battery's settings, `generator` the only source of randomness. The battery runs the
chosen entries in a loop; reports, the CLI and tracking read names, units and directions from here. `version` is
the version of the entry's code: raise it whenever a change can move its values, so that records the old code
measured are measured again rather than reused.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..registry import Registry
from ..errors import RepbenchError

DIRECTIONS = ("higher", "lower", "neither")
NEEDS = ("representations", "posterior", "likelihood", "labels", "classifier")
ARROWS = {"higher": "↑", "lower": "↓", "neither": ""}


@dataclass
class Values:
    """What a metric entry measured: named values (None: does not apply) and details for figures."""
    metrics: dict[str, float | None]
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    direction: str                      # "higher" / "lower" is better, or "neither"
    description: str
    needs: tuple[str, ...] = ("representations",)
    settings: tuple[str, ...] = ()      # the battery settings (BatteryConfig fields) its values depend on
    outputs: tuple[str, ...] = ()       # names it writes besides its own (e.g. `linear_probe_std`)
    output_pattern: str | None = None   # a regular expression for names that depend on its settings
    digits: int = 1                     # decimals in tables
    summary: int | None = None          # column of the summary table (the paper's Table 2), if any
    default: bool = True                # run when no metric list is given
    compute: Callable[..., Any] | None = None   # (inputs, cfg, generator) -> dict or Values; None: a curve
    settings_of: Callable[[Any], dict] | None = None   # overrides reading `settings` off the config
    version: int = 1                    # of its code; a record measured with another version is measured again

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name,) + self.outputs

    def owns(self, output: str) -> bool:
        import re
        return output in self.names or bool(self.output_pattern and re.fullmatch(self.output_pattern, output))

    def resolved_settings(self, cfg) -> dict:
        """The settings and code version that values measured now with `cfg` carry (what decides whether a
        record is reusable)."""
        settings = (self.settings_of(cfg) if self.settings_of is not None
                    else {s: getattr(cfg, s) for s in self.settings})
        return {**settings, "version": self.version}


METRICS: Registry[Metric] = Registry("metric")


def register_metric(name: str, *, unit: str, direction: str, description: str, version: int, **fields):
    """Register a battery metric; used as a decorator on its entry function (or with compute=None for a
    quantity logged during training, such as `train_loss`). `version` is its code's (see the module's doc)."""
    if direction not in DIRECTIONS:
        raise RepbenchError(f"metric '{name}': direction must be one of {DIRECTIONS}, got '{direction}'")
    bad = set(fields.get("needs", ())) - set(NEEDS)
    if bad:
        raise RepbenchError(f"metric '{name}': unknown needs {sorted(bad)}; valid: {', '.join(NEEDS)}")

    def deco(fn):
        METRICS.register(name, Metric(name, unit, direction, description, compute=fn, version=version, **fields))
        return fn
    return deco


def register_curve(name: str, *, unit: str, direction: str, description: str, digits: int = 3) -> None:
    """A per-epoch training quantity: it has a unit and a direction, but the battery does not compute it."""
    register_metric(name, unit=unit, direction=direction, description=description, digits=digits,
                    default=False, version=1)(None)


def battery_metrics() -> list[str]:
    """Names a battery can run (in registration order, which is the order they run and print in)."""
    return [n for n, m in _ordered() if m.compute is not None]


def default_metrics() -> tuple[str, ...]:
    return tuple(n for n, m in _ordered() if m.compute is not None and m.default)


def summary_metrics() -> list[str]:
    """The summary table's columns, in order (the paper's Table 2)."""
    return [n for n, m in sorted(((n, m) for n, m in _ordered() if m.summary is not None),
                                 key=lambda item: item[1].summary)]


def _ordered() -> list[tuple[str, Metric]]:
    return METRICS.in_order()


def entry_of(output: str) -> Metric | None:
    """The registered metric that writes a value name: `linear_probe.sample_k1` and `linear_probe_std` belong
    to their probe's entry, `cond_entropy` to its own."""
    for _, m in _ordered():
        if m.owns(output):
            return m
    base = output.split(".")[0].removesuffix("_std")
    return METRICS.get(base) if base in METRICS else None


def metric_info(output: str) -> tuple[str, str, int]:
    """(unit, direction, digits) of any value name a run records. A spread over probe seeds (`_std`) has the
    unit of its metric and no direction."""
    base = output.split(".")[0].removesuffix("_std")
    info = METRICS.get(base) if base in METRICS else entry_of(output)
    if info is None:
        return "", "", 3
    return info.unit, "neither" if output.endswith("_std") else info.direction, info.digits


from .likelihood import (bits_per_dim, importance_weighted_bits_per_dim, nats_to_bits_per_dim,  # noqa: E402
                         sampled_elbo_bits_per_dim)
from .information import cond_entropy, gaussian_kl, kl_to_standard_normal, mutual_info  # noqa: E402
from .dimension import intrinsic_dim, pca_spectrum  # noqa: E402
from .probes import (LINEAR_METHODS, KNN_DISTANCES, PROBE_PROTOCOLS, REP_TYPES, knn_probe, linear_probe,  # noqa: E402
                     nonlinear_probe)
from .classifier import classifier_accuracy  # noqa: E402

__all__ = ["METRICS", "Metric", "Values", "register_metric", "register_curve", "metric_info", "battery_metrics",
           "default_metrics", "summary_metrics", "entry_of", "bits_per_dim", "nats_to_bits_per_dim", "mutual_info",
           "cond_entropy", "gaussian_kl", "kl_to_standard_normal", "importance_weighted_bits_per_dim",
           "sampled_elbo_bits_per_dim", "intrinsic_dim", "pca_spectrum", "linear_probe", "nonlinear_probe",
           "knn_probe", "LINEAR_METHODS", "KNN_DISTANCES", "PROBE_PROTOCOLS", "REP_TYPES", "classifier_accuracy"]

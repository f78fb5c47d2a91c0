"""Frozen configuration dataclasses, presets, and strict overrides (unknown keys are errors)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, TypeVar

from .registry import RepbenchError

C = TypeVar("C")

PRESETS = ("smoke", "quick", "medium", "paper")
PRESET_HELP = {
    "smoke": "seconds; a sliver of data and a narrow model, for tests and CI",
    "quick": "the CPU default: one learner on mnist5k in a few minutes on 2 cores",
    "medium": "full training data, the quick widths, about an hour per learner on 2 CPU cores",
    "paper": "the paper's exact widths and epochs; meant for a GPU",
}


@dataclass(frozen=True)
class TrainConfig:
    """The one training loop's settings (Adam, plain single-sample ELBO, no KL annealing)."""
    epochs: int
    batch_size: int = 100
    lr: float = 3e-4
    eval_batch_size: int = 500
    train_limit: int | None = None   # use only the first N training images of the fixed split
    test_limit: int | None = None
    curve_every: int = 1             # epochs between the learner's extra curve points (e.g. mutual information)


# Settings that change what is measured during training, never the trained weights: not part of a run's key.
EVALUATION_ONLY = ("eval_batch_size", "curve_every")

TRAIN_PRESETS = {
    "smoke": TrainConfig(epochs=1, batch_size=50, train_limit=300, test_limit=100),
    "quick": TrainConfig(epochs=10, batch_size=100, train_limit=5000, test_limit=1000),
    "medium": TrainConfig(epochs=20, batch_size=100),
    "paper": TrainConfig(epochs=100, batch_size=100, curve_every=5),
}


def check_preset(preset: str) -> str:
    if preset not in PRESETS:
        raise RepbenchError(f"unknown preset '{preset}'; available: {', '.join(PRESETS)}")
    return preset


def field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def override(cfg: C, updates: Mapping[str, Any], what: str = "config") -> C:
    """`dataclasses.replace` that refuses unknown keys and checks basic types."""
    names = {f.name: f for f in dataclasses.fields(cfg)}
    bad = sorted(set(updates) - set(names))
    if bad:
        raise RepbenchError(f"unknown {what} key {', '.join(map(repr, bad))}; valid keys: {', '.join(names)}")
    clean = {key: _coerce(key, value, getattr(cfg, key), what) for key, value in updates.items()}
    return dataclasses.replace(cfg, **clean)


def _coerce(key: str, value: Any, current: Any, what: str) -> Any:
    if value is None or current is None or isinstance(value, type(current)) and not isinstance(value, bool):
        return value
    try:
        if isinstance(current, bool):
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
                return value.lower() in ("true", "1")
            return bool(int(value))
        if isinstance(current, int):
            if float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if isinstance(current, float):
            return float(value)
        if isinstance(current, tuple):
            return tuple(value)
    except (TypeError, ValueError):
        raise RepbenchError(f"{what} key '{key}' expects {type(current).__name__}, got {value!r}") from None
    return value

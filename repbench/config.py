"""Frozen configuration dataclasses, presets, and strict overrides (unknown keys and bad values are errors).

A field may carry bounds in its metadata (`bounded(2, min=0)`), so every config checks its own values where it is
built, before any work starts: `-o epochs=-1` or `-o width=0` are refused when the run is set up.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, TypeVar

from .errors import RepbenchError

C = TypeVar("C")

PRESETS = ("smoke", "quick", "medium", "paper")
PRESET_HELP = {
    "smoke": "seconds; a sliver of data and a narrow model, for tests and CI",
    "quick": "the CPU default: one learner on mnist5k in 4-12 min on 2 idle cores, 15-46 min on 2 busy ones",
    "medium": "full training data, the quick widths, 20 epochs: hours per learner on 2 CPU cores",
    "paper": "the paper's model (layer for layer the official code's) and protocol (100 epochs as its text; "
             "SVC probe, 100-epoch MLP probe with dropout 0.1); meant for a GPU",
}


# Images per evaluation call when none is set. On a CPU a small batch keeps each activation in cache: a quick
# lpvae h=2's likelihood pass ran 2.2x faster at 50 images per call than at 500 on 2 idle cores, 25 no slower
# (results/speed.md); a GPU wants many. The batch size changes no value, only the time.
CPU_EVAL_BATCH, GPU_EVAL_BATCH = 25, 500


def eval_batch(size: int | None, device) -> int:
    """Images per evaluation call: `size`, or when it is None the default for `device` (a torch.device or name)."""
    if size is not None:
        return size
    return CPU_EVAL_BATCH if str(device).split(":")[0] == "cpu" else GPU_EVAL_BATCH


def bounded(default, *, min: float | None = None, above: float | None = None, odd: bool = False):
    """A dataclass field with bounds: `min` inclusive, `above` exclusive, `odd` for kernel sizes."""
    return dataclasses.field(default=default, metadata={"min": min, "above": above, "odd": odd})


def check_fields(cfg) -> None:
    """Check every bounded field of a config built directly (overrides are checked as they are applied)."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if "min" in f.metadata and value is not None:  # a bounded field (bounded() sets min, None or not)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise RepbenchError(f"{f.name} must be {_describe(f.default or 0, f.metadata)}, got {value!r}")
            _check_bounds(f.name, value, f.metadata)


def _describe(current: Any, meta: Mapping) -> str:
    kind = "an integer" if isinstance(current, int) and not isinstance(current, bool) else "a number"
    if meta.get("odd"):
        kind = "an odd integer"
    if meta.get("min") is not None:
        return f"{kind} >= {meta['min']:g}"
    if meta.get("above") is not None:
        return f"{kind} > {meta['above']:g}"
    return kind


def _check_bounds(key: str, value: Any, meta: Mapping) -> None:
    if value is None or isinstance(value, (bool, str, tuple)) or not meta:
        return
    low, above = meta.get("min"), meta.get("above")
    if (not math.isfinite(value) or (low is not None and value < low) or (above is not None and value <= above)
            or (meta.get("odd") and value % 2 == 0)):
        raise RepbenchError(f"{key} must be {_describe(value, meta)}, got {value!r}")


@dataclass(frozen=True)
class TrainConfig:
    """The one training loop's settings (Adam, plain single-sample ELBO, no KL annealing)."""
    epochs: int = bounded(10, min=1)
    batch_size: int = bounded(100, min=2)        # BatchNorm needs two images
    lr: float = bounded(3e-4, above=0)
    eval_batch_size: int | None = bounded(None, min=1)  # None: eval_batch(None, device)
    train_limit: int | None = bounded(None, min=2)   # use only the first N training images of the fixed split
    test_limit: int | None = bounded(None, min=1)
    curve_every: int = bounded(1, min=0)         # epochs between the learner's extra curve points; 0: never

    def __post_init__(self):
        check_fields(self)


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
    """`dataclasses.replace` that refuses unknown keys, coerces compatible types and checks bounds."""
    if not isinstance(updates, Mapping):
        raise RepbenchError(f"{what} options must be a mapping of KEY: VALUE, got {type(updates).__name__}")
    names = {f.name: f for f in dataclasses.fields(cfg)}
    bad = sorted(set(updates) - set(names))
    if bad:
        raise RepbenchError(f"unknown {what} key {', '.join(map(repr, bad))}; valid keys: {', '.join(names)}")
    clean = {}
    for key, value in updates.items():
        clean[key] = _coerce(key, value, getattr(cfg, key), what, names[key].metadata)
        _check_bounds(key, clean[key], names[key].metadata)
    return dataclasses.replace(cfg, **clean)


def _coerce(key: str, value: Any, current: Any, what: str, meta: Mapping | None = None) -> Any:
    meta = meta or {}
    hint = f" ({key} must be {_describe(current if current is not None else 0, meta)})" \
        if meta.get("min") is not None or meta.get("above") is not None else ""
    if value is None:
        return value
    if current is None:  # an optional limit: an integer or None
        current = 0
    try:
        if isinstance(current, bool):
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            raise ValueError
        if isinstance(value, bool):  # True is an int to Python, never a count or a rate to us
            raise ValueError
        if isinstance(current, int):
            if not isinstance(value, (int, float)) or float(value) != int(value):
                raise ValueError
            return int(value)
        if isinstance(current, float):
            return float(value)  # strings too: YAML reads 1e-3 as a string
        if isinstance(current, tuple):
            return tuple(value)
    except (TypeError, ValueError, OverflowError):
        raise RepbenchError(f"{what} key '{key}' expects {type(current).__name__}, got {value!r}{hint}") from None
    return value

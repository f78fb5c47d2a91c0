"""The learner contract and the learner registry.

A learner follows the scikit-learn contract: the constructor only stores and checks options, `fit` trains and
returns self. `represent(x, kind)` maps uint8 images [N, C, H, W] to representations [N, d]. Learners are found by
name in one registry that the entry-point group `repbench.learners` also feeds, so another package can add one.
"""
from __future__ import annotations

import abc
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import torch

from .config import EVALUATION_ONLY, TRAIN_PRESETS, TrainConfig, check_preset, field_names, override
from .registry import Registry, RepbenchError, check_options
from .train import load_checkpoint, save_checkpoint, train

LEARNERS: Registry[type["Learner"]] = Registry("learner", entry_point_group="repbench.learners")
REPRESENTATION_KINDS = ("mean", "sample", "embedding")


class Learner(abc.ABC):
    """What the harness needs of any representation learner."""
    name: ClassVar[str] = "?"
    kinds: ClassVar[tuple[str, ...]] = ("mean",)   # representation kinds this learner supports

    @abc.abstractmethod
    def fit(self, train_x: torch.Tensor, test_x: torch.Tensor | None = None, **kw) -> "Learner": ...

    @abc.abstractmethod
    def represent(self, x: torch.Tensor, kind: str = "mean") -> torch.Tensor: ...

    @abc.abstractmethod
    def save(self, path: str | Path) -> None: ...

    @abc.abstractmethod
    def load(self, path: str | Path) -> "Learner": ...

    @property
    def display_name(self) -> str:
        """How tables and run names show this learner (lpvae says its horizon: lpvae-h2)."""
        return self.name

    def check_kind(self, kind: str) -> None:
        if kind not in self.kinds:
            raise RepbenchError(f"learner '{self.name}' gives representation kinds {', '.join(self.kinds)}; "
                                f"'{kind}' is not one of them")


class TorchLearner(Learner):
    """Machinery shared by learners that are one torch module trained with the one training loop.

    Subclasses set `config_class` and `presets` (preset name -> model config) and implement `build_module`
    and `loss` (mean nats per image of a uint8 batch). Options are the model config's fields plus the
    training config's (epochs, lr, batch_size, ...) plus any in `extra_options`."""
    config_class: ClassVar[type]
    presets: ClassVar[dict[str, Any]]
    extra_options: ClassVar[dict[str, Any]] = {}

    def __init__(self, preset: str = "quick", image_shape: tuple[int, int, int] = (1, 28, 28), seed: int = 0,
                 device: str | torch.device = "cpu", **options):
        self.preset = check_preset(preset)
        self.image_shape = tuple(int(s) for s in image_shape)
        self.seed = int(seed)
        self.device = torch.device(device)
        self.options = dict(options)
        model_keys, train_keys = field_names(self.config_class), field_names(TrainConfig)
        check_options("learner", self.name, options, model_keys + train_keys + list(self.extra_options))
        model_options = {k: v for k, v in options.items() if k in model_keys}
        train_options = {k: v for k, v in options.items() if k in train_keys}
        self.config = override(self.preset_config(preset), model_options, f"{self.name} model")
        self.train_config = override(self.train_preset(preset), train_options, "training")
        self.validate()
        self._module: torch.nn.Module | None = None
        self.history: list[dict] = []

    # ------------------------------------------------------------------------------------ subclass hooks
    def validate(self) -> None:
        """Check option values (raise RepbenchError); called by the constructor."""

    def preset_config(self, preset: str):
        """The model config of a preset; `self.image_shape` is set, so it may depend on the data."""
        if preset not in self.presets:
            raise RepbenchError(f"learner '{self.name}' has no preset '{preset}'; its presets: "
                                f"{', '.join(self.presets)}")
        return self.presets[preset]

    def train_preset(self, preset: str) -> TrainConfig:
        return TRAIN_PRESETS[preset]

    def autocast_dtype(self) -> torch.dtype | None:
        """Mixed-precision dtype for the training and evaluation losses, or None for full precision."""
        return None

    def training_loss(self):
        """`loss`, under autocast where `autocast_dtype` asks for it."""
        dtype = self.autocast_dtype()
        if dtype is None:
            return self.loss

        def loss(module, x_uint8):
            with torch.autocast(self.device.type, dtype=dtype):
                return self.loss(module, x_uint8)
        return loss

    def curve_metrics(self, module: torch.nn.Module, x_uint8: torch.Tensor) -> dict[str, float]:
        """Extra per-epoch values of a test batch for the training curves, every `curve_every` epochs; the
        loop averages them over batches. None by default."""
        return {}

    @abc.abstractmethod
    def build_module(self) -> torch.nn.Module: ...

    @abc.abstractmethod
    def loss(self, module: torch.nn.Module, x_uint8: torch.Tensor) -> torch.Tensor: ...

    # ------------------------------------------------------------------------------------ machinery
    @property
    def module(self) -> torch.nn.Module:
        if self._module is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                self._module = self.build_module()
            self._module.to(self.device)
        return self._module

    @property
    def num_dims(self) -> int:
        c, h, w = self.image_shape
        return c * h * w

    def key_settings(self) -> dict[str, Any]:
        """The resolved settings that determine the trained weights, flat and by name: the model config, the
        training config less its evaluation-only fields, and any extra options at their resolved values.
        A run's configuration key hashes these, so it does not depend on how an option was spelled."""
        train = {k: v for k, v in asdict(self.train_config).items() if k not in EVALUATION_ONLY}
        extra = {k: self.options.get(k, default) for k, default in self.extra_options.items()}
        return {**asdict(self.config), **train, **extra}

    def params(self) -> dict[str, Any]:
        """Everything that defines this learner, for tracking and for rebuilding it from a checkpoint."""
        return {"learner": self.name, "preset": self.preset, "image_shape": list(self.image_shape),
                "seed": self.seed, "options": dict(self.options), "model_config": asdict(self.config),
                "train_config": asdict(self.train_config)}

    def fit(self, train_x: torch.Tensor, test_x: torch.Tensor | None = None, *, checkpoint: str | Path | None = None,
            resume: bool = False, on_epoch=None, progress: bool = True, augment=None) -> "TorchLearner":
        """Train on uint8 images; `augment(batch, generator)` transforms training batches only."""
        if tuple(train_x.shape[1:]) != self.image_shape:
            raise RepbenchError(f"learner built for images {self.image_shape}, got {tuple(train_x.shape[1:])}")
        self.history = train(self.module, self.training_loss(), train_x.to(self.device), cfg=self.train_config,
                             seed=self.seed, checkpoint=Path(checkpoint) if checkpoint else None, resume=resume,
                             test_x=None if test_x is None else test_x.to(self.device), meta=self._meta(),
                             on_epoch=on_epoch, progress=progress, nats_per_unit=self.num_dims * math.log(2),
                             augment=augment, curves=self.curve_metrics)
        self.module.eval()
        return self

    def _meta(self) -> dict:
        return {"learner": self.name, "init": {"preset": self.preset, "image_shape": list(self.image_shape),
                                               "seed": self.seed, "options": dict(self.options)}}

    def save(self, path: str | Path) -> None:
        save_checkpoint(Path(path), {**self._meta(), "model": self.module.state_dict(), "history": self.history,
                                     "finished": True})

    def load(self, path: str | Path) -> "TorchLearner":
        state = load_checkpoint(path)
        if state.get("learner") != self.name:
            raise RepbenchError(f"checkpoint {path} holds learner '{state.get('learner')}', not '{self.name}'")
        try:
            self.module.load_state_dict(state["model"])
        except (RuntimeError, KeyError) as exc:
            raise RepbenchError(f"checkpoint {path} does not fit this {self.name} configuration: "
                                f"{str(exc).splitlines()[0][:200]}") from None
        self.history = list(state.get("history", []))
        self.module.eval()
        return self

    def batched(self, fn, x: torch.Tensor, batch_size: int | None = None):
        """Apply fn to float batches of the uint8 images x on the learner's device, in eval mode, no grad."""
        self.module.eval()
        bs = batch_size or self.train_config.eval_batch_size
        outs = []
        with torch.inference_mode():
            for i in range(0, len(x), bs):
                outs.append(fn(x[i:i + bs].to(self.device)))
        if isinstance(outs[0], tuple):
            return tuple(torch.cat(parts) for parts in zip(*outs))
        return torch.cat(outs)


def create_learner(name: str, **options) -> Learner:
    """Build a registered learner by name: `create_learner("lpvae", h=2, preset="quick", image_shape=(1, 28, 28))`."""
    return LEARNERS.get(name)(**options)


def list_learners(pattern: str = "*") -> list[str]:
    return LEARNERS.names(pattern)


def load_learner(path: str | Path, device: str | torch.device = "cpu") -> Learner:
    """Rebuild a learner from a repbench checkpoint (its name and options are stored inside)."""
    state = load_checkpoint(path)
    init = state.get("init", {})
    learner = create_learner(state.get("learner", "?"), preset=init.get("preset", "quick"),
                             image_shape=tuple(init.get("image_shape", (1, 28, 28))), seed=init.get("seed", 0),
                             device=device, **init.get("options", {}))
    return learner.load(path)

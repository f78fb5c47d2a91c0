"""`TorchLearner`: the machinery shared by learners that are one torch module trained by the one training loop.

A subclass sets `name`, `config_class` (a frozen dataclass of model options) and `presets` (preset name ->
config), and implements `build_module` and `loss` (mean nats per image of a uint8 batch). Its options are its
config's fields plus the training config's (epochs, lr, batch_size, ...), checked and bounded where the learner
is built; `fixed_options` are options a learner accepts only at one value (the vae's h = 0).
"""
from __future__ import annotations

import abc
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from .. import seeds
from .learner import Learner, has_ability
from ..data import fixed_subset
from ..config import EVALUATION_ONLY, TRAIN_PRESETS, TrainConfig, eval_batch, field_names, override
from ..errors import RepbenchError, first_line
from .train import finish_checkpoint, load_checkpoint, save_checkpoint, train


class TorchLearner(Learner):
    config_class: ClassVar[type]
    presets: ClassVar[dict[str, Any]]
    fixed_options: ClassVar[dict[str, Any]] = {}
    # The loss is a negative log-likelihood in nats per image, reported in bits/dim; a learner whose objective is
    # something else (contrastive, adversarial) sets this False and its curves show the objective as it is.
    loss_is_nll: ClassVar[bool] = True

    def __init__(self, preset: str = "quick", image_shape: tuple[int, int, int] = (1, 28, 28), seed: int = 0,
                 device: str | torch.device = "cpu", **options):
        super().__init__(preset, image_shape, seed, device, **options)
        for key, value in self.fixed_options.items():
            if key in options and (options[key] != value or type(options[key]) is not type(value)):
                raise RepbenchError(f"learner '{self.name}' takes no option '{key}' other than {key} = {value!r} "
                                    f"(got {options[key]!r}){self.fixed_hint(key)}")
        model_keys, train_keys = field_names(self.config_class), field_names(TrainConfig)
        base = self.preset_config(self.preset)
        if not isinstance(base, self.config_class):  # a family's shared preset, widened to this learner's fields
            base = self.config_class(**asdict(base))
        self.config = override(base, {k: v for k, v in options.items() if k in model_keys}, f"{self.name} model")
        self.train_config = override(self.train_preset(self.preset),
                                     {k: v for k, v in options.items() if k in train_keys}, "training")
        self.validate()
        self._module: torch.nn.Module | None = None
        self.fitted = False  # set by fit and load: representations of an untrained model are refused

    def option_names(self) -> list[str]:
        return field_names(self.config_class) + field_names(TrainConfig) + list(self.fixed_options)

    # ------------------------------------------------------------------------------------ subclass hooks
    def validate(self) -> None:
        """Check option values beyond their bounds (raise RepbenchError); called by the constructor."""

    def fixed_hint(self, key: str) -> str:
        """Advice for a fixed option given another value."""
        return ""

    def preset_config(self, preset: str):
        """The model config of a preset; `self.image_shape` is set, so it may depend on the data."""
        if preset not in self.presets:
            raise RepbenchError(f"learner '{self.name}' has no preset '{preset}'; its presets: "
                                f"{', '.join(self.presets)}")
        return self.presets[preset]

    def train_preset(self, preset: str) -> TrainConfig:
        return TRAIN_PRESETS[preset]

    # Learners whose likelihood stays float32 under autocast opt in to bf16 networks at the paper preset on a GPU.
    bf16_paper_on_gpu: bool = False

    def autocast_dtype(self) -> torch.dtype | None:
        """Mixed-precision dtype for the training and evaluation losses, or None for full precision."""
        on_gpu = self.preset == "paper" and self.device.type == "cuda"
        return torch.bfloat16 if self.bf16_paper_on_gpu and on_gpu else None

    def curve_metrics(self, module: torch.nn.Module, x_uint8: torch.Tensor) -> dict[str, torch.Tensor | float]:
        """Extra per-epoch values of a test batch for the training curves, every `curve_every` epochs; the
        loop averages them over batches (tensors stay on the device until the average). None by default."""
        return {}

    @abc.abstractmethod
    def build_module(self) -> torch.nn.Module: ...

    @abc.abstractmethod
    def loss(self, module: torch.nn.Module, x_uint8: torch.Tensor) -> torch.Tensor: ...

    # ------------------------------------------------------------------------------------ the contract
    def data_limits(self) -> tuple[int | None, int | None]:
        return self.train_config.train_limit, self.train_config.test_limit

    def params(self) -> dict[str, Any]:
        return {**super().params(), "model_config": asdict(self.config), "train_config": asdict(self.train_config)}

    def key_settings(self) -> dict[str, Any]:
        train = {k: v for k, v in asdict(self.train_config).items() if k not in EVALUATION_ONLY}
        return {**asdict(self.config), **train}

    def state_bytes(self) -> bytes:
        return b"".join(k.encode() + v.detach().cpu().numpy().tobytes()
                        for k, v in sorted(self.module.state_dict().items()))

    @property
    def module(self) -> torch.nn.Module:
        if self._module is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seeds.weights(self.seed))
                self._module = self.build_module()
            self._module.to(self.device).eval()  # in inference mode except while `fit` trains it
        return self._module

    @property
    def num_dims(self) -> int:
        c, h, w = self.image_shape
        return c * h * w

    def training_loss(self):
        """`loss`, under autocast where `autocast_dtype` asks for it."""
        dtype = self.autocast_dtype()
        if dtype is None:
            return self.loss

        def loss(module, x_uint8):
            with torch.autocast(self.device.type, dtype=dtype):
                return self.loss(module, x_uint8)
        return loss

    def preset_data(self, train_x, test_x=None, train_y=None, labelled=None):
        """The images the preset trains on: at most `train_limit` / `test_limit` of a fixed permutation (what
        `repbench run` loads), so the Python API trains a smoke learner in seconds too. Labels follow."""
        train_x = self.check_images(train_x)
        test_x = None if test_x is None else self.check_images(test_x)
        keep = fixed_subset(len(train_x), self.train_config.train_limit)
        if keep is not None:
            train_x = train_x[keep]
            train_y = None if train_y is None else torch.as_tensor(train_y)[keep]
            if labelled is not None:  # the labelled images that remain, at their new positions
                position = {int(i): p for p, i in enumerate(keep)}
                labelled = torch.tensor([position[int(i)] for i in labelled if int(i) in position], dtype=torch.long)
        cut = None if test_x is None else fixed_subset(len(test_x), self.train_config.test_limit)
        return train_x, (test_x if cut is None else test_x[cut]), train_y, labelled

    def training_data(self, train_x: torch.Tensor, train_y=None, labelled=None):
        """What the training loop iterates over: the images; a learner with the 'labels' ability returns a tuple
        of aligned tensors (images first) that its `loss` receives batch by batch."""
        return train_x

    def fit(self, train_x: torch.Tensor, test_x: torch.Tensor | None = None, *, checkpoint: str | Path | None = None,
            resume: bool = False, on_epoch=None, progress: bool = True, augment=None, train_y=None,
            labelled=None) -> "TorchLearner":
        """Train on uint8 images; `augment(batch, generator)` transforms training batches only. `train_y` and
        `labelled` (indices of the images whose labels may be used) reach only learners with the 'labels'
        ability, through `training_data`."""
        train_x, test_x, train_y, labelled = self.preset_data(train_x, test_x, train_y, labelled)
        data = self.training_data(train_x, train_y, labelled) if has_ability(self, "labels") else train_x
        data = tuple(t.to(self.device) for t in data) if isinstance(data, tuple) else data.to(self.device)
        self.history = train(self.module, self.training_loss(), data, cfg=self.train_config,
                             seed=self.seed, checkpoint=Path(checkpoint) if checkpoint else None, resume=resume,
                             test_x=None if test_x is None else test_x.to(self.device), meta=self._meta(),
                             on_epoch=on_epoch, progress=progress,
                             nats_per_unit=self.num_dims * math.log(2) if self.loss_is_nll else 1.0,
                             augment=augment, curves=self.curve_metrics)
        if checkpoint is not None and Path(checkpoint).exists():
            finish_checkpoint(Path(checkpoint))
        self.module.eval()
        self.fitted = True
        return self

    def _meta(self) -> dict:
        return {"learner": self.name, "init": {"preset": self.preset, "image_shape": list(self.image_shape),
                                               "seed": self.seed, "options": dict(self.options)}}

    def save(self, path: str | Path) -> None:
        if not self.fitted:
            raise RepbenchError(f"learner '{self.name}' is not fitted: call fit(train_x) or load(path) before save")
        save_checkpoint(Path(path), {**self._meta(), "model": self.module.state_dict(), "history": self.history,
                                     "finished": True})

    def load(self, path: str | Path) -> "TorchLearner":
        state = load_checkpoint(path)
        if state.get("learner") != self.name:
            raise RepbenchError(f"checkpoint {path} holds learner '{state.get('learner')}', not '{self.name}'")
        self._check_same_configuration(state.get("init", {}), path)
        try:
            self.module.load_state_dict(state["model"])
        except (RuntimeError, KeyError) as exc:
            raise RepbenchError(f"checkpoint {path} does not fit this {self.name} configuration: "
                                f"{first_line(exc)}") from None
        self.history = list(state.get("history", []))
        self.module.eval()
        self.fitted = True
        return self

    def _check_same_configuration(self, init: dict, path) -> None:
        """A checkpoint of the same learner with another seed or settings is not this learner's."""
        try:
            saved = type(self)(preset=init["preset"], image_shape=init["image_shape"], seed=init["seed"],
                               **init.get("options", {}))
        except (KeyError, TypeError, RepbenchError):
            raise RepbenchError(f"checkpoint {path} does not say how its {self.name} was configured") from None
        mine = (self.preset, self.image_shape, self.seed, self.key_settings())
        theirs = (saved.preset, saved.image_shape, saved.seed, saved.key_settings())
        if mine != theirs:
            diff = [n for n, a, b in zip(("preset", "image shape", "seed", "settings"), mine, theirs) if a != b]
            raise RepbenchError(f"checkpoint {path} holds a {self.name} with another {', '.join(diff)} than this "
                                f"one ({self.display_name}, preset {self.preset}, seed {self.seed})")

    def check_images(self, x) -> torch.Tensor:
        """uint8 images [N, C, H, W] of this learner's shape (numpy arrays are taken too); clear errors else."""
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        if not isinstance(x, torch.Tensor):
            raise RepbenchError(f"images must be a torch tensor or numpy array, got {type(x).__name__}")
        if x.dtype != torch.uint8:
            raise RepbenchError(f"images must be uint8 levels 0-255 [N, C, H, W], got {x.dtype}; from floats in "
                                f"[0, 1] use (x * 255).round().to(torch.uint8)")
        if x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise RepbenchError(f"learner '{self.name}' was built for images [N, {', '.join(map(str, self.image_shape))}]"
                                f", got {list(x.shape)}")
        if len(x) == 0:
            raise RepbenchError("no images given (an empty batch)")
        return x

    def ready(self, x) -> torch.Tensor:
        """The input of the plain-tensor API (posterior, elbo_terms, decoder_params), checked: a fitted learner
        and images [N, C, H, W] of its shape, uint8 levels or floats in [-1, 1]."""
        if not self.fitted:
            raise RepbenchError(f"learner '{self.name}' is not fitted: call fit(train_x) or load(path) first")
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape:
            got = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise RepbenchError(f"learner '{self.name}' takes images [N, {', '.join(map(str, self.image_shape))}] "
                                f"as a torch tensor, got {got}")
        return x

    def batched(self, fn, x: torch.Tensor, batch_size: int | None = None):
        """Apply fn to batches of the uint8 images x on the learner's device, in eval mode, no grad."""
        if not self.fitted:
            raise RepbenchError(f"learner '{self.name}' is not fitted: call fit(train_x) or load(path) first")
        x = self.check_images(x)
        self.module.eval()
        bs = batch_size or eval_batch(self.train_config.eval_batch_size, self.device)
        outs, x = [], x.to(self.device)  # one copy of the images, not one per batch
        with torch.inference_mode():
            for i in range(0, len(x), bs):
                outs.append(fn(x[i:i + bs]))
        if isinstance(outs[0], tuple):
            return tuple(torch.cat(parts) for parts in zip(*outs))
        return torch.cat(outs)

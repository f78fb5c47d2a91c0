"""Baselines the paper compares against, run through the same battery as the VAE family.

raw: the pixels themselves (the paper's "Raw Image" row); pca: the top-d principal components; random: a fixed
random linear projection to d dimensions (a floor); ae: a deterministic autoencoder with the VAE's encoder and
decoder shape; beta-vae: the VAE with a weight beta on the KL term. The closed-form ones (raw, pca, random) have
no training loop: `fit` computes them and writes the checkpoint a trained learner would.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from repbench.config import PRESETS, bounded
from repbench.errors import RepbenchError
from repbench.learners import TorchLearner, save_checkpoint

from .dmol import to_unit
from .vae import PRESETS as VAE_PRESETS
from .vae import VAE, VAEConfig, VAEFamily, VAEModel, check_image_shape


@dataclass(frozen=True)
class ProjectionConfig:
    d: int = 32  # output dimension (ignored by raw)


class Projection(nn.Module):
    """x -> (flatten(x) - offset) @ weight, with weight and offset as buffers saved in the checkpoint."""

    def __init__(self, num_dims: int, d: int):
        super().__init__()
        self.register_buffer("offset", torch.zeros(num_dims))
        self.register_buffer("weight", torch.eye(num_dims) if d <= 0 else torch.zeros(num_dims, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1) - self.offset) @ self.weight


class ClosedForm(TorchLearner):
    """A deterministic linear map of the pixels, computed rather than trained."""
    config_class = ProjectionConfig
    presets = {p: ProjectionConfig() for p in PRESETS}

    def validate(self) -> None:
        if self.config.d < 1:
            raise RepbenchError(f"learner '{self.name}' needs d >= 1, got {self.config.d}")

    def output_dim(self) -> int:
        return self.config.d

    def build_module(self) -> Projection:
        return Projection(self.num_dims, self.output_dim())

    def loss(self, module, x_uint8):
        raise RepbenchError(f"learner '{self.name}' is computed in closed form and has no training loss")

    def solve(self, x: torch.Tensor) -> None:
        """Set the projection from the training images (floats in [-1, 1], flattened)."""

    def fit(self, train_x, test_x=None, *, checkpoint=None, resume=False, on_epoch=None, progress=True, augment=None):
        # closed form on the training images as they are: there are no batches to augment
        train_x = self.preset_data(train_x)[0]
        self.solve(to_unit(train_x).flatten(1).to(self.device))
        self.history = []
        self.fitted = True
        if checkpoint is not None:
            save_checkpoint(Path(checkpoint), {**self._meta(), "model": self.module.state_dict(), "history": [],
                                               "epoch": 0, "finished": True})
        return self

    def represent(self, x: torch.Tensor, kind: str = "mean") -> torch.Tensor:
        self.check_kind(kind)
        return self.batched(lambda xb: self.module(to_unit(xb)), x)


class Raw(ClosedForm):
    """The pixels themselves, in [-1, 1] (the paper's Raw Image row)."""
    name = "raw"
    presets = {p: ProjectionConfig(d=0) for p in PRESETS}

    def validate(self) -> None:
        if "d" in self.options:
            raise RepbenchError("learner 'raw' has no option 'd': its dimension is the number of pixels")

    def output_dim(self) -> int:
        return 0  # identity


class PCA(ClosedForm):
    """The top-d principal components of the training pixels."""
    name = "pca"

    def solve(self, x):
        if self.config.d > min(x.shape):
            raise RepbenchError(f"pca: d = {self.config.d} exceeds min(images, pixels) = {min(x.shape)}")
        x = x.double()
        mean = x.mean(0)
        _, _, v = torch.linalg.svd(x - mean, full_matrices=False)
        comps = v[: self.config.d].T
        comps = comps * torch.sign(comps[comps.abs().argmax(0), torch.arange(comps.shape[1])])  # fixed signs
        self.module.offset.copy_(mean.float())
        self.module.weight.copy_(comps.float())


class RandomProjection(ClosedForm):
    """A fixed Gaussian random projection of the pixels to d dimensions: a floor for the others."""
    name = "random"

    def solve(self, x):
        g = torch.Generator().manual_seed(self.seed)
        w = torch.randn(self.num_dims, self.config.d, generator=g) / math.sqrt(self.num_dims)
        self.module.weight.copy_(w.to(self.device))


class AE(TorchLearner):
    """Deterministic autoencoder with the VAE's encoder and decoder (h = 0), trained on the reconstruction NLL."""
    name = "ae"
    config_class = VAEConfig
    presets = VAE_PRESETS

    preset_config = VAEFamily.preset_config  # grayscale or colour architecture, by the images
    train_preset = VAEFamily.train_preset

    def validate(self) -> None:
        check_image_shape(self.name, self.image_shape)

    def build_module(self) -> VAEModel:
        return VAEModel(self.config, self.image_shape, 0)

    def loss(self, module: VAEModel, x_uint8: torch.Tensor) -> torch.Tensor:
        x = to_unit(x_uint8)
        code, _ = module.posterior(x)  # the mean head is the code; the std head goes unused
        return -module.pixel_log_prob(x, module.decoder_params(x, code)).sum((1, 2, 3)).mean()

    def represent(self, x: torch.Tensor, kind: str = "mean") -> torch.Tensor:
        self.check_kind(kind)
        return self.batched(lambda xb: self.module.posterior(xb)[0], x)


@dataclass(frozen=True)
class BetaVAEConfig(VAEConfig):
    beta: float = bounded(4.0, min=0)   # weight of the KL term in the training loss


class BetaVAE(VAE):
    """The VAE (h = 0) with weight beta on the KL term of its training loss."""
    name = "beta-vae"
    config_class = BetaVAEConfig

    def loss(self, module: VAEModel, x_uint8: torch.Tensor) -> torch.Tensor:
        t = module.elbo_terms(to_unit(x_uint8))
        return (t["nll_nats"] + self.config.beta * t["kl_nats"]).mean()

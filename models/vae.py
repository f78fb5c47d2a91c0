"""The VAE family of the paper: vae (h = 0), lpvae (local PixelCNN decoder, horizon h >= 1), fpvae (full PixelCNN).

MNIST model (preset `paper`): encoder MLP D-500-500 (BatchNorm, ReLU) with a linear mean head and a softplus std
head; decoder MLP z-500-500 (BatchNorm, ReLU) -> a 16-channel feature map at image size -> the PixelCNN head ->
a discretized mixture of 10 logistics. Trained on the plain single-sample ELBO. Layer for layer the official
PixelVAE (tests/models/test_official.py checks equal outputs with copied weights).
All methods take images as floats in [-1, 1] or as uint8 levels (converted on the way in).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from repbench.learners import REPRESENTATION_KINDS
from repbench.config import TRAIN_PRESETS, TrainConfig, bounded
from repbench.metrics.information import kl_to_standard_normal
from repbench.errors import RepbenchError
from repbench.learners import TorchLearner

from .dmol import dmol_log_prob, dmol_noise, dmol_sample, num_params, to_unit
from .pixelcnn import PixelCNNHead
from .resnet import ResNetDecoder, ResNetEncoder


@dataclass(frozen=True)
class VAEConfig:
    z_dim: int = bounded(32, min=1)
    hidden: int = bounded(500, min=1)           # encoder / decoder width: MLP units or ResNet channels (colour)
    feature_channels: int = bounded(16, min=1)  # channels of the decoder's feature map fed to the PixelCNN head
    width: int = bounded(256, min=2)            # PixelCNN head width (half pixel path, half features)
    n_res: int = bounded(5, min=0)              # residual blocks in the head
    n_mix: int = bounded(10, min=1)             # logistic mixture components
    full_kernel: int = bounded(7, min=3, odd=True)  # fpvae's first (mask-A) kernel


@dataclass(frozen=True)
class LPVAEConfig(VAEConfig):
    h: int = bounded(2, min=0)                  # the decoder's horizon in pixels; 0 is the plain vae


PRESETS = {
    "paper": VAEConfig(),
    "quick": VAEConfig(hidden=500, width=64),
    "medium": VAEConfig(hidden=500, width=64),
    "smoke": VAEConfig(z_dim=8, hidden=64, feature_channels=4, width=16, n_res=2, n_mix=3),
}
COLOUR_PRESETS = {  # CIFAR-10 / SVHN: ResNets of 400 channels, z = 64, the same head, RGB mixture (100 outputs)
    # 100 feature channels: the paper's text and the official notebook of its CIFAR-10 result (the official script
    # has 256: `-o feature_channels=256`).
    "paper": VAEConfig(z_dim=64, hidden=400, feature_channels=100),
    "medium": VAEConfig(z_dim=64, hidden=64, width=64),
    "quick": VAEConfig(z_dim=64, hidden=32, width=32),
    "smoke": VAEConfig(z_dim=8, hidden=8, feature_channels=4, width=16, n_res=2, n_mix=3),
}
COLOUR_TRAIN_PRESETS = {
    "paper": TrainConfig(epochs=1000, batch_size=100, curve_every=20),
    "medium": TrainConfig(epochs=20, batch_size=100),
    "quick": TrainConfig(epochs=10, batch_size=100, train_limit=5000, test_limit=1000),
    "smoke": TRAIN_PRESETS["smoke"],
}


def as_unit(x: torch.Tensor) -> torch.Tensor:
    return to_unit(x) if x.dtype == torch.uint8 else x


def at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """Posterior parameters (and M2's class logits) leave bf16 autocast as float32: the KL, the mutual
    information and the entropy sum many terms of them."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU()]
    return nn.Sequential(*layers)


class VAEModel(nn.Module):
    def __init__(self, cfg: VAEConfig, image_shape: tuple[int, int, int], horizon: int | None):
        super().__init__()
        c, h, w = image_shape
        self.cfg, self.image_shape = cfg, image_shape
        if c == 1:  # MNIST: MLPs
            self.encoder = mlp([h * w, cfg.hidden, cfg.hidden])
            enc_dim = cfg.hidden
            self.decoder = nn.Sequential(mlp([cfg.z_dim, cfg.hidden, cfg.hidden]),
                                         nn.Linear(cfg.hidden, cfg.feature_channels * h * w))
        else:  # CIFAR-10 / SVHN: ResNets, 32 -> 4 -> 32
            self.encoder = ResNetEncoder(c, cfg.hidden)
            enc_dim = cfg.hidden * (h // 8) * (w // 8)
            self.decoder = ResNetDecoder(cfg.z_dim, cfg.hidden, cfg.feature_channels, (h, w))
        self.mean_head = nn.Linear(enc_dim, cfg.z_dim)
        self.std_head = nn.Linear(enc_dim, cfg.z_dim)
        self.head = PixelCNNHead(c, cfg.feature_channels, cfg.width, cfg.n_res, num_params(cfg.n_mix, c),
                                 horizon, cfg.full_kernel)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = as_unit(x)
        e = self.encoder(x.flatten(1) if self.image_shape[0] == 1 else x)
        return at_least_float32(self.mean_head(e)), F.softplus(at_least_float32(self.std_head(e)))

    def features(self, z: torch.Tensor) -> torch.Tensor:
        _, h, w = self.image_shape
        return self.decoder(z).view(len(z), self.cfg.feature_channels, h, w)  # a view of the MLP's or the map

    def decoder_params(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.head(as_unit(x), self.features(z))

    def pixel_log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        # Always float32 or wider, also under bf16 autocast: bin masses of 1/255-wide bins need the precision.
        with torch.autocast(params.device.type, enabled=False):
            return dmol_log_prob(as_unit(x).to(torch.promote_types(params.dtype, torch.float32)),
                                 params.to(torch.promote_types(params.dtype, torch.float32)), self.cfg.n_mix)

    def elbo_terms(self, x: torch.Tensor, z: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Single-sample NLL and analytic KL per image, in nats; `z` may be given instead of sampled."""
        x = as_unit(x)
        mean, std = self.posterior(x)
        if z is None:
            z = mean + std * torch.randn_like(std)
        nll = -self.pixel_log_prob(x, self.decoder_params(x, z)).sum((1, 2, 3))
        return {"nll_nats": nll, "kl_nats": kl_to_standard_normal(mean, std)}

    @torch.inference_mode()
    def generate(self, z: torch.Tensor, generator: torch.Generator | None = None, order: str = "wavefront"
                 ) -> torch.Tensor:
        """Sample images from p(x|z) -> floats in [-1, 1] at exact levels.

        Local heads draw a wavefront of pixels at a time (`order="raster"` draws one pixel per step, for
        checking); fpvae draws in raster order. Every pixel uses its own pre-drawn uniforms, so the order
        does not change the image."""
        feats = self.features(z)
        c, h, w = self.image_shape
        x = torch.zeros(len(z), c, h, w, device=z.device)
        u_k, u_x = dmol_noise(x.shape, self.cfg.n_mix, c, generator, z.device)
        if self.head.horizon == 0:  # no autoregression: every pixel at once
            return dmol_sample(self.head(x, feats), self.cfg.n_mix, noise=(u_k, u_x))
        if self.head.full:
            for i in range(h):
                for j in range(w):  # rows below i are outside the causal field, so crop them away
                    p = self.head(x[:, :, :i + 1], feats[:, :, :i + 1])[:, :, i:i + 1, j:j + 1]
                    noise = u_k[:, :, i:i + 1, j:j + 1], u_x[:, :, i:i + 1, j:j + 1]
                    x[:, :, i, j] = dmol_sample(p, self.cfg.n_mix, noise=noise)[:, :, 0, 0]
            return x
        steps = raster_steps(h, w) if order == "raster" else wavefront_steps(h, w, self.head.horizon)
        for rows, cols in [(r.to(z.device), c.to(z.device)) for r, c in steps]:  # copied before the first step
            p = self.head.params_at(x, feats, rows, cols)[..., None]              # [B, P, n, 1]
            noise = u_k[:, :, rows, cols][..., None], u_x[:, :, rows, cols][..., None]
            x[:, :, rows, cols] = dmol_sample(p, self.cfg.n_mix, noise=noise)[..., 0]
        return x


def raster_steps(height: int, width: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.tensor([i]), torch.tensor([j])) for i in range(height) for j in range(width)]


def wavefront_steps(height: int, width: int, horizon: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Groups of pixels that a horizon-h head can draw together: all (i, j) with (h + 1) i + j = t.

    Pixel (i, j) sees (i - 1, j + h) at most up-right and (i, j - 1) to its left, both at t - 1 or earlier,
    so (h + 1)(height - 1) + width steps cover the image instead of height * width."""
    rows = torch.arange(height)
    steps = []
    for t in range((horizon + 1) * (height - 1) + width):
        cols = t - (horizon + 1) * rows
        keep = (cols >= 0) & (cols < width)
        steps.append((rows[keep], cols[keep]))
    return steps


def check_image_shape(name: str, shape: tuple[int, int, int]) -> None:
    c, height, width = shape
    if c not in (1, 3):
        raise RepbenchError(f"learner '{name}' models grayscale or RGB images, not {c} channels")
    if c == 3 and (height % 8 or width % 8):
        raise RepbenchError(f"the colour models halve the image three times; {height}x{width} is not a multiple of 8")


class VAEFamily(TorchLearner):
    """Shared learner code; subclasses fix the decoder's horizon."""
    kinds = REPRESENTATION_KINDS
    abilities = ("posterior", "likelihood", "generator")
    config_class = VAEConfig
    presets = PRESETS
    bf16_paper_on_gpu = True  # the likelihood's parameters and the likelihood stay float32 (pixelcnn.py)
    model_version = 2  # 2: the official head (bias-free input convolutions, ReLU after the join, h = 0 zero half)

    horizon: int | None = 0  # pixels of context; None = the full raster-order past

    def preset_config(self, preset: str) -> VAEConfig:
        return (COLOUR_PRESETS if self.image_shape[0] == 3 else PRESETS)[preset]

    def train_preset(self, preset: str) -> TrainConfig:
        return (COLOUR_TRAIN_PRESETS if self.image_shape[0] == 3 else TRAIN_PRESETS)[preset]

    def validate(self) -> None:
        check_image_shape(self.name, self.image_shape)
        h = self.horizon
        if h is not None and h > max(self.image_shape[1:]):
            raise RepbenchError(f"h = {h} is wider than the image {self.image_shape[1:]}; use fpvae for full context")

    def build_module(self) -> VAEModel:
        return VAEModel(self.config, self.image_shape, self.horizon)

    def loss(self, module: VAEModel, x_uint8: torch.Tensor) -> torch.Tensor:
        t = module.elbo_terms(to_unit(x_uint8))
        return (t["nll_nats"] + t["kl_nats"]).mean()

    def curve_metrics(self, module: VAEModel, x_uint8: torch.Tensor) -> dict[str, torch.Tensor]:
        """Mutual information (nats) of the test images, for the training curves (the paper's Figure 6)."""
        mean, std = module.posterior(to_unit(x_uint8))
        return {"test_mutual_info": kl_to_standard_normal(mean.double(), std.double()).mean()}

    # The design's plain-tensor API, delegated to the module.
    def posterior(self, x):
        return self.module.posterior(self.ready(x))

    def decoder_params(self, x, z):
        return self.module.decoder_params(self.ready(x), z)

    def pixel_log_prob(self, x, params):
        return self.module.pixel_log_prob(x, params)

    def elbo_terms(self, x, z=None):
        return self.module.elbo_terms(self.ready(x), z)

    def represent(self, x: torch.Tensor, kind: str = "mean", generator: torch.Generator | None = None) -> torch.Tensor:
        self.check_kind(kind)

        def rep(xb):
            mean, std = self.module.posterior(xb)
            if kind == "mean":
                return mean
            if kind == "embedding":
                return torch.cat([mean, std], dim=1)
            return mean + std * torch.randn(mean.shape, generator=generator, device=mean.device)
        return self.batched(rep, x)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images from the model (z from the prior), uint8 [n, C, H, W]."""
        z = torch.randn(n, self.config.z_dim, generator=generator, device=self.device)
        return _levels(self.module.eval().generate(z, generator))

    def reconstruct(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode the posterior mean of x by sampling from p(x|z), uint8."""
        mean, _ = self.batched(self.module.posterior, x)
        return _levels(self.module.eval().generate(mean, generator))


def _levels(x: torch.Tensor) -> torch.Tensor:
    return torch.round((x + 1) * 127.5).clamp(0, 255).to(torch.uint8).cpu()


class VAE(VAEFamily):
    """The VAE baseline: a decoder that sees no pixels (h = 0)."""
    name = "vae"
    horizon = 0
    fixed_options = {"h": 0}  # `--model vae --h 0` is the vae; any other h is an lpvae

    def fixed_hint(self, key: str) -> str:
        return "; use --model lpvae for a horizon h >= 1"


class LPVAE(VAEFamily):
    """Local PixelCNN VAE: the decoder sees a horizon of h pixels above and to the left of each pixel."""
    name = "lpvae"
    config_class = LPVAEConfig

    @property
    def horizon(self) -> int:
        return self.config.h

    @property
    def display_name(self) -> str:
        return f"lpvae-h{self.horizon}"


class FPVAE(VAEFamily):
    """Full PixelCNN VAE: the decoder sees every pixel before (i, j) in raster order."""
    name = "fpvae"
    horizon = None

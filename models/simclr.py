"""simclr: contrastive learning of visual representations (Chen et al., 2020), a peer of the paper's Table 4.

Each training image gets two random views; the encoder (peers.ConvEncoder, the one dim uses) and a projection
head map them to vectors, and the NT-Xent loss (softmax cross-entropy of cosine similarities over a
temperature) asks each view to pick its partner out of the 2N - 1 other views of the batch. The
representation is the encoder's output h, before the projection head (the head discards what the augmentations
vary, which the probes may still want).

Augmentations, on the batch and from torch's global RNG (the loop seeds it, so training is reproducible):
a random resized crop (a fraction `min_crop`..1 of the area, aspect ratio 3/4..4/3, resized back); for colour
images also a horizontal flip and colour distortion of strength `jitter` (SimCLR's CIFAR-10 recipe). Grayscale
images (digits) get no flip, since a mirrored 2, 3, 5 or 7 is not a digit and the flip would teach the encoder
to ignore the very asymmetry that tells those classes apart, and a milder crop (half the area at least), since
a small crop of a digit is one stroke that any digit could contain.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from repbench.config import TRAIN_PRESETS, TrainConfig, bounded
from repbench.errors import RepbenchError

from .dmol import to_unit
from .peers import ConvEncoder, ConvPeer


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent: a[i] and b[i] are two views of image i. Over the 2N views, each one's cosine similarities to
    the 2N - 1 others, divided by the temperature, are the logits of a softmax whose target is its partner;
    the loss is the mean cross-entropy (nats). In float32."""
    z = F.normalize(torch.cat([a, b]).float(), dim=1)
    n = len(a)
    logits = (z @ z.T / temperature).masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), -math.inf)
    partner = torch.arange(2 * n, device=z.device).roll(n)  # made on the device: no copy per batch
    return F.cross_entropy(logits, partner)


# ------------------------------------------------------------------------------------------ augmentations
def crop_resize(x: torch.Tensor, min_area: float, flip: bool) -> torch.Tensor:
    """A random crop of each image ([B, C, H, W] floats), of area min_area..1 and aspect ratio 3/4..4/3,
    resized back to H x W (bilinear), mirrored left-right with probability 1/2 where `flip`."""
    b, dev = len(x), x.device
    area = min_area + (1 - min_area) * torch.rand(b, device=dev)
    ratio = torch.exp((2 * torch.rand(b, device=dev) - 1) * math.log(4 / 3))
    w, h = (area * ratio).sqrt().clamp(max=1), (area / ratio).sqrt().clamp(max=1)   # fractions of the image
    cx, cy = (1 - w) * (2 * torch.rand(b, device=dev) - 1), (1 - h) * (2 * torch.rand(b, device=dev) - 1)
    sx = w * torch.where(torch.rand(b, device=dev) < 0.5, -1.0, 1.0) if flip else w
    zero = torch.zeros_like(w)
    theta = torch.stack([torch.stack([sx, zero, cx], 1), torch.stack([zero, h, cy], 1)], 1)   # [B, 2, 3]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


@functools.lru_cache(maxsize=None)
def _yiq_on(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The colour matrices on `device`, copied there once rather than every batch."""
    return _YIQ_TO_RGB.to(device), _RGB_TO_YIQ.to(device)


def colour_distort(x: torch.Tensor, strength: float) -> torch.Tensor:
    """SimCLR's colour distortion on RGB floats in [0, 1]: with probability 0.8 brightness, contrast and
    saturation factors in 1 +- 0.8 s and a hue rotation of up to +-0.2 s turns (in YIQ space: a linear map per
    image, unlike an HSV round trip), then grayscale with probability 0.2."""
    b, dev = len(x), x.device

    def factor(spread):
        return (1 + spread * (2 * torch.rand(b, 1, 1, 1, device=dev) - 1)).clamp(min=0)

    def gray(t):
        return (0.299 * t[:, :1] + 0.587 * t[:, 1:2] + 0.114 * t[:, 2:]).expand_as(t)

    y = (x * factor(0.8 * strength)).clamp(0, 1)
    mean = gray(y).mean((1, 2, 3), keepdim=True)
    y = ((y - mean) * factor(0.8 * strength) + mean).clamp(0, 1)
    y = ((y - gray(y)) * factor(0.8 * strength) + gray(y)).clamp(0, 1)
    angle = (2 * torch.rand(b, device=dev) - 1) * 0.2 * strength * 2 * math.pi
    cos, sin, one, zero = angle.cos(), angle.sin(), torch.ones(b, device=dev), torch.zeros(b, device=dev)
    rot = torch.stack([torch.stack([one, zero, zero], 1), torch.stack([zero, cos, -sin], 1),
                       torch.stack([zero, sin, cos], 1)], 1)                                   # [B, 3, 3]
    to_rgb, to_yiq = _yiq_on(dev)
    hue = to_rgb @ rot @ to_yiq
    y = torch.einsum("bij,bjhw->bihw", hue, y).clamp(0, 1)
    y = torch.where(torch.rand(b, 1, 1, 1, device=dev) < 0.8, y, x)
    return torch.where(torch.rand(b, 1, 1, 1, device=dev) < 0.2, gray(y), y)


# ------------------------------------------------------------------------------------------ the learner
@dataclass(frozen=True)
class SimCLRConfig:
    z_dim: int = bounded(32, min=1)            # the representation h (64 for colour images)
    channels: int = bounded(64, min=1)         # the encoder's first convolution, doubled by each next one
    hidden: int = bounded(1024, min=1)         # the encoder's fully connected layer before h
    proj_dim: int = bounded(128, min=1)        # the projection head: h -> proj_dim -> ReLU -> proj_dim
    temperature: float = bounded(0.5, above=0)
    min_crop: float = bounded(0.5, above=0)    # the smallest crop, a fraction (<= 1) of the image's area
    jitter: float = bounded(0.0, min=0)        # colour distortion strength (colour images only; 0: none)


class SimCLRModel(nn.Module):
    def __init__(self, cfg: SimCLRConfig, image_shape: tuple[int, int, int]):
        super().__init__()
        self.encoder = ConvEncoder(image_shape, cfg.channels, cfg.hidden, cfg.z_dim)
        self.projection = nn.Sequential(nn.Linear(cfg.z_dim, cfg.proj_dim), nn.ReLU(),
                                        nn.Linear(cfg.proj_dim, cfg.proj_dim))

    def represent(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)[0]


PRESETS = {
    "paper": SimCLRConfig(),
    "medium": SimCLRConfig(channels=32, hidden=256, proj_dim=64),
    "quick": SimCLRConfig(channels=32, hidden=256, proj_dim=64),
    "smoke": SimCLRConfig(z_dim=8, channels=8, hidden=32, proj_dim=16),
}
COLOUR_PRESETS = {  # SimCLR's CIFAR-10 recipe: crops down to 8% of the area, flip, colour strength 0.5
    "paper": SimCLRConfig(z_dim=64, min_crop=0.08, jitter=0.5),
    "medium": SimCLRConfig(z_dim=64, channels=32, hidden=512, proj_dim=128, min_crop=0.08, jitter=0.5),
    "quick": SimCLRConfig(z_dim=64, channels=32, hidden=256, proj_dim=64, min_crop=0.08, jitter=0.5),
    "smoke": SimCLRConfig(z_dim=8, channels=8, hidden=32, proj_dim=16, min_crop=0.08, jitter=0.5),
}
TRAIN = {**TRAIN_PRESETS, "quick": TrainConfig(epochs=10, batch_size=100, lr=1e-3, train_limit=5000, test_limit=1000),
         "medium": TrainConfig(epochs=20, batch_size=100, lr=1e-3),
         "paper": TrainConfig(epochs=100, batch_size=256, lr=1e-3, curve_every=5)}
COLOUR_TRAIN = {**TRAIN, "paper": TrainConfig(epochs=1000, batch_size=512, lr=1e-3, curve_every=20)}


class SimCLR(ConvPeer):
    """SimCLR: a conv encoder trained by NT-Xent on two augmented views, represented before its projection head."""
    name = "simclr"
    config_class = SimCLRConfig
    presets, colour_presets = PRESETS, COLOUR_PRESETS
    train_presets, colour_train_presets = TRAIN, COLOUR_TRAIN
    loss_is_nll = False  # NT-Xent is a classification loss over views (nats), not a likelihood of the images

    def validate(self) -> None:
        super().validate()
        if self.config.min_crop > 1:
            raise RepbenchError(f"learner 'simclr': min_crop is a fraction of the image's area, at most 1; "
                                f"got {self.config.min_crop}")
        if self.config.jitter > 0 and self.image_shape[0] != 3:
            raise RepbenchError("learner 'simclr': jitter distorts colours and needs colour images; "
                                f"these have {self.image_shape[0]} channel(s)")

    def build_module(self) -> SimCLRModel:
        return SimCLRModel(self.config, self.image_shape)

    def views(self, x: torch.Tensor) -> torch.Tensor:
        """One random view of each image (floats in [-1, 1])."""
        colour = self.image_shape[0] == 3
        v = crop_resize(x, self.config.min_crop, flip=colour)
        if colour and self.config.jitter > 0:
            v = colour_distort((v + 1) / 2, self.config.jitter) * 2 - 1
        return v

    def loss(self, module: SimCLRModel, x_uint8: torch.Tensor) -> torch.Tensor:
        x = to_unit(x_uint8)
        p = module.projection(module.represent(torch.cat([self.views(x), self.views(x)])))
        return nt_xent(p[:len(x)], p[len(x):], self.config.temperature)

    def represent(self, x: torch.Tensor, kind: str = "mean") -> torch.Tensor:
        self.check_kind(kind)
        return self.batched(lambda xb: self.module.represent(to_unit(xb)), x)

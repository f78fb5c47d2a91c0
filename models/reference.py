"""The straightforward implementation that the fast one is checked and timed against.

It computes the same model from the same parameters the plain way: NCHW convolutions (masks applied on every
call), the block written exactly as the design states it, and plain (unfused) Adam. Tests compare its loss and
gradients to the fast path on a fixed batch; `benchmarks/speed.py` reports the speed-up over it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .dmol import dmol_noise, dmol_sample
from .pixelcnn import PixelCNNHead
from .vae import as_unit


def _conv(conv: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    weight = conv.weight * conv.mask if hasattr(conv, "mask") else conv.weight
    return F.conv2d(x.contiguous(), weight, conv.bias, padding=conv.padding)


def head_forward(head: PixelCNNHead, x: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    f = _conv(head.feature_conv, features)
    if head.pixel_conv is not None:
        px = _conv(head.pixel_conv, x)
    else:  # h = 0: the official kernel-1 mask-A convolution, all zeros
        px = f.new_zeros(f.shape[0], head.pixel_channels, *f.shape[2:])
    h = F.relu(torch.cat([px, f], dim=1))
    for block in head.blocks:
        a, b, c = block.convs
        h = h + F.relu(_conv(c, F.relu(_conv(b, F.relu(_conv(a, h))))))
    first, _, last = head.out
    return _conv(last, F.relu(_conv(first, h)))


def decoder_params(model, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return head_forward(model.head, as_unit(x), model.features(z))


def loss(model, x_uint8: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
    """Mean negative ELBO in nats per image; the posterior sample z may be given."""
    x = as_unit(x_uint8)
    mean, std = model.posterior(x)
    if z is None:
        z = mean + std * torch.randn_like(std)
    nll = -model.pixel_log_prob(x, decoder_params(model, x, z)).sum((1, 2, 3))
    kl = 0.5 * (mean.pow(2) + std.pow(2) - 1).sum(1) - std.log().sum(1)
    return (nll + kl).mean()


def optimizer(module: torch.nn.Module, lr: float) -> torch.optim.Adam:
    return torch.optim.Adam(module.parameters(), lr=lr, foreach=False)


@torch.inference_mode()
def generate(model, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Raster-order sampling with one whole decoder pass per pixel, the way a PixelCNN is usually sampled.

    Uses the same per-pixel uniforms as `VAEModel.generate`, so both draw the same image."""
    feats = model.features(z)
    c, h, w = model.image_shape
    x = torch.zeros(len(z), c, h, w, device=z.device)
    u_k, u_x = dmol_noise(x.shape, model.cfg.n_mix, c, generator, z.device)
    for i in range(h):
        for j in range(w):
            p = head_forward(model.head, x, feats)[:, :, i:i + 1, j:j + 1]
            noise = u_k[:, :, i:i + 1, j:j + 1], u_x[:, :, i:i + 1, j:j + 1]
            x[:, :, i, j] = dmol_sample(p, model.cfg.n_mix, noise=noise)[:, :, 0, 0]
    return x

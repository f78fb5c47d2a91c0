"""Discretized mixture of logistics over 256 levels (PixelCNN++ style), for grayscale images.

A pixel value v in 0..255 sits at x = v / 127.5 - 1 in [-1, 1]; its bin is x +- 1/255, and the two edge bins
extend to -inf and +inf so the 256 probabilities sum to exactly 1. The bin mass is computed as
    log(sigmoid(a) - sigmoid(b)) = logsigmoid(a) + logsigmoid(-b) + log(1 - exp(-(a - b)))
which is exact and stable everywhere, so no small-probability fallback (and no bias) is needed.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

HALF_BIN = 1.0 / 255.0
MIN_LOG_SCALE = -7.0  # PixelCNN++'s floor on the logistic's log-scale


def params_per_channel(n_mix: int) -> int:
    return 3 * n_mix  # mixture logit, mean, log-scale


def to_unit(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 levels -> floats in [-1, 1]."""
    return x_uint8.float() / 127.5 - 1.0


def to_levels(x: torch.Tensor) -> torch.Tensor:
    """floats in [-1, 1] -> integer levels 0..255 (nearest bin)."""
    return torch.round((x.clamp(-1, 1) + 1.0) * 127.5).long()


def log1mexp(d: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(-d)) for d > 0, accurate for small and large d.

    Each branch gets only inputs that are safe for it: torch.where passes the gradient of the unused branch
    through a zero, and inf * 0 would turn it into NaN (log1p(-exp(-d)) has an infinite slope as d -> 0)."""
    small = d < math.log(2.0)
    d_small = torch.where(small, d, torch.ones_like(d))
    d_large = torch.where(small, torch.ones_like(d), d)
    return torch.where(small, torch.log(-torch.expm1(-d_small)), torch.log1p(-torch.exp(-d_large)))


def split_params(params: torch.Tensor, n_mix: int):
    logits, means, log_scales = params.split(n_mix, dim=1)
    return logits, means, log_scales.clamp(min=MIN_LOG_SCALE)


def logistic_bin_log_prob(x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor) -> torch.Tensor:
    """log P(bin of x) under each logistic component; x broadcasts against means [B, K, H, W]."""
    inv_s = torch.exp(-log_scales)
    a = inv_s * (x - means + HALF_BIN)
    b = inv_s * (x - means - HALF_BIN)
    upper = F.logsigmoid(a)          # log CDF(x + 1/255): the bin of level 0 is (-inf, x + 1/255]
    lower = F.logsigmoid(-b)         # log (1 - CDF(x - 1/255)): the bin of level 255 is [x - 1/255, inf)
    middle = upper + lower + log1mexp(2.0 * HALF_BIN * inv_s)
    return torch.where(x < -0.999, upper, torch.where(x > 0.999, lower, middle))


def dmol_log_prob(x: torch.Tensor, params: torch.Tensor, n_mix: int) -> torch.Tensor:
    """Log-probability in nats of each pixel of x [B, 1, H, W] (floats at exact levels) -> [B, 1, H, W]."""
    logits, means, log_scales = split_params(params, n_mix)
    comp = logistic_bin_log_prob(x, means, log_scales)
    return torch.logsumexp(F.log_softmax(logits, dim=1) + comp, dim=1, keepdim=True)


def dmol_noise(params_shape: torch.Size | tuple, n_mix: int, channels: int = 1,
               generator: torch.Generator | None = None, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The uniforms one draw needs for params of shape [B, P, H, W]: (component [B, K, H, W], value [B, C, H, W]).

    Drawn up front, so samplers that visit pixels in different orders draw the same image."""
    b, _, *hw = params_shape
    u_k = torch.rand(b, n_mix, *hw, generator=generator, device=device).clamp(1e-6, 1 - 1e-6)
    u_x = torch.rand(b, channels, *hw, generator=generator, device=device).clamp(1e-6, 1 - 1e-6)
    return u_k, u_x


def dmol_sample(params: torch.Tensor, n_mix: int, generator: torch.Generator | None = None,
                noise: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Draw pixels [B, 1, H, W] in [-1, 1] (exact levels) from the mixture with params [B, 3K, H, W].

    A continuous logistic draw rounded to the nearest bin has exactly the discretized distribution.
    `noise` (from `dmol_noise`, same trailing shape as params) replaces fresh uniforms from `generator`."""
    logits, means, log_scales = split_params(params, n_mix)
    u_k, u_x = noise if noise is not None else dmol_noise(params.shape, n_mix, 1, generator, params.device)
    k = (logits - torch.log(-torch.log(u_k))).argmax(dim=1, keepdim=True)  # Gumbel-max
    mean = means.gather(1, k)
    scale = torch.exp(log_scales.gather(1, k))
    x = mean + scale * (torch.log(u_x) - torch.log1p(-u_x))
    return to_levels(x).float() / 127.5 - 1.0

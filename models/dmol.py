"""Discretized mixture of logistics over 256 levels (PixelCNN++ style), for grayscale and RGB images.

A pixel value v in 0..255 sits at x = v / 127.5 - 1 in [-1, 1]; its bin is x +- 1/255, and the two edge bins
extend to -inf and +inf so the 256 probabilities sum to exactly 1. The bin mass is computed as
    log(sigmoid(a) - sigmoid(b)) = logsigmoid(a) + logsigmoid(-b) + log(1 - exp(-(a - b)))
which is exact and stable everywhere, so no small-probability fallback (and no bias) is needed.

RGB: each component k has a logistic per channel whose mean moves linearly with the channels before it,
    mean_g = mu_g + a_k x_r,   mean_b = mu_b + b_k x_r + c_k x_g   (a, b, c = tanh of raw coefficients),
so the joint probability of a colour is sum_k pi_k p_k(r) p_k(g | r) p_k(b | r, g). `dmol_log_prob` returns it
split into exact per-channel conditionals, log p(r), log p(g | r), log p(b | r, g), which sum to the joint.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

HALF_BIN = 1.0 / 255.0
MIN_LOG_SCALE = -7.0  # PixelCNN++'s floor on the logistic's log-scale


def num_params(n_mix: int, channels: int) -> int:
    """Output channels of the decoder: grayscale 3K (logit, mean, log-scale); RGB 10K (+ 3 coefficients)."""
    if channels not in (1, 3):
        raise ValueError(f"the logistic mixture handles 1 or 3 channels, not {channels}")
    return 3 * n_mix if channels == 1 else 10 * n_mix


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
    """Log-probability in nats of each pixel of x [B, C, H, W] (floats at exact levels) -> [B, C, H, W].

    C = 3: the per-channel conditionals log p(r), log p(g | r), log p(b | r, g) under the mixture."""
    if x.shape[1] == 3:
        return _rgb_log_prob(x, params, n_mix)
    logits, means, log_scales = split_params(params, n_mix)
    comp = logistic_bin_log_prob(x, means, log_scales)
    return torch.logsumexp(F.log_softmax(logits, dim=1) + comp, dim=1, keepdim=True)


def split_rgb(params: torch.Tensor, n_mix: int):
    """params [B, 10K, H, W] -> logits [B, K, H, W]; means, log-scales, coefficients [B, 3, K, H, W]."""
    b, _, h, w = params.shape
    logits, rest = params.split([n_mix, 9 * n_mix], dim=1)
    means, log_scales, coeffs = rest.reshape(b, 3, 3, n_mix, h, w).unbind(1)
    return logits, means, log_scales.clamp(min=MIN_LOG_SCALE), torch.tanh(coeffs)


def rgb_means(means: torch.Tensor, coeffs: torch.Tensor, r: torch.Tensor, g: torch.Tensor) -> tuple:
    """Component means of red, green, blue ([B, K, H, W] each) once red r and green g [B, 1, H, W] are known."""
    return means[:, 0], means[:, 1] + coeffs[:, 0] * r, means[:, 2] + coeffs[:, 1] * r + coeffs[:, 2] * g


def _rgb_log_prob(x: torch.Tensor, params: torch.Tensor, n_mix: int) -> torch.Tensor:
    logits, means, log_scales, coeffs = split_rgb(params, n_mix)
    r, g, b = x.split(1, dim=1)
    mu = rgb_means(means, coeffs, r, g)
    joint = F.log_softmax(logits, dim=1)  # log pi_k, then log pi_k p_k(r), then ... p_k(g | r), ...
    marginals = [torch.zeros_like(r)]
    for c, xc in enumerate((r, g, b)):
        joint = joint + logistic_bin_log_prob(xc, mu[c], log_scales[:, c])
        marginals.append(torch.logsumexp(joint, dim=1, keepdim=True))
    return torch.cat([marginals[c + 1] - marginals[c] for c in range(3)], dim=1)


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
    """Draw pixels [B, C, H, W] in [-1, 1] (exact levels) from the mixture with params [B, P, H, W].

    A continuous logistic draw rounded to the nearest bin has exactly the discretized distribution; green and
    blue are drawn given the rounded red (and green), as the likelihood conditions on them.
    `noise` (from `dmol_noise`, same trailing shape as params) replaces fresh uniforms from `generator`."""
    channels = 3 if params.shape[1] == 10 * n_mix else 1
    u_k, u_x = noise if noise is not None else dmol_noise(params.shape, n_mix, channels, generator, params.device)
    if channels == 1:
        logits, means, log_scales = split_params(params, n_mix)
        k = _gumbel_argmax(logits, u_k)
        return _draw(means.gather(1, k), log_scales.gather(1, k), u_x)
    logits, means, log_scales, coeffs = split_rgb(params, n_mix)
    k = _gumbel_argmax(logits, u_k)[:, None].expand(-1, 3, -1, -1, -1)          # [B, 3, 1, H, W]
    means, log_scales, coeffs = (t.gather(2, k)[:, :, 0] for t in (means, log_scales, coeffs))
    r = _draw(means[:, 0:1], log_scales[:, 0:1], u_x[:, 0:1])
    g = _draw(means[:, 1:2] + coeffs[:, 0:1] * r, log_scales[:, 1:2], u_x[:, 1:2])
    b = _draw(means[:, 2:3] + coeffs[:, 1:2] * r + coeffs[:, 2:3] * g, log_scales[:, 2:3], u_x[:, 2:3])
    return torch.cat([r, g, b], dim=1)


def _gumbel_argmax(logits: torch.Tensor, u_k: torch.Tensor) -> torch.Tensor:
    return (logits - torch.log(-torch.log(u_k))).argmax(dim=1, keepdim=True)


def _draw(mean: torch.Tensor, log_scale: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    x = mean + torch.exp(log_scale) * (torch.log(u) - torch.log1p(-u))
    return to_levels(x).float() / 127.5 - 1.0

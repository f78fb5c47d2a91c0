"""The PixelCNN decoder head shared by the VAE family, layer for layer the official LocalPixelCNN / FullPixelCNN.

Two paths of width/2 channels each, both convolutions without bias: the pixels through one mask-A convolution, the
decoder's feature map through a 1x1 convolution; concatenated (pixels first), then a ReLU, residual blocks and a
1x1 -> ReLU -> 1x1 output. horizon h >= 1: the mask-A kernel is 2h+1 and every later convolution is 1x1, so the
parameters at (i, j) see exactly the pixels (i', j') with i-h <= i' < i, |j'-j| <= h, or i' = i, j-h <= j' < j.
h = 0: the official kernel-1 mask-A convolution is all zeros, so the pixel half is width/2 zero channels (they still
carry the residual stream) and the head sees no pixel. h = None: the full PixelCNN, a 7x7 mask-A convolution and
3x3 mask-B residual blocks, which sees only pixels strictly before (i, j) in raster order.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

CL = torch.channels_last


def causal_mask(kernel: int, include_center: bool) -> torch.Tensor:
    """[k, k] mask: every row above the centre, and the centre row left of (mask A) or up to (mask B) the centre."""
    m = torch.zeros(kernel, kernel)
    c = kernel // 2
    m[:c, :] = 1
    m[c, :c + int(include_center)] = 1
    return m


def cat_channels_last(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Concatenate channels and stay channels-last (torch.cat on dim 1 would fall back to NCHW)."""
    return torch.cat([a.permute(0, 2, 3, 1), b.permute(0, 2, 3, 1)], dim=3).permute(0, 3, 1, 2)


class _ChannelsLastGrad(torch.autograd.Function):
    """Identity whose backward hands on a channels-last gradient.

    Gradients arriving from the likelihood (split along channels, then concatenated) are NCHW; without this the
    whole backward pass would run in NCHW, at two thirds of the speed."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous(memory_format=CL)


class MaskedConv2d(nn.Conv2d):
    def __init__(self, cin: int, cout: int, kernel: int, include_center: bool, bias: bool = True):
        super().__init__(cin, cout, kernel, padding=kernel // 2, bias=bias)
        self.register_buffer("mask", causal_mask(kernel, include_center)[None, None].expand_as(self.weight).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class ResBlock(nn.Module):
    """x + ReLU(conv(ReLU(conv(ReLU(conv(x)))))) with 1x1 convs (local) or 3x3 mask-B convs (full)."""

    def __init__(self, width: int, full: bool):
        super().__init__()
        make = (lambda: MaskedConv2d(width, width, 3, include_center=True)) if full else (lambda: nn.Conv2d(width, width, 1))
        self.convs = nn.ModuleList([make() for _ in range(3)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b, c = self.convs
        # In place is safe: a convolution's backward never needs its own output.
        y = c(F.relu(b(F.relu(a(x), inplace=True)), inplace=True))
        return x + F.relu(y, inplace=True)


class PixelCNNHead(nn.Module):
    def __init__(self, in_channels: int, feature_channels: int, width: int, n_res: int, out_channels: int,
                 horizon: int | None, full_kernel: int = 7):
        super().__init__()
        self.horizon = horizon
        self.full = horizon is None
        kernel = full_kernel if self.full else 2 * horizon + 1
        has_pixels = self.full or horizon > 0
        self.pixel_channels = width // 2
        self.pixel_conv = (MaskedConv2d(in_channels, self.pixel_channels, kernel, include_center=False, bias=False)
                           if has_pixels else None)
        self.feature_conv = nn.Conv2d(feature_channels, width - self.pixel_channels, 1, bias=False)
        self.blocks = nn.ModuleList([ResBlock(width, self.full) for _ in range(n_res)])
        self.out = nn.Sequential(nn.Conv2d(width, width, 1), nn.ReLU(), nn.Conv2d(width, out_channels, 1))

    def forward(self, x: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        # Channels-last makes oneDNN's 1x1 convolutions plain matrix multiplies: about 1.5x faster on CPU.
        x, features = x.contiguous(memory_format=CL), features.contiguous(memory_format=CL)
        f = self.feature_conv(features)
        h = cat_channels_last(self._pixels(x, f), f)
        return _ChannelsLastGrad.apply(self._tail(F.relu(h)))

    def _pixels(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        if self.pixel_conv is not None:
            return self.pixel_conv(x)
        return like.new_zeros(like.shape[0], self.pixel_channels, *like.shape[2:]).contiguous(memory_format=CL)

    def _tail(self, h: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            h = block(h)
        first, relu, last = self.out
        h = relu(first(h))
        # The mixture's parameters always in float32: under bf16 autocast the means would be rounded to about
        # 1/256, half a bin, which changes the likelihood.
        with torch.autocast(h.device.type, enabled=False):
            return last(h.to(torch.promote_types(h.dtype, torch.float32)))

    def params_at(self, x: torch.Tensor, features: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Parameters at the positions (rows[p], cols[p]) only -> [B, P_out, P]; local heads only.

        Every layer after the masked convolution is 1x1, so a position needs only its own (2h+1)^2 patch:
        sampling costs one full forward pass in total instead of one per pixel."""
        assert not self.full, "params_at needs a local head"
        b = x.shape[0]
        feats = features[:, :, rows, cols]                                      # [B, F, P]
        h = self.feature_conv(feats[..., None])                                 # [B, w/2, P, 1]
        if self.pixel_conv is None:
            px = h.new_zeros(b, self.pixel_channels, len(rows), 1)
        else:
            k = self.pixel_conv.kernel_size[0]
            xp = F.pad(x, (k // 2,) * 4)
            offs = torch.arange(k, device=x.device)
            r = (rows[:, None, None] + offs[None, :, None]).expand(-1, k, k)
            c = (cols[:, None, None] + offs[None, None, :]).expand(-1, k, k)
            patches = xp[:, :, r, c].permute(0, 2, 1, 3, 4).reshape(b, len(rows), -1)  # [B, P, C*k*k]
            w = (self.pixel_conv.weight * self.pixel_conv.mask).flatten(1)      # [w/2, C*k*k]
            px = (patches @ w.t()).permute(0, 2, 1)[..., None]
        return self._tail(F.relu(torch.cat([px, h], dim=1)))[..., 0]

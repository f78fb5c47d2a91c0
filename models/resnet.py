"""The colour encoder and decoder, layer for layer the official res_encoder / res_decoder (ELU, BatchNorm).

Encoder: three blocks, each halving the resolution by average pooling, 32 -> 4. The shortcut stream starts as a 3x3
convolution of the image and is only pooled; the residual stream starts as another 3x3 convolution and runs through
BatchNorm-ELU-conv from block to block, added onto the shortcut after each block (the official code carries the
residual stream across blocks rather than restarting it from the sum, and so does this one). Then BatchNorm, ELU.
Decoder: a linear map to a 4x4 grid, three blocks that double the resolution with 4x4 stride-2 transposed
convolutions (BN-ELU-up, BN-ELU-5x5, BN-ELU-1x1 on the residual path, an up-convolution on the shortcut), then
BatchNorm, ELU and a 3x3 convolution to the feature map that the PixelCNN head reads.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class ResNetEncoder(nn.Module):
    """[B, C, H, W] -> [B, channels * H/8 * W/8] features for the posterior heads."""

    def __init__(self, in_channels: int, channels: int, blocks: int = 3):
        super().__init__()
        self.blocks = blocks
        self.residual_in = nn.Conv2d(in_channels, channels, 3, 1, 1)
        self.shortcut_in = nn.Conv2d(in_channels, channels, 3, 1, 1)
        self.convs = nn.ModuleList([nn.Conv2d(channels, channels, 3, 1, 1) for _ in range(2 * blocks - 1)])
        self.norms = nn.ModuleList([nn.BatchNorm2d(channels) for _ in range(2 * blocks - 1)])
        self.norm_out = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, s = self.residual_in(x), self.shortcut_in(x)
        for i in range(self.blocks):
            if i > 0:
                r = self.convs[2 * i - 1](F.elu(self.norms[2 * i - 1](r)))
            r = self.convs[2 * i](F.elu(self.norms[2 * i](F.avg_pool2d(r, 2))))
            s = F.avg_pool2d(s, 2) + r
        return F.elu(self.norm_out(s)).flatten(1)


class ResNetDecoder(nn.Module):
    """z [B, Z] -> a [B, feature_channels, H, W] feature map for the PixelCNN head."""

    def __init__(self, z_dim: int, channels: int, feature_channels: int, image_hw: tuple[int, int], blocks: int = 3):
        super().__init__()
        self.base = (image_hw[0] >> blocks, image_hw[1] >> blocks)
        self.channels = channels
        self.fc = nn.Linear(z_dim, channels * self.base[0] * self.base[1])
        self.ups = nn.ModuleList([nn.ConvTranspose2d(channels, channels, 4, 2, 1) for _ in range(2 * blocks)])
        self.convs5 = nn.ModuleList([nn.Conv2d(channels, channels, 5, 1, 2) for _ in range(blocks)])
        self.convs1 = nn.ModuleList([nn.Conv2d(channels, channels, 1, 1) for _ in range(blocks)])
        self.norms = nn.ModuleList([nn.BatchNorm2d(channels) for _ in range(3 * blocks)])
        self.norm_out = nn.BatchNorm2d(channels)
        self.out = nn.Conv2d(channels, feature_channels, 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(len(z), self.channels, *self.base)
        for i in range(len(self.convs5)):
            r = self.ups[2 * i](F.elu(self.norms[3 * i](x)))
            r = self.convs5[i](F.elu(self.norms[3 * i + 1](r)))
            r = self.convs1[i](F.elu(self.norms[3 * i + 2](r)))
            x = self.ups[2 * i + 1](x) + r
        return self.out(F.elu(self.norm_out(x)))

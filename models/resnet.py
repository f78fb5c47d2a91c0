"""The colour encoder and decoder: ResNets of `channels` width, three blocks each way, 32 -> 4 -> 32.

Each encoder block halves the resolution and each decoder block doubles it (nearest upsampling), with a
BatchNorm-ReLU-conv residual path and a 1x1 shortcut where the shape changes."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, scale: float = 1.0):
        super().__init__()
        self.scale = scale  # 0.5: downsample by 2; 2.0: upsample by 2
        stride = 2 if scale < 1 else 1
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = nn.Conv2d(cin, cout, 1, stride=stride, bias=False) if scale != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale > 1:
            x = F.interpolate(x, scale_factor=self.scale, mode="nearest")
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.skip(x))


class ResNetEncoder(nn.Module):
    """[B, C, 32, 32] -> [B, channels * 4 * 4] features for the posterior heads."""

    def __init__(self, in_channels: int, channels: int, blocks: int = 3):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.blocks = nn.Sequential(*[ResBlock(channels, channels, 0.5) for _ in range(blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x)).flatten(1)


class ResNetDecoder(nn.Module):
    """z [B, Z] -> a [B, feature_channels, H, W] feature map for the PixelCNN head."""

    def __init__(self, z_dim: int, channels: int, feature_channels: int, image_hw: tuple[int, int], blocks: int = 3):
        super().__init__()
        self.base = (image_hw[0] >> blocks, image_hw[1] >> blocks)
        self.channels = channels
        self.fc = nn.Linear(z_dim, channels * self.base[0] * self.base[1])
        self.blocks = nn.Sequential(*[ResBlock(channels, channels, 2.0) for _ in range(blocks)])
        self.out = nn.Conv2d(channels, feature_channels, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc(z)).view(len(z), self.channels, *self.base)
        return self.out(self.blocks(h))

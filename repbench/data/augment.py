"""Training-time augmentation on uint8 batches, vectorized and driven by an explicit generator."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """CIFAR-10's augmentation: a random crop of the image zero-padded by `pad` pixels, then a horizontal flip
    with probability 1/2, independently per image. uint8 [B, C, H, W] in and out."""
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    # drawn on the CPU (the same crops on every device), then one copy that does not wait for the device
    draws = torch.stack([torch.randint(0, n, (b,), generator=generator) for n in (2 * pad + 1, 2 * pad + 1, 2)])
    dy, dx, flip = draws.to(x.device, non_blocking=True)
    rows = dy[:, None] + torch.arange(h, device=x.device)                      # [B, H]
    cols = dx[:, None] + torch.arange(w, device=x.device)                      # [B, W]
    cols = torch.where(flip[:, None].bool(), cols.flip(1), cols)
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
    return out.permute(0, 3, 1, 2).contiguous()

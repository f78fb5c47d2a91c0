"""A linear autoencoder as a repbench learner: the smallest complete example of the learner contract.

Subclassing `repbench.TorchLearner` gives options and presets, the one training loop (checkpoints, resume, NaN
guard), save/load and batching; a learner supplies a config dataclass, its presets, a module and a loss.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

import repbench


@dataclass(frozen=True)
class LinearAEConfig:
    d: int = 16           # code size


class LinearAEModule(nn.Module):
    def __init__(self, num_dims: int, d: int):
        super().__init__()
        self.encode = nn.Linear(num_dims, d)
        self.decode = nn.Linear(d, num_dims)


class LinearAE(repbench.TorchLearner):
    """Linear autoencoder (example plugin): x -> Wx + b -> reconstruction, Gaussian likelihood."""
    name = "linear-ae"
    config_class = LinearAEConfig
    presets = {"smoke": LinearAEConfig(d=8), "quick": LinearAEConfig(), "medium": LinearAEConfig(),
               "paper": LinearAEConfig(d=32)}

    def build_module(self) -> nn.Module:
        return LinearAEModule(self.num_dims, self.config.d)

    def loss(self, module, x_uint8):
        """Mean negative log-likelihood in nats per image under a unit-variance Gaussian."""
        x = x_uint8.float().flatten(1) / 127.5 - 1
        err = x - module.decode(module.encode(x))
        return (0.5 * err.pow(2).sum(1) + 0.5 * x.shape[1] * math.log(2 * math.pi)).mean()

    def represent(self, x, kind="mean"):
        self.check_kind(kind)  # deterministic: "mean" only
        return self.batched(lambda xb: self.module.encode(xb.float().flatten(1) / 127.5 - 1), x)

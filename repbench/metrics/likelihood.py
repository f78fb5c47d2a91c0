"""Likelihood in bits per dimension."""
from __future__ import annotations

import math

import torch

from . import describe

describe("bpd", "bits/dim", False, "test-set negative ELBO with one posterior sample, in bits per dimension")
describe("train_loss", "bits/dim", False, "training negative ELBO (epoch average), in bits per dimension")
describe("test_loss", "bits/dim", False, "test negative ELBO after each epoch, in bits per dimension")


def nats_to_bits_per_dim(nats: torch.Tensor | float, num_dims: int) -> torch.Tensor | float:
    """Convert a per-image quantity in nats to bits per dimension: nats / (D ln 2)."""
    return nats / (num_dims * math.log(2.0))


def bits_per_dim(nll_nats: torch.Tensor, kl_nats: torch.Tensor, num_dims: int) -> float:
    """Average negative ELBO over images, in bits/dim. `nll_nats` and `kl_nats` are per image, shape [N]."""
    return float(nats_to_bits_per_dim((nll_nats.double() + kl_nats.double()).mean(), num_dims))

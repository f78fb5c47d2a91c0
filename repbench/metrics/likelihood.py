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


describe("bpd_iw", "bits/dim", False, "importance-weighted bound on the test negative log-likelihood with k samples")


def importance_weighted_bits_per_dim(log_weights: torch.Tensor, num_dims: int) -> float:
    """-log p(x) bound from k importance weights per image, log w = log p(x|z) + log p(z) - log q(z|x),
    shape [k, N]: -mean_N log mean_k w, in bits/dim. Never above `sampled_elbo_bits_per_dim` of the same weights."""
    k = log_weights.shape[0]
    bound = torch.logsumexp(log_weights.double(), dim=0) - math.log(k)
    return float(nats_to_bits_per_dim(-bound.mean(), num_dims))


def sampled_elbo_bits_per_dim(log_weights: torch.Tensor, num_dims: int) -> float:
    """The ELBO estimated from the same weights (mean over samples and images), in bits/dim."""
    return float(nats_to_bits_per_dim(-log_weights.double().mean(), num_dims))

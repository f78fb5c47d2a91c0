"""Likelihood in bits per dimension: the single-sample negative ELBO and the importance-weighted bound."""
from __future__ import annotations

import math

import torch

from . import register_curve, register_metric


def nats_to_bits_per_dim(nats: torch.Tensor | float, num_dims: int) -> torch.Tensor | float:
    """Convert a per-image quantity in nats to bits per dimension: nats / (D ln 2)."""
    return nats / (num_dims * math.log(2.0))


def bits_per_dim(nll_nats: torch.Tensor, kl_nats: torch.Tensor, num_dims: int) -> float:
    """Average negative ELBO over images, in bits/dim. `nll_nats` and `kl_nats` are per image, shape [N]."""
    return float(nats_to_bits_per_dim((nll_nats.double() + kl_nats.double()).mean(), num_dims))


def importance_weighted_bits_per_dim(log_weights: torch.Tensor, num_dims: int) -> float:
    """-log p(x) bound from k importance weights per image, log w = log p(x|z) + log p(z) - log q(z|x),
    shape [k, N]: -mean_N log mean_k w, in bits/dim. Never above `sampled_elbo_bits_per_dim` of the same weights."""
    k = log_weights.shape[0]
    bound = torch.logsumexp(log_weights.double(), dim=0) - math.log(k)
    return float(nats_to_bits_per_dim(-bound.mean(), num_dims))


def sampled_elbo_bits_per_dim(log_weights: torch.Tensor, num_dims: int) -> float:
    """The ELBO estimated from the same weights (mean over samples and images), in bits/dim."""
    return float(nats_to_bits_per_dim(-log_weights.double().mean(), num_dims))


# ------------------------------------------------------------------------------------------ battery entries
def _elbo_samples(cfg) -> dict:
    # One likelihood pass serves both bounds: with bpd_iw asked for, bpd averages the single-sample ELBO over
    # the same k draws (the same quantity, with less variance), so k is part of how bpd was measured.
    return {"elbo_samples": cfg.iw_samples if "bpd_iw" in cfg.metrics else 1}


@register_metric("bpd", unit="bits/dim", direction="lower", needs=("likelihood",), digits=3, summary=0,
                 settings_of=_elbo_samples, version=1,
                 description="test-set negative ELBO with one posterior sample (averaged over draws), bits/dim")
def _bpd(inputs, cfg, generator):
    lik = inputs.likelihood(_elbo_samples(cfg)["elbo_samples"], generator)
    return {"bpd": float(nats_to_bits_per_dim(lik.neg_elbo_nats.double().mean(), lik.num_dims))}


@register_metric("bpd_iw", unit="bits/dim", direction="lower", needs=("likelihood",), digits=3,
                 settings=("iw_samples",), version=1,
                 description="importance-weighted bound on the test negative log-likelihood with k samples")
def _bpd_iw(inputs, cfg, generator):
    if cfg.iw_samples < 2:
        return {"bpd_iw": None}
    lik = inputs.likelihood(cfg.iw_samples, generator)
    return {"bpd_iw": importance_weighted_bits_per_dim(lik.log_weights, lik.num_dims)}


register_curve("train_loss", unit="bits/dim", direction="lower",
               description="training loss, epoch average: bits/dim for likelihood learners (the negative ELBO of "
                           "the VAE family), the objective's own value for others (contrastive, adversarial)")
register_curve("test_loss", unit="bits/dim", direction="lower",
               description="test loss after each epoch (units as train_loss)")

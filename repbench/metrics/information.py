"""Information in the latent: KL to the prior (the paper's I(X;Z) estimate) and posterior entropy, in nats."""
from __future__ import annotations

import math

import torch

from . import register_curve, register_metric


def gaussian_kl(mean1: torch.Tensor, std1: torch.Tensor, mean2: torch.Tensor, std2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, std1^2) || N(mean2, std2^2)) for diagonal Gaussians, summed over the last axis, in nats."""
    var_ratio = (std1 / std2) ** 2
    t = ((mean1 - mean2) / std2) ** 2
    return 0.5 * (var_ratio + t - 1.0 - torch.log(var_ratio)).sum(-1)


def kl_to_standard_normal(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, std^2) || N(0, I)) per row, in nats; the analytic KL term of the ELBO."""
    return 0.5 * (mean ** 2 + std ** 2 - 1.0).sum(-1) - torch.log(std).sum(-1)


def mutual_info(mean: torch.Tensor, std: torch.Tensor) -> float:
    """Average KL(q(z|x) || p(z)) over the rows of `mean`, `std` [N, Z], in nats."""
    return float(kl_to_standard_normal(mean.double(), std.double()).mean())


def cond_entropy(std: torch.Tensor) -> float:
    """Average entropy of the diagonal Gaussian posteriors with stds [N, Z], in nats."""
    z = std.shape[-1]
    return float((0.5 * z * (1.0 + math.log(2 * math.pi)) + torch.log(std.double()).sum(-1)).mean())


# ------------------------------------------------------------------------------------------ battery entries
# Neither direction: the paper's point is that a smaller latent information can make a better representation.
@register_metric("mutual_info", unit="nats", direction="neither", needs=("posterior",), digits=2, summary=1,
                 version=1,
                 description="mean over test images of KL(q(z|x) || N(0, I)), the paper's I(X;Z) estimate")
def _mutual_info(inputs, cfg, generator):
    return {"mutual_info": mutual_info(inputs.reps["test"]["mean"], inputs.reps["test"]["std"])}


@register_metric("cond_entropy", unit="nats", direction="neither", needs=("posterior",), digits=2, version=1,
                 description="mean over test images of the entropy of q(z|x)")
def _cond_entropy(inputs, cfg, generator):
    return {"cond_entropy": cond_entropy(inputs.reps["test"]["std"])}


register_curve("test_mutual_info", unit="nats", direction="neither", digits=2,
               description="mutual_info of the test images during training (the training curves)")

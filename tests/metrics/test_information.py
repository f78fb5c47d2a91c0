import math

import torch

from repbench.metrics import cond_entropy, gaussian_kl, kl_to_standard_normal, mutual_info


def test_kl_of_identical_gaussians_is_zero():
    g = torch.Generator().manual_seed(0)
    mean, std = torch.randn(20, 8, generator=g), torch.rand(20, 8, generator=g) + 0.1
    assert torch.allclose(gaussian_kl(mean, std, mean, std), torch.zeros(20), atol=1e-6)
    assert mutual_info(torch.zeros(50, 16), torch.ones(50, 16)) == 0.0


def test_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(1)
    mean, std = torch.randn(30, 5, generator=g, dtype=torch.float64), torch.rand(30, 5, generator=g, dtype=torch.float64) + 0.05
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mean, std),
                                            torch.distributions.Normal(0.0, 1.0)).sum(-1)
    assert torch.allclose(kl_to_standard_normal(mean, std), ref, atol=1e-12)
    assert mutual_info(mean, std) == float(ref.mean())


def test_mutual_info_closed_form():
    # KL(N(m, s^2) || N(0, 1)) = (m^2 + s^2 - 1)/2 - log s, per dimension
    mean, std = torch.tensor([[3.0, 0.0]]), torch.tensor([[1.0, 0.5]])
    expected = (9 + 1 - 1) / 2 + (0 + 0.25 - 1) / 2 - math.log(0.5)
    assert abs(mutual_info(mean, std) - expected) < 1e-6


def test_cond_entropy_of_standard_normal():
    z = 4
    assert abs(cond_entropy(torch.ones(3, z)) - 0.5 * z * math.log(2 * math.pi * math.e)) < 1e-12

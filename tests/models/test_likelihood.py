"""The discretized mixture of logistics, against known answers."""
import math

import pytest
import torch

from repbench_models.dmol import dmol_log_prob, dmol_sample

K = 10
LEVELS = torch.arange(256, dtype=torch.float64) / 127.5 - 1


def random_params(n, scale_shift=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, K, 1, 1, generator=g, dtype=torch.float64) * 2
    means = torch.rand(n, K, 1, 1, generator=g, dtype=torch.float64) * 2.4 - 1.2
    log_s = torch.rand(n, K, 1, 1, generator=g, dtype=torch.float64) * 6 - 6 + scale_shift
    return torch.cat([logits, means, log_s], 1)


@pytest.mark.parametrize("shift", [-3.0, 0.0, 4.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_probabilities_sum_to_one_over_256_levels(shift, dtype):
    params = random_params(5, shift).to(dtype)
    x = LEVELS.to(dtype).view(256, 1, 1, 1)
    logp = torch.stack([dmol_log_prob(x, p.expand(256, -1, -1, -1), K)[:, 0, 0, 0] for p in params])
    total = torch.logsumexp(logp.double(), dim=1).exp()
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert torch.allclose(total, torch.ones(5, dtype=torch.float64), atol=tol), total


def test_matches_direct_logistic_cdf_differences():
    params = random_params(3)
    logits, means, log_s = params.split(K, dim=1)
    cdf = lambda v: torch.sigmoid((v - means) / log_s.exp())
    weights = torch.softmax(logits, 1)
    for level in (0, 1, 77, 128, 254, 255):
        x = LEVELS[level]
        upper = cdf(x + 1 / 255) if level < 255 else torch.ones_like(means)
        lower = cdf(x - 1 / 255) if level > 0 else torch.zeros_like(means)
        direct = torch.log((weights * (upper - lower)).sum(1))
        got = dmol_log_prob(x.view(1, 1, 1, 1).expand(3, 1, 1, 1), params, K)
        assert torch.allclose(got[:, 0], direct, rtol=1e-9, atol=1e-12), level


def test_sampling_matches_the_probabilities():
    """Pearson's chi-square of 200,000 draws against the pmf stays within 5 sigma of its degrees of freedom."""
    params = random_params(1, seed=3).float()
    n = 200_000
    draws = dmol_sample(params.expand(n, -1, -1, -1), K, torch.Generator().manual_seed(0))
    observed = torch.bincount(torch.round((draws.flatten() + 1) * 127.5).long(), minlength=256).double()
    pmf = dmol_log_prob(LEVELS.view(256, 1, 1, 1).float(), params.expand(256, -1, -1, -1), K).flatten().exp().double()
    expected = pmf / pmf.sum() * n
    keep = expected > 5
    chi2 = ((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    df = int(keep.sum()) - 1
    assert df > 100 and chi2 < df + 5 * math.sqrt(2 * df), (float(chi2), df)


@pytest.mark.parametrize("log_scale", [-7.0, -2.0, 0.0, 6.0, 12.0, 30.0])
def test_gradients_are_finite_at_extreme_scales(log_scale):
    """Regression: a wide unused component once gave NaN gradients through torch.where's other branch."""
    params = random_params(256).float()
    params[:, 2 * K:] = log_scale
    params.requires_grad_()
    x = LEVELS.float().view(256, 1, 1, 1)  # every level, edges included
    logp = dmol_log_prob(x, params, K)
    (grad,) = torch.autograd.grad(logp.sum(), params)
    assert torch.isfinite(logp).all() and torch.isfinite(grad).all()

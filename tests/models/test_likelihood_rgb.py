"""The RGB mixture with linear autoregression across channels, against known answers."""
import math

import pytest
import torch

from repbench.metrics import bits_per_dim
from repbench_models.dmol import dmol_log_prob, dmol_sample

K = 10
LEVELS = torch.arange(256) / 127.5 - 1


def random_rgb_params(n=1, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, K, generator=g) * 2
    means = torch.rand(n, 3 * K, generator=g) * 2.4 - 1.2
    log_s = torch.rand(n, 3 * K, generator=g) * 5 - 5.5
    coeffs = torch.randn(n, 3 * K, generator=g)
    return torch.cat([logits, means, log_s, coeffs], 1).to(dtype)[..., None, None]  # [n, 10K, 1, 1]


def colour_cube(reds: torch.Tensor) -> torch.Tensor:
    """Every colour with red in `reds`: [len(reds), 3, 256, 256], green down the rows, blue across."""
    n = len(reds)
    r = reds.view(n, 1, 1).expand(n, 256, 256)
    g = LEVELS.view(1, 256, 1).expand(n, 256, 256)
    b = LEVELS.view(1, 1, 256).expand(n, 256, 256)
    return torch.stack([r, g, b], 1)


def test_one_pixel_sums_to_one_over_all_256_cubed_colours():
    """One pixel's parameters broadcast over a 256 x 256 image of colours, 16 red levels per call."""
    params = random_rgb_params()
    total = torch.zeros((), dtype=torch.float64)
    with torch.inference_mode():
        for reds in LEVELS.split(16):
            total += dmol_log_prob(colour_cube(reds), params, K).sum(1).double().exp().sum()
    assert abs(float(total) - 1.0) < 2e-5, float(total)


def test_channels_are_exact_conditionals_of_the_direct_joint():
    params = random_rgb_params(dtype=torch.float64)
    p = params[0, :, 0, 0]
    logits, means, log_s, coeffs = p[:K], p[K:4 * K].view(3, K), p[4 * K:7 * K].view(3, K), torch.tanh(p[7 * K:].view(3, K))
    weights = torch.softmax(logits, 0)

    def bin_mass(v, mean, s):
        upper = torch.sigmoid((v + 1 / 255 - mean) / s) if v < 0.999 else torch.ones_like(mean)
        lower = torch.sigmoid((v - 1 / 255 - mean) / s) if v > -0.999 else torch.zeros_like(mean)
        return upper - lower
    for levels in [(0, 128, 255), (17, 17, 200), (255, 0, 3)]:
        r, g, b = (LEVELS[v].double() for v in levels)
        s = log_s.exp()
        pr = bin_mass(r, means[0], s[0])
        pg = bin_mass(g, means[1] + coeffs[0] * r, s[1])
        pb = bin_mass(b, means[2] + coeffs[1] * r + coeffs[2] * g, s[2])
        joint = (weights * pr * pg * pb).sum()
        x = torch.stack([r, g, b]).view(1, 3, 1, 1)
        got = dmol_log_prob(x, params, K)[0, :, 0, 0]
        assert torch.isclose(got.sum(), joint.log(), rtol=1e-9), levels
        assert torch.isclose(got[0], (weights * pr).sum().log(), rtol=1e-9), levels  # the red marginal


def test_sampling_matches_the_joint_probabilities():
    """Chi-square of 100,000 draws against the exact probabilities of the 64 most likely colours and the rest."""
    params = random_rgb_params(seed=4)
    n = 100_000
    draws = dmol_sample(params.expand(n, -1, -1, -1), K, torch.Generator().manual_seed(0))
    codes = torch.round((draws[:, :, 0, 0] + 1) * 127.5).long() @ torch.tensor([65536, 256, 1])
    values, counts = torch.unique(codes, return_counts=True)
    top = values[counts.argsort(descending=True)[:64]]
    x = torch.stack([top // 65536, top // 256 % 256, top % 256], 1).float().div(127.5).sub(1).view(-1, 3, 1, 1)
    expected = dmol_log_prob(x, params.expand(len(x), -1, -1, -1), K).sum(1).flatten().double().exp() * n
    observed = torch.stack([(codes == v).sum() for v in top]).double()
    rest_e, rest_o = n - expected.sum(), n - observed.sum()
    chi2 = ((observed - expected) ** 2 / expected).sum() + (rest_o - rest_e) ** 2 / rest_e
    assert expected.min() > 5 and chi2 < 64 + 5 * math.sqrt(2 * 64), float(chi2)


def test_uniform_colour_likelihood_is_exactly_8_bits_per_dim():
    d = 3 * 32 * 32
    nll = torch.full((4,), d * math.log(256.0), dtype=torch.float64)
    assert bits_per_dim(nll, torch.zeros(4), d) == 8.0


@pytest.mark.parametrize("log_scale", [-7.0, 0.0, 12.0])
def test_gradients_are_finite_at_extreme_scales(log_scale):
    params = random_rgb_params(256).clone()
    params[:, 4 * K:7 * K] = log_scale
    params.requires_grad_()
    x = torch.stack([LEVELS, LEVELS.flip(0), LEVELS.roll(7)], 1).view(256, 3, 1, 1)
    logp = dmol_log_prob(x, params, K)
    (grad,) = torch.autograd.grad(logp.sum(), params)
    assert torch.isfinite(logp).all() and torch.isfinite(grad).all()

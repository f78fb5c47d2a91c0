"""`elbo_terms` agrees with a computation written out from the definitions, on a tiny model."""
import torch

from repbench.testing import tiny


def direct_nll(params: torch.Tensor, x: torch.Tensor, k: int) -> torch.Tensor:
    """-sum over pixels of log sum_k pi_k (CDF_k(x + 1/255) - CDF_k(x - 1/255)), edges open."""
    logits, means, log_s = params.split(k, dim=1)
    s = log_s.clamp(min=-7).exp()
    cdf = lambda v: torch.sigmoid((v - means) / s)
    upper = torch.where(x > 0.999, torch.ones_like(means), cdf(x + 1 / 255))
    lower = torch.where(x < -0.999, torch.zeros_like(means), cdf(x - 1 / 255))
    p = (torch.softmax(logits, 1) * (upper - lower)).sum(1)
    return -torch.log(p).sum((1, 2))


def test_elbo_terms_match_direct_computation(synthetic):
    for name in ("vae", "lpvae", "fpvae"):
        learner = tiny(name)
        learner.fitted = True  # the formulas on untrained weights: the API refuses an unfitted learner otherwise
        module = learner.module.double().eval()
        x = synthetic.test_x[:6].double() / 127.5 - 1
        mean, std = module.posterior(x)
        z = mean + std * torch.randn(mean.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        terms = learner.elbo_terms(x, z)
        nll = direct_nll(module.decoder_params(x, z), x, learner.config.n_mix)
        kl = torch.distributions.kl_divergence(torch.distributions.Normal(mean, std),
                                               torch.distributions.Normal(0.0, 1.0)).sum(-1)
        assert torch.allclose(terms["nll_nats"], nll, rtol=1e-10), name
        assert torch.allclose(terms["kl_nats"], kl, rtol=1e-10), name
        assert terms["nll_nats"].shape == (6,) and (terms["nll_nats"] > 0).all()


def test_uint8_and_unit_inputs_agree(synthetic):
    learner = tiny("lpvae", h=1)
    learner.fitted = True  # untrained weights on purpose
    learner.module.eval()
    x8 = synthetic.test_x[:4]
    m8, s8 = learner.posterior(x8)
    mf, sf = learner.posterior(x8.float() / 127.5 - 1)
    assert torch.equal(m8, mf) and torch.equal(s8, sf)

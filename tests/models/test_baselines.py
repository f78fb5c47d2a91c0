"""Baselines through the same battery as the VAE family; inapplicable metrics are n/a, never zero."""
import pytest
import torch

import repbench
from repbench.measure.battery import BatteryConfig, run_battery
from repbench.errors import RepbenchError

from repbench.testing import tiny

FAST = BatteryConfig(probe_seeds=1, iw_samples=2, test_samples=5, nonlinear_epochs=2)
DETERMINISTIC = ["raw", "pca", "random", "ae"]


@pytest.mark.parametrize("name", DETERMINISTIC + ["beta-vae"])
def test_baseline_through_the_battery_on_synthetic(name, synthetic):
    learner = tiny(name, epochs=1, batch_size=50).fit(synthetic.train_x, progress=False)
    res = run_battery(learner, synthetic, FAST, progress=False)
    m = res.metrics
    assert m["linear_probe"] is not None and 0 <= m["linear_probe"] <= 100
    assert m["intrinsic_dim"] >= 1
    if name in DETERMINISTIC:
        assert m["bpd"] is None and m["bpd_iw"] is None and m["mutual_info"] is None
        assert set(res.probes["linear_probe"]) == {"mean"}
    else:
        assert m["bpd"] > 0 and m["mutual_info"] > 0


@pytest.mark.parametrize("name", DETERMINISTIC + ["beta-vae"])
def test_baselines_on_mnist5k_smoke(name):
    """Real digits, smoke preset (300 training images, 1 epoch where training is involved)."""
    data = repbench.load_dataset("mnist5k")
    learner = repbench.create_learner(name, preset="smoke")
    data = data.limit(learner.train_config.train_limit, 500)
    learner.fit(data.train_x, progress=False)
    res = run_battery(learner, data, BatteryConfig(metrics=("bpd", "linear_probe"), probe_seeds=1, iw_samples=2),
                      progress=False)
    # chance is 10%; beta-vae after one smoke epoch with the official head (h = 0 feeds half the width) sits near 30
    floor = {"raw": 70, "pca": 70, "random": 40, "ae": 30, "beta-vae": 25}[name]
    assert res.metrics["linear_probe"] > floor, res.metrics
    assert (res.metrics["bpd"] is None) == (name in DETERMINISTIC)


def test_pca_components_are_the_top_eigenvectors(synthetic):
    learner = repbench.create_learner("pca", preset="smoke", image_shape=(1, 12, 12), d=5,
                                      train_limit=len(synthetic.train_x)).fit(synthetic.train_x)
    x = synthetic.train_x.float().flatten(1) / 127.5 - 1
    reps = learner.represent(synthetic.train_x).double()
    var = reps.var(0)
    top = torch.linalg.eigvalsh(torch.cov(x.T.double())).flip(0)[:5]
    assert torch.allclose(var, top, rtol=1e-3) and torch.allclose(reps.mean(0), torch.zeros(5, dtype=torch.float64),
                                                                   atol=1e-4)


def test_raw_is_the_pixels(synthetic):
    learner = tiny("raw").fit(synthetic.train_x)
    assert torch.allclose(learner.represent(synthetic.test_x[:3]), synthetic.test_x[:3].float().flatten(1) / 127.5 - 1)


def test_beta_weights_the_kl(synthetic):
    x = synthetic.train_x[:20]
    a, b = tiny("beta-vae", beta=1.0), tiny("beta-vae", beta=5.0)
    vae = tiny("vae")
    vae.fitted = True  # untrained weights on purpose: the API refuses an unfitted learner otherwise
    for m in (a, b, vae):
        m.module.eval()
    torch.manual_seed(0)
    la = a.loss(a.module, x)
    torch.manual_seed(0)
    lb = b.loss(b.module, x)
    torch.manual_seed(0)
    t = vae.elbo_terms(x)
    assert torch.allclose(la, (t["nll_nats"] + t["kl_nats"]).mean())
    assert torch.allclose(lb, (t["nll_nats"] + 5 * t["kl_nats"]).mean())


@pytest.mark.parametrize("opts,pattern", [({"beta": -1}, "beta must be"), ({"d": 0}, "needs d >= 1")])
def test_bad_baseline_options(opts, pattern):
    name = "beta-vae" if "beta" in opts else "pca"
    with pytest.raises(RepbenchError, match=pattern):
        repbench.create_learner(name, preset="smoke", **opts)


def test_deterministic_baselines_refuse_sampling(synthetic):
    learner = tiny("pca").fit(synthetic.train_x)
    with pytest.raises(RepbenchError, match="representation kinds mean"):
        learner.represent(synthetic.test_x, "sample")

"""Every registered learner, parametrized over the registry: a new learner is tested for free."""
import pytest
import torch

import repbench
from repbench.errors import RepbenchError

from repbench.testing import tiny

LEARNERS = repbench.list_learners()


@pytest.mark.parametrize("name", LEARNERS)
def test_trains_two_steps_and_represents(name, synthetic):
    learner = tiny(name, epochs=1, batch_size=50, train_limit=100)
    assert learner.fit(synthetic.train_x[:100], progress=False) is learner
    # closed-form learners (raw, pca, random) have no epochs; trained ones have one
    assert len(learner.history) in (0, 1) and all(torch.isfinite(torch.tensor(v)) for r in learner.history
                                                  for v in r.values())
    x = synthetic.test_x[:10]
    for kind in ("mean", "sample", "embedding"):
        if kind not in learner.kinds:
            with pytest.raises(RepbenchError, match="representation kinds"):
                learner.represent(x, kind)
            continue
        rep = learner.represent(x, kind)
        assert rep.ndim == 2 and len(rep) == 10 and torch.isfinite(rep).all(), kind
    with pytest.raises(RepbenchError):
        learner.represent(x, "no-such-kind")


@pytest.mark.parametrize("name", LEARNERS)
def test_unknown_option_names_the_valid_ones(name):
    with pytest.raises(RepbenchError, match="its options:"):
        repbench.create_learner(name, preset="smoke", no_such_option=1)


def test_lpvae_h0_is_the_vae(synthetic):
    a, b = tiny("vae"), tiny("lpvae", h=0)
    sa, sb = a.module.state_dict(), b.module.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("h", [-1, 1.5, "2", True])
def test_bad_h_is_refused(h):
    with pytest.raises(RepbenchError, match="h must be an integer >= 0"):
        repbench.create_learner("lpvae", preset="smoke", h=h)


def test_any_horizon_builds():
    for h in (1, 4, 7):
        learner = tiny("lpvae", h=h)
        assert learner.module.head.pixel_conv.kernel_size == (2 * h + 1, 2 * h + 1)


@pytest.mark.parametrize("name", ["vae", "lpvae", "fpvae"])
def test_sampling_gives_images(name):
    learner = tiny(name, image_shape=(1, 6, 6))
    g = torch.Generator().manual_seed(0)
    imgs = learner.sample(3, g)
    assert imgs.shape == (3, 1, 6, 6) and imgs.dtype == torch.uint8
    again = learner.sample(3, torch.Generator().manual_seed(0))
    assert torch.equal(imgs, again)


def test_local_sampling_uses_the_full_decoder_params():
    """Per-position decoding (used for sampling) equals the convolutional decoder at every pixel."""
    learner = tiny("lpvae", h=2, image_shape=(1, 7, 7))
    m = learner.module.eval()
    x, z = torch.rand(2, 1, 7, 7) * 2 - 1, torch.randn(2, learner.config.z_dim)
    with torch.inference_mode():
        full = m.decoder_params(x, z)
        feats = m.features(z)
        rows, cols = torch.meshgrid(torch.arange(7), torch.arange(7), indexing="ij")
        at = m.head.params_at(x, feats, rows.flatten(), cols.flatten())
    assert torch.allclose(at.view_as(full), full, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the GPU training path is not tested here")
@pytest.mark.parametrize("name", LEARNERS)
def test_trains_on_gpu(name, synthetic):
    learner = tiny(name, epochs=1, batch_size=50, train_limit=100, device="cuda")
    learner.fit(synthetic.train_x[:100], synthetic.test_x[:50], progress=False)
    assert next(learner.module.parameters()).is_cuda
    assert learner.represent(synthetic.test_x[:10], "mean").is_cuda


@pytest.mark.parametrize("name", LEARNERS)
def test_trains_and_represents_colour_images(name):
    """Every learner takes 3-channel images too (the VAE family with its ResNets and RGB likelihood)."""
    x = torch.randint(0, 256, (50, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    learner = tiny(name, image_shape=(3, 16, 16), epochs=1, batch_size=20)
    learner.fit(x[:40], x[40:], progress=False)
    rep = learner.represent(x[40:], "mean")
    assert rep.shape[0] == 10 and torch.isfinite(rep).all()
    if hasattr(learner, "sample"):
        images = learner.sample(2, torch.Generator().manual_seed(0))
        assert images.shape == (2, 3, 16, 16) and images.dtype == torch.uint8


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the GPU mixed-precision path is not tested here")
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_paper_preset_bf16_keeps_the_likelihood_in_float32(shape):
    learner = repbench.create_learner("lpvae", h=1, preset="paper", image_shape=shape, device="cuda")
    assert learner.autocast_dtype() == torch.bfloat16
    x = torch.randint(0, 256, (8, *shape), dtype=torch.uint8, device="cuda")
    model = learner.module.eval()
    z = torch.randn(8, learner.config.z_dim, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        params = model.decoder_params(x, z)
        mixed = model.pixel_log_prob(x, params).sum()
    full = model.pixel_log_prob(x, model.decoder_params(x, z)).sum()
    assert params.dtype == torch.float32 and mixed.dtype == torch.float32
    assert torch.isclose(mixed, full, rtol=2e-2)


WITH_POSTERIOR = [n for n in LEARNERS if {"posterior", "likelihood"} & set(repbench.LEARNERS.get(n).abilities)]


@pytest.mark.parametrize("name", WITH_POSTERIOR)
def test_posterior_and_kl_leave_bf16_autocast_in_float32(name, synthetic):
    """The paper preset trains under bf16 autocast on a GPU; the posterior's parameters, and so the KL of the loss
    and the mutual information, stay float32 (checked here with the CPU's bf16 autocast)."""
    learner = tiny(name, epochs=1, batch_size=50, train_limit=100).fit(synthetic.train_x[:100], progress=False)
    x = synthetic.test_x[:20]
    with torch.inference_mode():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mean, std = learner.posterior(x)
            kl = learner.elbo_terms(x, mean)["kl_nats"]
        full = learner.elbo_terms(x, learner.posterior(x)[0])["kl_nats"]
    assert mean.dtype == std.dtype == kl.dtype == torch.float32
    assert torch.allclose(kl, full, rtol=0.05, atol=0.05)  # the same KL, from bf16 matrix products


@pytest.mark.parametrize("name", LEARNERS)
def test_represent_checks_its_input(name, synthetic):
    learner = tiny(name, epochs=1, batch_size=50, train_limit=100)
    x = synthetic.test_x[:6]
    with pytest.raises(RepbenchError, match=f"learner '{name}' is not fitted"):
        learner.represent(x)
    learner.fit(synthetic.train_x[:100], progress=False)
    with pytest.raises(RepbenchError, match=r"images must be uint8 levels 0-255 .* got torch.float32"):
        learner.represent(x.float() / 255)
    with pytest.raises(RepbenchError, match=r"built for images \[N, 1, 12, 12\], got \[6, 12, 12\]"):
        learner.represent(x[:, 0])
    with pytest.raises(RepbenchError, match="an empty batch"):
        learner.represent(x[:0])
    with pytest.raises(RepbenchError, match="must be a torch tensor or numpy array"):
        learner.represent(x.tolist())
    assert torch.equal(learner.represent(x.numpy()), learner.represent(x))  # numpy arrays are taken as they are

"""The m2 learner (the paper's Section 6): its bounds, its use of labels, its decoder's receptive field."""
import math

import pytest
import torch
import torch.nn.functional as F

import repbench
from repbench.data.datasets import labelled_subset, make_synthetic
from repbench.errors import RepbenchError
from repbench.testing import check_learner, tiny

Normal = torch.distributions.Normal


def unit(x_uint8: torch.Tensor) -> torch.Tensor:
    return x_uint8.double() / 127.5 - 1


def direct_elbo(m, x: torch.Tensor, y: int, eps: torch.Tensor) -> torch.Tensor:
    """ELBO(x, y) = log p(x|y, z) + log p(y) - KL(q(z|x, y) || p(z)), z = mean + std * eps, written out."""
    ys = torch.full((len(x),), y)
    mean, std = m.q_z(x, ys)
    z = mean + std * eps
    code = torch.cat([z, F.one_hot(ys, m.classes).double()], dim=1)
    log_px = m.pixel_log_prob(x, m.decoder_params(x, code)).sum((1, 2, 3))
    kl = torch.distributions.kl_divergence(Normal(mean, std), Normal(0.0, 1.0)).sum(-1)
    return log_px - math.log(m.classes) - kl


# ------------------------------------------------------------------------------------------ the bounds
def test_unlabelled_bound_is_the_weighted_labelled_bounds_plus_the_entropy(synthetic):
    m = tiny("m2", h=1).module.double().eval()
    x = unit(synthetic.test_x[:5])
    eps = torch.randn(m.classes, len(x), m.cfg.z_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    elbo = torch.stack([direct_elbo(m, x, y, eps[y]) for y in range(m.classes)], dim=1)   # [B, K]
    q = torch.softmax(m.class_logits(x), dim=1)
    want = (q * elbo).sum(1) - (q * q.log()).sum(1)                   # sum_y q(y|x) ELBO(x, y) + H(q(y|x))
    assert torch.allclose(-m.unlabelled_loss(x, eps), want, rtol=1e-10)
    for y in range(m.classes):
        assert torch.allclose(-m.neg_elbo(x, torch.full((len(x),), y), eps[y]), elbo[:, y], rtol=1e-10)


def log_p_x_by_quadrature(m, x: torch.Tensor, grid: torch.Tensor):
    """log p(x) = log sum_y p(y) integral p(x|y, z) p(z) dz (z one-dimensional, trapezoid rule), and the exact
    expected unlabelled bound sum_y q(y|x) E_q(z|x,y)[log p(x, y, z) - log q(z|x, y)] + H(q(y|x))."""
    g, b, k = len(grid), len(x), m.classes
    dz = float(grid[1] - grid[0])
    log_trap = torch.full((g,), math.log(dz), dtype=torch.float64)
    log_trap[[0, -1]] -= math.log(2)
    xs = x.repeat_interleave(g, 0)
    z = grid.repeat(b)[:, None]
    q_y = torch.softmax(m.class_logits(x), dim=1)
    joint, bound = [], torch.zeros(b, dtype=torch.float64)
    for y in range(k):
        ys = torch.full((b * g,), y)
        code = torch.cat([z, F.one_hot(ys, k).double()], dim=1)
        log_px = m.pixel_log_prob(xs, m.decoder_params(xs, code)).sum((1, 2, 3)).view(b, g)
        joint.append(torch.logsumexp(log_px + Normal(0.0, 1.0).log_prob(grid) + log_trap, dim=1) - math.log(k))
        mean, std = m.q_z(x, ys[:b])
        q_z = Normal(mean, std).log_prob(grid).exp() * log_trap.exp()                       # [B, G] weights
        expected = (q_z * log_px).sum(1)
        kl = torch.distributions.kl_divergence(Normal(mean, std), Normal(0.0, 1.0)).sum(-1)
        bound += q_y[:, y] * (expected - math.log(k) - kl)
    bound -= (q_y * q_y.log()).sum(1)
    return torch.logsumexp(torch.stack(joint), dim=0), bound


def test_unlabelled_bound_is_below_the_exact_log_likelihood():
    """On a 2x2 image with a one-dimensional z, log p(x) is a sum over 3 classes of 1-D integrals."""
    learner = repbench.create_learner("m2", preset="smoke", image_shape=(1, 2, 2), z_dim=1, classes=3, h=1)
    m = learner.module.double().eval()
    x = unit(torch.tensor([[0, 255, 128, 30], [200, 10, 90, 255], [255, 255, 0, 0]], dtype=torch.uint8))
    x = x.view(-1, 1, 2, 2)
    with torch.no_grad():
        log_px, exact_bound = log_p_x_by_quadrature(m, x, torch.linspace(-10, 10, 8001, dtype=torch.float64))
        draws = 4000
        torch.manual_seed(0)
        mc = -m.unlabelled_loss(x.repeat(draws, 1, 1, 1)).view(draws, len(x))
    assert (exact_bound < log_px).all()
    mc_mean, mc_se = mc.mean(0), mc.std(0) / math.sqrt(draws)
    assert (mc_mean < log_px).all(), (mc_mean, log_px)
    assert ((mc_mean - exact_bound).abs() < 5 * mc_se + 1e-9).all(), (mc_mean, exact_bound, mc_se)


def test_likelihood_is_the_labelled_bound_at_the_guess(synthetic):
    """elbo_terms and posterior describe q(z|x, y_hat) and p(x, y_hat | z): -nll - kl is ELBO(x, y_hat)."""
    learner = tiny("m2", h=2)
    learner.fitted = True  # the bound on untrained weights: the API refuses an unfitted learner otherwise
    m = learner.module.double().eval()
    x = unit(synthetic.test_x[:6])
    y_hat = m.class_logits(x).argmax(1)
    mean, std = learner.posterior(x)
    eps = torch.randn(mean.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    terms = learner.elbo_terms(x, mean + std * eps)
    assert torch.allclose(terms["nll_nats"] + terms["kl_nats"], m.neg_elbo(x, y_hat, eps), rtol=1e-10)


# ------------------------------------------------------------------------------------------ labels
def test_cross_entropy_sees_only_labelled_images(synthetic):
    """In training mode too (BatchNorm on batch statistics): the classifier's cross-entropy gradient does not
    change with the unlabelled half of a batch, which it never reaches; the unlabelled bound does train it."""
    m = tiny("m2", h=1).module.double().train()
    labelled, y = unit(synthetic.train_x[16:24]), synthetic.train_y[16:24]

    def grads(term, unlabelled, labelled=labelled):
        u = unlabelled.clone().requires_grad_()
        torch.manual_seed(0)
        value = m.terms((u, labelled, y))[term].sum()
        params = list(m.classifier.parameters())
        out = torch.autograd.grad(value, params + [u], allow_unused=True)
        return out[:-1], out[-1]

    (g1, du1), (g2, _) = grads("cross_entropy", unit(synthetic.train_x[:8])), \
        grads("cross_entropy", unit(synthetic.train_x[8:16]))
    assert du1 is None and all(torch.equal(a, b) for a, b in zip(g1, g2))
    g3, _ = grads("cross_entropy", unit(synthetic.train_x[:8]), labelled=unit(synthetic.train_x[24:32]))
    assert not all(torch.equal(a, b) for a, b in zip(g1, g3))      # the labelled half does matter
    g_u, _ = grads("unlabelled", unit(synthetic.train_x[:8]))
    assert any(g is not None and g.abs().sum() > 0 for g in g_u)


def trained_state(x, y, labelled):
    learner = tiny("m2", epochs=1, batch_size=25).fit(x, progress=False, train_y=y, labelled=labelled)
    return learner.module.state_dict()


def test_labels_of_unlabelled_images_change_nothing(synthetic):
    x, y = synthetic.train_x[:100], synthetic.train_y[:100]
    idx = labelled_subset(y, 20, seed=0)
    others = torch.ones(len(y), dtype=torch.bool)
    others[idx] = False
    scrambled = y.clone()
    scrambled[others] = (y[others] + 1 + torch.arange(int(others.sum())) % 9) % 10
    learner = tiny("m2")
    a, b = learner.training_data(x, y, idx), learner.training_data(x, scrambled, idx)
    assert all(torch.equal(s, t) for s, t in zip(a, b))
    base = trained_state(x, y, idx)
    assert all(torch.equal(v, trained_state(x, scrambled, idx)[k]) for k, v in base.items())
    relabelled = y.clone()
    relabelled[idx[0]] = (y[idx[0]] + 1) % 10                      # a label that is used does change training
    assert not all(torch.equal(v, trained_state(x, relabelled, idx)[k]) for k, v in base.items())


def test_training_rows_pair_every_image_with_a_labelled_one(synthetic):
    x, y = synthetic.train_x[:100], synthetic.train_y[:100]
    idx = labelled_subset(y, 20, seed=0)
    learner = tiny("m2")
    images, lab_images, lab_y = learner.training_data(x, y, idx)
    assert torch.equal(images, x) and len(lab_images) == len(lab_y) == 100
    pos = {bytes(x[i].numpy()): i for i in idx.tolist()}
    assert all(pos[bytes(img.numpy())] in idx.tolist() and y[pos[bytes(img.numpy())]] == t
               for img, t in zip(lab_images, lab_y))
    assert torch.bincount(lab_y, minlength=10).tolist() == [10] * 10   # each labelled image 5 times
    assert learner._alpha == pytest.approx(0.1 * (20 + 100) / 20)
    assert tiny("m2", alpha_rule="text").alpha(20, 100) == pytest.approx(0.1 * 120 / 100)
    assert learner.training_data(x) is x                             # no labels: the unlabelled bound alone


# ------------------------------------------------------------------------------------------ the decoder
H = W = 9


def expected_local(h: int, i: int, j: int) -> set:
    rows = {(a, b) for a in range(i - h, i) for b in range(j - h, j + h + 1)}
    left = {(i, b) for b in range(j - h, j)}
    return {(a, b) for a, b in rows | left if 0 <= a < H and 0 <= b < W}


def dependencies(learner, i: int, j: int) -> set:
    """Pixels whose value changes the decoder's parameters at (i, j), for some of several random inputs."""
    torch.manual_seed(0)
    m = learner.module.double().eval()
    x = (torch.rand(4, 1, H, W, dtype=torch.float64) * 2 - 1).requires_grad_()
    code = m.code(torch.randn(4, m.cfg.z_dim, dtype=torch.float64), torch.randint(m.classes, (4,)))
    out = m.decoder_params(x, code)[:, :, i, j]
    (grad,) = torch.autograd.grad(out.pow(2).sum() + out.sum(), x, allow_unused=True)
    if grad is None:
        return set()
    return {(int(a), int(b)) for _, a, b in (grad.abs().sum(0) > 0).nonzero()}


@pytest.mark.parametrize("h", [0, 1, 2])
def test_local_receptive_field_is_exact(h):
    learner = tiny("m2", image_shape=(1, H, W), h=h)
    for i in range(H):
        for j in range(W):
            assert dependencies(learner, i, j) == expected_local(h, i, j), (i, j)


def test_full_pixelcnn_sees_only_the_raster_past():
    learner = tiny("m2", image_shape=(1, H, W), h=-1)
    assert learner.display_name == "m2-full-n20"
    for i in range(H):
        for j in range(W):
            deps = dependencies(learner, i, j)
            assert all(a < i or (a == i and b < j) for a, b in deps), (i, j)
    assert (H - 4, W - 4) in dependencies(learner, H - 1, W - 1)   # beyond any small horizon


# ------------------------------------------------------------------------------------------ the learner
def test_m2_conforms():
    dims = check_learner(lambda **kw: repbench.create_learner("m2", preset="smoke", **kw))
    assert dims["mean"] == 8 + 10                                    # [mean of q(z|x, y_hat), q(y|x)]


def test_a_few_steps_lower_the_loss():
    data = make_synthetic(n_train=200, n_test=50)
    learner = tiny("m2", epochs=4, batch_size=25)
    idx = labelled_subset(data.train_y, learner.label_budget, seed=0)

    def test_loss():
        module = learner.module.eval()        # built outside inference mode, so that it can be trained after
        torch.manual_seed(0)
        with torch.inference_mode():
            return float(learner.loss(module, data.test_x))
    before = test_loss()
    learner.fit(data.train_x, progress=False, train_y=data.train_y, labelled=idx)
    after = test_loss()
    assert after < before - 0.05 * abs(before), (before, after)


def test_options_are_checked_and_named():
    assert tiny("m2", h=2, labels=50).display_name == "m2-h2-n50"
    assert tiny("m2", labels=50).label_budget == 50
    for bad, match in [({"h": -2}, "h must be an integer >= -1"), ({"h": 13}, "wider than the image"),
                       ({"alpha_rule": "book"}, "alpha_rule must be one of code, text"),
                       ({"dropout": 1.0}, "dropout must be below 1"), ({"labels": 0}, "labels must be")]:
        with pytest.raises(RepbenchError, match=match):
            tiny("m2", **bad)
    with pytest.raises(RepbenchError, match="multiple of 16"):
        tiny("m2", image_shape=(3, 24, 24))
    x, y = make_synthetic(n_train=100).train_x, make_synthetic(n_train=100).train_y
    with pytest.raises(RepbenchError, match="built for 3 classes"):
        tiny("m2", classes=3).training_data(x, y, labelled_subset(y, 20, seed=0))


def test_colour_images_train_with_labels():
    x = torch.randint(0, 256, (60, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(60) % 10
    learner = tiny("m2", image_shape=(3, 16, 16), epochs=1, batch_size=20)
    learner.fit(x[:40], x[40:], progress=False, train_y=y[:40], labelled=labelled_subset(y[:40], 20, seed=0))
    assert learner.represent(x[40:]).shape == (20, 8 + 10)
    assert learner.sample(2, torch.Generator().manual_seed(0)).shape == (2, 3, 16, 16)


def test_paper_presets_are_table_6():
    mnist = repbench.create_learner("m2", preset="paper", image_shape=(1, 28, 28))
    svhn = repbench.create_learner("m2", preset="paper", image_shape=(3, 32, 32))
    assert (mnist.config.h, mnist.config.z_dim, mnist.train_config.epochs, mnist.train_config.batch_size) == \
        (1, 64, 50, 16)
    assert (svhn.config.h, svhn.config.z_dim, svhn.train_config.epochs, svhn.train_config.batch_size) == \
        (2, 64, 20, 32)
    code = svhn.module.code(torch.zeros(2, 64), torch.tensor([0, 3]))
    with torch.no_grad():
        params = svhn.module.eval().decoder_params(torch.zeros(2, 3, 32, 32), code)
    assert params.shape == (2, 100, 32, 32)                        # RGB mixture of 10 logistics

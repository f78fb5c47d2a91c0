"""The paper's peers (Table 4): dim, simclr, aae. Estimators and losses against values computed by hand, the
adversarial term, a few training steps, the conformance check, and option validation."""
import math

import pytest
import torch
from click.testing import CliRunner

import repbench
from repbench.cli import cli
from repbench.errors import RepbenchError
from repbench.testing import check_learner, tiny
from repbench_models.dim import infonce_mi, jsd_mi
from repbench_models.peers import adversarial_term, critic, critic_loss
from repbench_models.simclr import crop_resize, nt_xent

PEERS = ["dim", "simclr", "aae"]
LOG2 = math.log(2)


def softplus(t: float) -> float:
    return math.log1p(math.exp(t))


def scores(pos: float, neg: float, n: int, locs: int | None = None) -> torch.Tensor:
    """[N, N] (or [N, N, L]) scores: `pos` for the pairs from one image, `neg` for the pairs across images."""
    u = torch.full((n, n), neg) + torch.eye(n) * (pos - neg)
    return u if locs is None else u[:, :, None].expand(n, n, locs).clone()


# ------------------------------------------------------------------------------------------ MI estimators
def test_jsd_known_values():
    assert jsd_mi(torch.zeros(5, 5)).item() == pytest.approx(0, abs=1e-7)       # log 2 - softplus(0) twice
    assert jsd_mi(scores(40.0, -40.0, 6)).item() == pytest.approx(2 * LOG2, abs=1e-6)   # perfect separation
    assert jsd_mi(scores(40.0, -40.0, 6, locs=3)).item() == pytest.approx(2 * LOG2, abs=1e-6)
    assert jsd_mi(scores(-40.0, 40.0, 4)).item() < -70  # a critic that has it backwards: about -2 * 40
    u = torch.tensor([[1.0, 0.0], [-1.0, 2.0]])
    by_hand = ((LOG2 - softplus(-1)) + (LOG2 - softplus(-2))) / 2 - ((softplus(0) - LOG2) + (softplus(-1) - LOG2)) / 2
    assert jsd_mi(u).item() == pytest.approx(by_hand, abs=1e-6)


def test_infonce_known_values():
    assert infonce_mi(torch.zeros(5, 5)).item() == pytest.approx(0, abs=1e-6)
    assert infonce_mi(torch.zeros(5, 5, 3)).item() == pytest.approx(0, abs=1e-6)
    assert infonce_mi(scores(40.0, -40.0, 8)).item() == pytest.approx(math.log(8), abs=1e-6)   # log N
    # with L locations, each joint pair is told apart from (N - 1) L others: at most log((N - 1) L + 1)
    assert infonce_mi(scores(40.0, -40.0, 8, locs=4)).item() == pytest.approx(math.log(7 * 4 + 1), abs=1e-6)
    u = torch.tensor([[1.0, 0.0], [-1.0, 2.0]])
    by_hand = ((1 - math.log(math.e + 1)) + (2 - math.log(math.exp(2) + math.exp(-1)))) / 2 + LOG2
    assert infonce_mi(u).item() == pytest.approx(by_hand, abs=1e-6)


def test_infonce_local_negatives_are_every_location_of_the_other_images():
    u = torch.tensor([[[1.0, 3.0], [0.5, -2.0]],      # u[i, j, l]: Y_i with location l of image j
                      [[0.0, 1.0], [2.0, -1.0]]])
    def term(pos, negs):
        return pos - math.log(math.exp(pos) + sum(math.exp(v) for v in negs))
    by_hand = (term(1.0, [0.5, -2.0]) + term(3.0, [0.5, -2.0]) + term(2.0, [0.0, 1.0]) + term(-1.0, [0.0, 1.0])) / 4
    assert infonce_mi(u).item() == pytest.approx(by_hand + math.log(3), abs=1e-6)


@pytest.mark.parametrize("estimator,dependent_min,bound", [(jsd_mi, 0.6, 2 * LOG2), (infonce_mi, math.log(32) - 0.01,
                                                                                      math.log(32))])
def test_estimators_tell_dependent_from_independent_pairs(estimator, dependent_min, bound):
    """A dot-product critic on identical pairs (perfectly dependent) scores high, on independent pairs near 0."""
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(32, 512, generator=g), dim=1)
    y = torch.nn.functional.normalize(torch.randn(32, 512, generator=g), dim=1)
    dependent, independent = estimator(10 * x @ x.T).item(), estimator(10 * x @ y.T).item()
    assert dependent_min < dependent <= bound + 1e-6
    assert abs(independent) < 0.2


# ------------------------------------------------------------------------------------------ NT-Xent
@pytest.mark.parametrize("tau", [0.5, 1.0])
def test_nt_xent_two_pairs_by_hand(tau):
    e = torch.eye(2)
    # identical views: each view's partner has cosine 1, the two other views cosine 0
    assert nt_xent(e, e, tau).item() == pytest.approx(math.log(1 + 2 * math.exp(-1 / tau)), abs=1e-6)
    # swapped views: partners are orthogonal and one negative is identical; lengths do not matter
    assert nt_xent(3 * e, 0.5 * e.flip(0), tau).item() == pytest.approx(math.log(2 + math.exp(1 / tau)), abs=1e-6)


def test_nt_xent_matches_a_loop_over_the_four_views():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 5, generator=g), torch.randn(2, 5, generator=g)
    views = [v / v.norm() for v in (a[0], a[1], b[0], b[1])]
    partner = {0: 2, 1: 3, 2: 0, 3: 1}
    total = 0.0
    for k in range(4):
        sims = {m: float(views[k] @ views[m]) / 0.3 for m in range(4) if m != k}
        total += -(sims[partner[k]] - math.log(sum(math.exp(s) for s in sims.values())))
    assert nt_xent(a, b, 0.3).item() == pytest.approx(total / 4, abs=1e-5)


# ------------------------------------------------------------------------------------------ adversarial parts
def test_adversarial_term_has_no_value_and_plays_both_sides():
    torch.manual_seed(0)
    net = critic(3, [8])
    codes, prior = torch.randn(6, 3, requires_grad=True), torch.randn(6, 3)
    term = adversarial_term(net, codes, prior, weight=0.5)
    assert term.item() == 0.0
    term.backward()
    critic_grads, codes_grad = [p.grad.clone() for p in net.parameters()], codes.grad.clone()
    net.zero_grad()
    codes.grad = None
    critic_loss(net, prior, codes).backward()    # the critic minimises its cross-entropy ...
    assert all(torch.allclose(a, p.grad) for a, p in zip(critic_grads, net.parameters()))
    codes.grad = None
    torch.nn.functional.softplus(-net(codes)).mean().backward()   # ... the codes its non-saturating opposite
    assert torch.allclose(codes_grad, 0.5 * codes.grad)


def test_critic_loss_is_2_log_2_when_it_cannot_tell():
    net = critic(2, [4])
    for p in net.parameters():
        torch.nn.init.zeros_(p)
    assert critic_loss(net, torch.randn(5, 2), torch.randn(5, 2)).item() == pytest.approx(2 * LOG2)


# ------------------------------------------------------------------------------------------ the learners
@pytest.mark.parametrize("name", PEERS)
def test_a_few_steps_lower_the_loss(name, synthetic):
    learner = tiny(name)
    module, x = learner.module.train(), synthetic.train_x[:64]

    def measured():
        torch.manual_seed(0)  # the same augmentations, negatives and prior samples each time
        with torch.no_grad():
            return learner.loss(module, x).item()
    before = measured()
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    for step in range(50):  # 25 steps were enough for aae's decoder before it took the official head
        torch.manual_seed(step + 1)
        opt.zero_grad()
        learner.loss(module, x).backward()
        opt.step()
    assert measured() < before - 0.05 * abs(before)


@pytest.mark.parametrize("name", PEERS)
def test_conformance(name):
    dims = check_learner(lambda **kw: repbench.create_learner(name, preset="smoke", **kw))
    assert dims == {"mean": 8}   # the smoke preset's representation


def test_representations_sizes_and_where_they_come_from(synthetic):
    assert repbench.create_learner("dim", preset="quick").config.z_dim == 32
    assert repbench.create_learner("dim", preset="quick", image_shape=(3, 32, 32)).config.z_dim == 64
    assert repbench.create_learner("simclr", preset="paper", image_shape=(3, 32, 32)).config.z_dim == 64
    learner = tiny("simclr").fit(synthetic.train_x[:100], progress=False)
    x = synthetic.test_x[:5]
    with torch.no_grad():   # before the projection head, not after it
        h = learner.module.encoder(x.float() / 127.5 - 1)[0]
    assert torch.allclose(learner.represent(x), h)
    assert learner.config.proj_dim != learner.config.z_dim


def test_display_names_say_the_dim_variant():
    assert [repbench.create_learner("dim", preset="smoke", **kw).display_name
            for kw in ({}, {"estimator": "nce"}, {"local_weight": 0.0, "global_weight": 1.0})] == \
        ["dim", "dim-nce", "dim-global"]


def test_dim_objectives_and_prior_switch_their_networks():
    def names(**kw):
        return {n.split(".")[0] for n, _ in tiny("dim", **kw).module.named_parameters()}
    assert names() == {"encoder", "local_y", "local_m", "critic"}
    assert names(global_weight=1.0, prior_weight=0.0) == {"encoder", "local_y", "local_m", "global_y", "global_m"}


def test_aae_loss_reads_as_the_nll_and_its_critic_gradient_reaches_the_encoder(synthetic):
    """The adversarial term adds gradients, not value: the loss is the reconstruction NLL whatever adv_weight is;
    the critic trains at full strength either way, and only adv_weight > 0 changes the encoder's gradient."""
    x = synthetic.train_x[:20]
    grads, values = {}, {}
    for weight in (0.0, 2.0):
        learner = tiny("aae", adv_weight=weight)
        module = learner.module.train()
        torch.manual_seed(0)
        loss = learner.loss(module, x)
        loss.backward()
        values[weight] = loss.item()
        grads[weight] = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    torch.manual_seed(0)
    with torch.no_grad():
        z = module.code(x.float() / 127.5 - 1)
        nll = -module.pixel_log_prob(x, module.decoder_params(x, z)).sum((1, 2, 3)).mean()
    assert values[0.0] == pytest.approx(values[2.0]) and values[2.0] == pytest.approx(nll.item(), rel=1e-5)
    critic_names = [n for n in grads[2.0] if n.startswith("critic.")]
    assert critic_names and all(torch.allclose(grads[0.0][n], grads[2.0][n]) for n in critic_names)
    assert not torch.allclose(grads[0.0]["mean_head.weight"], grads[2.0]["mean_head.weight"])
    assert torch.allclose(grads[0.0]["decoder.1.weight"], grads[2.0]["decoder.1.weight"])  # the decoder: NLL only


def test_simclr_views_crop_within_the_image():
    x = torch.linspace(-1, 1, 12)[None, None, None, :].expand(4, 1, 12, 12).contiguous()
    torch.manual_seed(0)
    v = crop_resize(x, 0.5, flip=False)
    assert v.shape == x.shape and v.min() >= -1 and v.max() <= 1
    assert (v[:, :, :, 1:] >= v[:, :, :, :-1] - 1e-6).all()   # no flip: left to right stays increasing
    torch.manual_seed(0)
    assert torch.equal(crop_resize(x, 0.5, flip=False), v)    # from torch's global RNG: seeded, repeatable


@pytest.mark.parametrize("name,options,pattern", [
    ("dim", {"estimator": "foo"}, r"estimator must be one of jsd, nce; got 'foo'"),
    ("dim", {"prior": "laplace"}, r"prior must be one of uniform, gaussian"),
    ("dim", {"local_weight": 0.0}, r"local_weight and global_weight are both 0"),
    ("dim", {"prior_weight": -1}, r"prior_weight must be a number >= 0"),
    ("simclr", {"temperature": 0}, r"temperature must be a number > 0"),
    ("simclr", {"min_crop": 1.5}, r"min_crop .* at most 1"),
    ("simclr", {"jitter": 0.5}, r"jitter distorts colours and needs colour images"),
    ("aae", {"adv_weight": -0.1}, r"adv_weight must be a number >= 0"),
])
def test_bad_options_are_clear_errors(name, options, pattern):
    with pytest.raises(RepbenchError, match=pattern):
        repbench.create_learner(name, preset="smoke", **options)


def test_bad_estimator_on_the_command_line(tmp_path):
    result = CliRunner().invoke(cli, ["run", "--model", "dim", "-o", "estimator=foo", "--preset", "smoke", "--dataset",
                                      "synthetic", "--results-dir", str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 2 and "estimator must be one of jsd, nce; got 'foo'" in result.output
    assert not (tmp_path / "runs").exists()


def test_simclr_colour_views_stay_images():
    learner = tiny("simclr", image_shape=(3, 16, 16))
    x = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    torch.manual_seed(0)
    v = learner.views(x)
    assert v.shape == x.shape and v.min() >= -1 and v.max() <= 1 and not torch.allclose(v, x)
    torch.manual_seed(0)
    assert torch.equal(learner.views(x), v)

"""The metric battery's pure functions against known answers."""
import math

import numpy as np
import pytest
import torch

from repbench.metrics import (METRICS, bits_per_dim, importance_weighted_bits_per_dim, nats_to_bits_per_dim, intrinsic_dim, linear_probe,
                              nonlinear_probe, pca_spectrum, sampled_elbo_bits_per_dim, knn_probe)
from repbench.metrics.probes import linear_probe_fit, nonlinear_probes


def subspace_data(n=2000, k=3, d=20, noise=0.0, seed=0):
    g = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(g.normal(size=(d, k)))
    return g.normal(size=(n, k)) @ basis.T + noise * g.normal(size=(n, d)) + 5.0


@pytest.mark.parametrize("k", [1, 3, 7])
def test_intrinsic_dim_of_a_subspace_is_its_dimension(k):
    assert intrinsic_dim(subspace_data(k=k)) == k
    assert intrinsic_dim(subspace_data(k=k, noise=1e-3)) == k


def test_pca_spectrum_is_the_sorted_covariance_eigenvalues():
    x = np.random.default_rng(1).normal(size=(500, 6)) * np.arange(1, 7)
    spec = pca_spectrum(x)
    assert np.allclose(spec, np.sort(np.linalg.eigvalsh(np.cov(x.T)))[::-1])
    assert intrinsic_dim(np.ones((10, 4))) == 0


def labelled(n=1000, d=8, seed=0, separable=True):
    g = np.random.default_rng(seed)
    y = np.arange(n) % 4
    centers = g.normal(size=(4, d)) * 10
    x = centers[y] + g.normal(size=(n, d)) if separable else g.normal(size=(n, d))
    return x, y


@pytest.mark.parametrize("method", ["linearsvc", "svc"])
def test_linear_probe_known_answers(method):
    x, y = labelled()
    assert linear_probe(x[:800], y[:800], x[800:], y[800:], method=method) > 99.0
    const = np.zeros_like(x)
    acc = linear_probe(const[:800], y[:800], const[800:], y[800:], method=method)
    assert acc == pytest.approx(25.0, abs=0.01)  # one class predicted everywhere: exactly its share


def test_probes_average_scores_over_test_samples():
    x, y = labelled(seed=2)
    test = np.stack([x[800:] + np.random.default_rng(s).normal(size=x[800:].shape) * 8 for s in range(50)])
    one = linear_probe(x[:800], y[:800], test[0], y[800:])
    many = linear_probe(x[:800], y[:800], test, y[800:])
    assert many > one + 5  # averaging 50 noisy views recovers most of the signal


def test_nonlinear_probe_reads_a_nonlinear_code_and_is_reproducible():
    g = np.random.default_rng(3)
    x = g.uniform(-1, 1, size=(3000, 2))
    y = ((x[:, 0] * x[:, 1]) > 0).astype(int)  # XOR of signs: no linear probe can read it
    a = nonlinear_probe(x[:2500], y[:2500], x[2500:], y[2500:], seed=0, epochs=30)
    b = nonlinear_probe(x[:2500], y[:2500], x[2500:], y[2500:], seed=0, epochs=30)
    assert a == b and a > 90
    assert linear_probe(x[:2500], y[:2500], x[2500:], y[2500:]) < 65


def noisy_clusters(n=1500, d=16, seed=5):
    """Overlapping classes: a probe's accuracy here moves with any change in its arithmetic or random draws."""
    g = np.random.default_rng(seed)
    y = g.integers(0, 6, n)
    return (g.normal(size=(6, d))[y] + 2.0 * g.normal(size=(n, d))).astype(np.float32), y


def test_nonlinear_probe_accuracy_does_not_depend_on_the_thread_count():
    x, y = noisy_clusters()
    before = torch.get_num_threads()
    by_threads = {}
    try:
        for threads in (2, 1):
            torch.set_num_threads(threads)
            by_threads[threads] = [nonlinear_probe(x[:1000], y[:1000], x[1000:], y[1000:], seed=s, epochs=3)
                                   for s in range(3)]
            assert torch.get_num_threads() == threads  # the probe's own thread count is restored after it
    finally:
        torch.set_num_threads(before)
    assert all(30 < a < 99 for a in by_threads[1])  # neither chance nor solved: a difference would show
    assert np.abs(np.subtract(by_threads[1], by_threads[2])).max() <= 0.1
    assert by_threads[1] == by_threads[2]  # the probe runs on its own thread count: not even float noise


def test_nonlinear_probes_batched_over_seeds_give_each_seed_its_own_accuracy():
    x, y = noisy_clusters(seed=6)
    g = np.random.default_rng(0)
    subsets = [g.choice(1000, 600, replace=False) for _ in range(3)]
    tests = [x[1000:] + 0.5 * g.normal(size=(4, 500, 16)).astype(np.float32) for _ in range(3)]  # k = 4 samples
    together = nonlinear_probes([x[i] for i in subsets], [y[i] for i in subsets], tests, y[1000:], seeds=(4, 5, 6),
                                epochs=4)
    alone = [nonlinear_probe(x[i], y[i], t, y[1000:], seed=s, epochs=4) for s, i, t in zip((4, 5, 6), subsets, tests)]
    assert together == alone and len(set(alone)) > 1


def test_nonlinear_probe_leaves_the_global_random_state_alone(monkeypatch):
    # Seeding the global generator from inside a probe would reseed every CUDA device's too; the probe draws
    # from generators of its own, so its value does not depend on the global state and leaves it as it was.
    x, y = noisy_clusters(n=600)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    monkeypatch.setattr(torch, "manual_seed", lambda *a: pytest.fail("the probe seeded the global generator"))
    a = nonlinear_probe(x[:400], y[:400], x[400:], y[400:], seed=1, epochs=2)
    assert torch.equal(torch.get_rng_state(), state)
    torch.set_rng_state(torch.ByteTensor(torch.Generator().manual_seed(456).get_state()))
    assert nonlinear_probe(x[:400], y[:400], x[400:], y[400:], seed=1, epochs=2) == a


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the probe's GPU generator is not tested here")
def test_nonlinear_probe_on_a_gpu_leaves_the_cuda_generator_alone():
    x, y = noisy_clusters(n=600)
    state = torch.cuda.get_rng_state()
    a = nonlinear_probe(x[:400], y[:400], x[400:], y[400:], seed=1, epochs=2, device="cuda")
    assert torch.equal(torch.cuda.get_rng_state(), state)
    assert nonlinear_probe(x[:400], y[:400], x[400:], y[400:], seed=1, epochs=2, device="cuda") == a
    assert 30 < a < 100


def test_linear_probe_is_reproducible():
    x, y = labelled(seed=4, separable=False)
    assert linear_probe(x[:800], y[:800], x[800:], y[800:], seed=1) == linear_probe(x[:800], y[:800], x[800:], y[800:],
                                                                                    seed=1)


def crowded(n=900, d=100, seed=0):
    """Samples outnumber features and no hyperplane separates the classes: liblinear's dual solver crawls here."""
    g = np.random.default_rng(seed)
    y = np.arange(n) % 4
    return g.normal(size=(4, d))[y] * 0.3 + g.normal(size=(n, d)), y


def test_the_linear_probe_converges_where_the_dual_solver_stalls_and_says_when_it_does_not():
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC
    x, y = crowded()
    with pytest.warns(Warning, match="converge"):  # the probe before: the dual problem, 1,000 iterations
        assert LinearSVC(max_iter=1000, dual=True).fit(StandardScaler().fit_transform(x[:700]), y[:700]).n_iter_ == 1000
    for method in ("linearsvc", "svc", "torch"):
        fit = linear_probe_fit(x[:700], y[:700], x[700:], y[700:], method=method)
        assert fit.converged is True and 0 < fit.iterations < 10_000, (method, fit)
        assert fit.accuracy == linear_probe(x[:700], y[:700], x[700:], y[700:], method=method)
    for method in ("linearsvc", "torch"):  # stopped short: said, never hidden
        short = linear_probe_fit(x[:700], y[:700], x[700:], y[700:], method=method, max_iter=2)
        assert short.converged is False and 0 < short.iterations <= 2, (method, short)
        with pytest.warns(RuntimeWarning, match=f"linear probe \\({method}\\) did not converge in [12] iterations"):
            linear_probe(x[:700], y[:700], x[700:], y[700:], method=method, max_iter=2)


def test_knn_probe_votes_by_similarity_at_temperature_0_07():
    # one class-0 neighbour at cosine 1 against n class-1 neighbours at cosine 0.9: class 0 wins while
    # exp((1 - 0.9) / 0.07) = 4.17 > n, so with n = 4 it does and with n = 5 it does not
    for n, expected in ((4, 100.0), (5, 0.0)):
        train, labels = np.array([cone(1.0)] + [cone(0.9)] * n), np.array([0] + [1] * n)
        assert knn_probe(train, labels, np.array([[2.0, 0.0]]), np.array([0]), k=n + 1) == expected
    # a majority vote would call both test points class 1; the weighted vote reads both right
    train, labels = np.array([cone(1.0), cone(0.5), cone(0.5)]), np.array([0, 1, 1])
    assert knn_probe(train, labels, np.array([cone(1.0), cone(0.5)]), np.array([0, 1]), k=3) == 100.0


def test_knn_probe_euclidean_weighs_by_inverse_distance_and_differs_from_cosine():
    train, labels = np.array([[10.0, 0.0], [1.0, 0.5]]), np.array([0, 1])
    test = np.array([[1.0, 0.0]])
    assert knn_probe(train, labels, test, np.array([0]), k=1) == 100.0                           # same direction
    assert knn_probe(train, labels, test, np.array([0]), k=1, distance="euclidean") == 0.0       # nearer point
    # one class-0 neighbour at distance 0.5 (weight 2) outvotes two class-1 neighbours at distance 2 (0.5 each)
    train, labels = np.array([[0.5, 0.0], [2.0, 0.0], [-2.0, 0.0]]), np.array([0, 1, 1])
    assert knn_probe(train, labels, np.zeros((1, 2)), np.array([0]), k=3, distance="euclidean") == 100.0
    with pytest.raises(ValueError, match="unknown k-NN distance 'manhattan'"):
        knn_probe(train, labels, np.zeros((1, 2)), np.array([0]), distance="manhattan")


def cone(cos: float) -> list[float]:
    """A unit vector at this cosine to (1, 0)."""
    return [cos, math.sqrt(1 - cos ** 2)]


def test_knn_probe_averages_the_votes_of_test_samples_and_takes_20_neighbours_by_default():
    train, labels = np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 1])
    samples = np.array([[[1.0, 0.1]], [[1.0, 0.2]], [[0.1, 1.0]]])   # [3 samples, 1 image, d]: 2 of 3 say class 0
    assert knn_probe(train, labels, samples, np.array([0]), k=1) == 100.0
    assert knn_probe(train, labels, samples[2], np.array([0]), k=1) == 0.0
    # 10 class-0 neighbours at cosine 1, then 10 of class 1 at 0.999 (votes 0.986 each) and 100 at 0.998 (0.972):
    # the 20 nearest favour class 0 (10 against 9.86), the 21st tips the vote to class 1 (10 against 10.83)
    train = np.array([cone(1.0)] * 10 + [cone(0.999)] * 10 + [cone(0.998)] * 100)
    labels = np.array([0] * 10 + [1] * 110)
    assert knn_probe(train, labels, np.array([cone(1.0)]), np.array([0])) == 100.0
    assert knn_probe(train, labels, np.array([cone(1.0)]), np.array([0]), k=21) == 0.0
    # fewer training rows than k is an error, not a probe with fewer neighbours under the same name
    with pytest.raises(ValueError, match="k = 121 needs at least 121 training representations, got 120"):
        knn_probe(train, labels, np.array([cone(1.0)]), np.array([0]), k=121)


def test_the_validation_split_is_a_fifth_of_each_class_fixed_by_the_seed_alone():
    from repbench.metrics.probes import validation_split
    y = np.repeat(np.arange(4), [50, 30, 10, 1])
    fit, val = validation_split(y, seed=3)
    assert sorted(np.r_[fit, val].tolist()) == list(range(len(y)))                 # disjoint, together all rows
    assert np.bincount(y[val], minlength=4).tolist() == [10, 6, 2, 0]              # a lone row is never held out
    again, val_again = validation_split(y.copy(), seed=3)
    assert np.array_equal(val, val_again) and not np.array_equal(val, validation_split(y, seed=4)[1])


def test_the_tuned_protocol_chooses_on_validation_rows_then_refits_on_all_and_records_its_choice():
    from dataclasses import replace
    from repbench.data.datasets import ImageData
    from repbench.measure import BatteryConfig, run_battery
    from repbench.metrics.probes import GRIDS, validation_split
    x, y = crowded()
    data = ImageData("crowded", torch.zeros(700, 1, 1, 1, dtype=torch.uint8), torch.as_tensor(y[:700]),
                     torch.zeros(200, 1, 1, 1, dtype=torch.uint8), torch.as_tensor(y[700:]), 4)
    reps = {"train": {"mean": torch.as_tensor(x[:700], dtype=torch.float32)},
            "test": {"mean": torch.as_tensor(x[700:], dtype=torch.float32)}}
    cfg = BatteryConfig(metrics=("linear_probe", "nonlinear_probe"), probe_seeds=2, nonlinear_epochs=3,
                        probe_protocol="tuned")
    res = run_battery(None, data, cfg, reps=reps, progress=False)
    train, test = reps["train"]["mean"].numpy(), reps["test"]["mean"].numpy()
    accs = []
    for seed in (0, 1):  # the choice, recomputed by hand: the best C on the seed's validation rows
        fit, val = validation_split(y[:700], seed)
        scores = [linear_probe_fit(train[fit], y[fit], train[val], y[val], seed=seed, **c).accuracy
                  for c in GRIDS["linear_probe"]]
        best = GRIDS["linear_probe"][int(np.argmax(scores))]
        assert res.measured_with["linear_probe"]["fits"]["linear_probe"]["chosen"][seed] == best
        accs.append(linear_probe_fit(train, y[:700], test, y[700:], seed=seed, **best).accuracy)  # refit on all
    assert res.metrics["linear_probe"] == pytest.approx(np.mean(accs), abs=1e-12)
    assert res.measured_with["linear_probe"]["probe_protocol"] == "tuned"
    mlp = res.measured_with["nonlinear_probe"]
    assert mlp["probe_protocol"] == "tuned" and [set(c) for c in mlp["fits"]["nonlinear_probe"]["chosen"]] == \
        [{"lr", "weight_decay"}] * 2
    fixed = run_battery(None, data, replace(cfg, probe_protocol="fixed"), reps=reps, progress=False)
    assert fixed.measured_with["linear_probe"]["probe_protocol"] == "fixed"
    assert "chosen" not in fixed.measured_with["linear_probe"]["fits"]["linear_probe"]


def test_importance_weighted_bound_never_above_the_elbo():
    g = torch.Generator().manual_seed(0)
    for k in (1, 2, 10, 100):
        log_w = torch.randn(k, 50, generator=g, dtype=torch.float64) * 30 - 500
        assert importance_weighted_bits_per_dim(log_w, 784) <= sampled_elbo_bits_per_dim(log_w, 784) + 1e-12
    log_w = torch.randn(1, 50, generator=g, dtype=torch.float64)
    assert importance_weighted_bits_per_dim(log_w, 10) == pytest.approx(sampled_elbo_bits_per_dim(log_w, 10))


def test_both_bounds_exact_without_latent_dependence():
    # decoder ignores z and q(z|x) = p(z): every weight is exactly log p(x)
    log_px = torch.tensor([-700.0, -650.0, -900.0], dtype=torch.float64)
    log_w = log_px.expand(10, 3)
    exact = float(-log_px.mean() / (784 * math.log(2)))
    assert importance_weighted_bits_per_dim(log_w, 784) == pytest.approx(exact, rel=1e-14)
    assert sampled_elbo_bits_per_dim(log_w, 784) == pytest.approx(exact, rel=1e-14)


def test_every_metric_has_a_unit_and_direction():
    for name in ("bpd", "bpd_iw", "mutual_info", "cond_entropy", "intrinsic_dim", "linear_probe", "nonlinear_probe"):
        info = METRICS.get(name)
        assert info.unit and info.direction in ("higher", "lower", "neither") and info.description


def test_uniform_likelihood_is_exactly_8_bits_per_dim():
    d = 784
    nll = torch.full((7,), d * math.log(256.0), dtype=torch.float64)
    assert bits_per_dim(nll, torch.zeros(7), d) == 8.0
    assert nats_to_bits_per_dim(math.log(2.0) * d, d) == 1.0


def test_bits_per_dim_adds_the_kl():
    d = 10
    assert bits_per_dim(torch.zeros(2), torch.full((2,), d * math.log(2.0), dtype=torch.float64), d) == pytest.approx(1.0, abs=1e-12)

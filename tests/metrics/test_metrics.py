"""The metric battery's pure functions against known answers."""
import math

import numpy as np
import pytest
import torch

from repbench.metrics import (METRICS, bits_per_dim, importance_weighted_bits_per_dim, nats_to_bits_per_dim, intrinsic_dim, linear_probe,
                              nonlinear_probe, pca_spectrum, sampled_elbo_bits_per_dim)
from repbench.metrics.probes import nonlinear_probes


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

"""Conformance checks for learners: run them in a plugin's own tests.

    from repbench.testing import check_learner
    def test_my_learner():
        check_learner(lambda **kw: MyLearner(preset="smoke", **kw))

`factory(image_shape=..., seed=...)` must build an untrained learner; the checks train it briefly on small
generated images. Each check has a name, and a failure says which one broke: `check_learner [save_load]: ...`.
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Callable

import torch

from .learners import REPRESENTATION_KINDS, Learner, ability_problems, create_learner, has_ability
from .data import ImageData, labelled_subset, make_synthetic
from .errors import RepbenchError

CHECKS: dict[str, Callable] = {}


def tiny(name: str, image_shape=(1, 12, 12), **options) -> Learner:
    """A registered learner at the smoke preset, small enough for per-pixel gradient checks in tests."""
    return create_learner(name, preset="smoke", image_shape=image_shape, **options)


def check(fn):
    CHECKS[fn.__name__.removeprefix("check_")] = fn
    return fn


class Subject:
    """A learner under check, trained once on small generated images."""

    def __init__(self, factory, data: ImageData):
        self.factory, self.data = factory, data
        self.learner: Learner | None = None
        self.dims: dict[str, int] = {}

    def fit(self, seed: int = 0) -> Learner:
        learner = self.factory(image_shape=self.data.image_shape, seed=seed)
        assert isinstance(learner, Learner), f"factory built {type(learner).__name__}, not a repbench.Learner"
        kw = {"train_y": self.data.train_y,
              "labelled": labelled_subset(self.data.train_y, learner.label_budget, seed)} \
            if has_ability(learner, "labels") else {}
        out = learner.fit(self.data.train_x, self.data.test_x, progress=False, **kw)
        assert out is learner, "fit must return self (the scikit-learn contract)"
        return learner


@check
def check_fit_returns_self(s: Subject) -> None:
    s.learner = s.fit()


@check
def check_declared_abilities(s: Subject) -> None:
    problems = ability_problems(type(s.learner))
    assert not problems, "; ".join(problems)


@check
def check_representations(s: Subject) -> None:
    learner, x = s.learner, s.data.test_x
    kinds = tuple(learner.kinds)
    assert "mean" in kinds and set(kinds) <= set(REPRESENTATION_KINDS), \
        f"kinds {kinds} must include 'mean' and be among {REPRESENTATION_KINDS}"
    for kind in REPRESENTATION_KINDS:
        if kind not in kinds:
            try:
                learner.represent(x, kind)
            except RepbenchError:
                continue
            raise AssertionError(f"represent(x, '{kind}') must raise RepbenchError: '{kind}' is not in {kinds}")
        rep = learner.represent(x, kind)
        assert isinstance(rep, torch.Tensor) and rep.is_floating_point(), f"'{kind}' must be a float tensor"
        assert rep.ndim == 2 and rep.shape[0] == len(x), f"'{kind}' has shape {tuple(rep.shape)}, " \
            f"expected [{len(x)}, d]"
        assert torch.isfinite(rep).all(), f"'{kind}' has non-finite values"
        s.dims[kind] = rep.shape[1]
    try:
        learner.represent(x, "no-such-kind")
    except RepbenchError:
        pass
    else:
        raise AssertionError("an unknown representation kind must raise RepbenchError")


@check
def check_deterministic_mean(s: Subject) -> None:
    x = s.data.test_x
    assert torch.equal(s.learner.represent(x, "mean"), s.learner.represent(x, "mean")), \
        "represent(x, 'mean') must be deterministic"


@check
def check_abilities_behave(s: Subject) -> None:
    learner, x = s.learner, s.data.test_x[:6]
    if has_ability(learner, "posterior"):
        mean, std = learner.posterior(x)
        assert mean.shape == std.shape and mean.shape[0] == len(x), "posterior gives (mean, std), each [B, Z]"
        assert (std > 0).all(), "posterior stds must be positive"
        assert torch.allclose(learner.represent(x, "embedding").double(), torch.cat([mean, std], 1).double(),
                              atol=1e-5), \
            "represent(x, 'embedding') must be the posterior's mean and std"
    if has_ability(learner, "likelihood"):
        terms = learner.elbo_terms(x)
        assert {"nll_nats", "kl_nats"} <= set(terms), "elbo_terms gives nll_nats and kl_nats"
        assert all(t.shape == (len(x),) and torch.isfinite(t).all() for t in terms.values()), \
            "elbo_terms values are finite, one per image"
        assert (terms["kl_nats"] >= -1e-4).all(), "a KL divergence is never negative"
    if has_ability(learner, "classifier"):
        p = learner.predict_proba(x)
        assert p.shape[0] == len(x) and torch.allclose(p.sum(1).double(), torch.ones(len(x), dtype=torch.float64),
                                                       atol=1e-4), "predict_proba rows are probabilities"
    if has_ability(learner, "generator"):
        g = torch.Generator(device=learner.device).manual_seed(0)
        for name, imgs in (("sample", learner.sample(3, g)), ("reconstruct", learner.reconstruct(x[:3], g))):
            assert imgs.dtype == torch.uint8 and tuple(imgs.shape) == (3,) + tuple(s.data.image_shape), \
                f"{name} gives uint8 images [n, C, H, W], got {imgs.dtype} {tuple(imgs.shape)}"


@check
def check_save_load(s: Subject) -> None:
    x = s.data.test_x
    mean = s.learner.represent(x, "mean")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "learner.pt"
        s.learner.save(path)
        back = s.factory(image_shape=s.data.image_shape, seed=0).load(path)
        assert torch.allclose(back.represent(x, "mean"), mean), "save/load changed the representation"


@check
def check_same_seed(s: Subject) -> None:
    x = s.data.test_x
    twin = s.fit(seed=0)
    assert torch.allclose(twin.represent(x, "mean"), s.learner.represent(x, "mean")), \
        "same seed, same data: different representation"


@check
def check_battery(s: Subject) -> None:
    from .measure import battery_for, run_battery
    from .metrics import METRICS, entry_of
    cfg = battery_for("smoke", {"probe_seeds": 1, "iw_samples": 2, "test_samples": 2, "nonlinear_epochs": 1})
    res = run_battery(s.learner, s.data, cfg, progress=False)
    for name in cfg.metrics:
        metric = METRICS.get(name)
        applies = all(need in ("representations", "labels") or has_ability(s.learner, need) for need in metric.needs)
        values = {k: v for k, v in res.metrics.items() if entry_of(k) is metric and not k.endswith("_std")}
        assert values, f"metric '{name}' recorded no value"
        for key, value in values.items():
            assert applies or value is None, f"metric '{name}' gave {key} = {value!r}; it does not apply"
            assert value is None or math.isfinite(value), f"metric '{name}' gave {key} = {value}, not finite"
        assert not applies or any(v is not None for v in values.values()), \
            f"metric '{name}' applies to this learner but gave no value"


def check_learner(factory: Callable[..., Learner], data: ImageData | None = None) -> dict:
    """Run every named check in order (each may rely on the earlier ones); return {kind: dimension}."""
    subject = Subject(factory, data or make_synthetic(n_train=100, n_test=40))
    for name, fn in CHECKS.items():
        try:
            fn(subject)
        except AssertionError as exc:
            raise AssertionError(f"check_learner [{name}]: {exc}") from None
    return subject.dims

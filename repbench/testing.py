"""Conformance check for learners: run it in a plugin's own tests.

    from repbench.testing import check_learner
    def test_my_learner():
        check_learner(lambda **kw: MyLearner(preset="smoke", **kw))

`factory(image_shape=..., seed=...)` must build an untrained learner; the check trains it briefly on small
generated images and fails with an AssertionError that says what is wrong.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import torch

from .api import REPRESENTATION_KINDS, Learner
from .data import ImageData, make_synthetic
from .registry import RepbenchError


def _fit(factory, data: ImageData, seed: int) -> Learner:
    learner = factory(image_shape=data.image_shape, seed=seed)
    assert isinstance(learner, Learner), f"factory built {type(learner).__name__}, not a repbench.Learner"
    out = learner.fit(data.train_x, data.test_x, progress=False)
    assert out is learner, "fit must return self (the scikit-learn contract)"
    return learner


def check_learner(factory: Callable[..., Learner], data: ImageData | None = None) -> dict:
    """Check shapes, dtypes, save/load, determinism under a seed and refusal of unsupported kinds.
    Returns {kind: representation dimension}."""
    data = data or make_synthetic(n_train=100, n_test=40)
    learner = _fit(factory, data, seed=0)
    kinds = tuple(learner.kinds)
    assert "mean" in kinds and set(kinds) <= set(REPRESENTATION_KINDS), f"kinds {kinds} must include 'mean' and " \
        f"be among {REPRESENTATION_KINDS}"
    dims = {}
    for kind in REPRESENTATION_KINDS:
        if kind not in kinds:
            try:
                learner.represent(data.test_x, kind)
            except RepbenchError:
                continue
            raise AssertionError(f"represent(x, '{kind}') must raise RepbenchError: '{kind}' is not in {kinds}")
        rep = learner.represent(data.test_x, kind)
        assert isinstance(rep, torch.Tensor) and rep.is_floating_point(), f"'{kind}' must be a float tensor"
        assert rep.ndim == 2 and rep.shape[0] == len(data.test_x), f"'{kind}' has shape {tuple(rep.shape)}, " \
            f"expected [{len(data.test_x)}, d]"
        assert torch.isfinite(rep).all(), f"'{kind}' has non-finite values"
        dims[kind] = rep.shape[1]
    mean = learner.represent(data.test_x, "mean")
    assert torch.equal(mean, learner.represent(data.test_x, "mean")), "represent(x, 'mean') must be deterministic"
    try:
        learner.represent(data.test_x, "no-such-kind")
    except RepbenchError:
        pass
    else:
        raise AssertionError("an unknown representation kind must raise RepbenchError")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "learner.pt"
        learner.save(path)
        back = factory(image_shape=data.image_shape, seed=0).load(path)
        assert torch.allclose(back.represent(data.test_x, "mean"), mean), "save/load changed the representation"
    twin = _fit(factory, data, seed=0)
    assert torch.allclose(twin.represent(data.test_x, "mean"), mean), "same seed, same data: different representation"
    return dims

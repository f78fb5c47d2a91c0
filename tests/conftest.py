"""Shared fixtures: small generated data and tiny learners; everything runs on CPU in seconds."""
from __future__ import annotations

import pytest
import torch

import repbench
from repbench.data import make_synthetic


@pytest.fixture(scope="session")
def synthetic():
    return make_synthetic()


def tiny(name: str, image_shape=(1, 12, 12), **options):
    """A learner of the smoke preset, small enough for per-pixel gradient checks."""
    return repbench.create_learner(name, preset="smoke", image_shape=image_shape, **options)


@pytest.fixture
def results_dir(tmp_path):
    return tmp_path / "results"


def pytest_report_header(config):
    gpu = torch.cuda.is_available()
    return f"repbench: CUDA {'available: GPU tests run' if gpu else 'not available: GPU tests are skipped'}"

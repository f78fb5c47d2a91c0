"""Shared fixtures: small generated data and tiny learners; everything runs on CPU in seconds."""
from __future__ import annotations

import pytest
import torch

from repbench.data.datasets import make_synthetic


@pytest.fixture(scope="session")
def synthetic():
    return make_synthetic()


@pytest.fixture
def results_dir(tmp_path):
    return tmp_path / "results"


def pytest_report_header(config):
    gpu = torch.cuda.is_available()
    return f"repbench: CUDA {'available: GPU tests run' if gpu else 'not available: GPU tests are skipped'}"

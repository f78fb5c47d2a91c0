"""Wavefront sampling draws exactly the image raster sampling draws from the same random numbers."""
import pytest
import torch

from repbench_models import reference
from repbench_models.vae import raster_steps, wavefront_steps

from repbench.testing import tiny


@pytest.mark.parametrize("h", [1, 2, 3])
def test_wavefront_equals_raster_from_the_same_random_numbers(h):
    learner = tiny("lpvae", h=h)
    model = learner.module.eval()
    z = torch.randn(6, learner.config.z_dim, generator=torch.Generator().manual_seed(0))
    wave = model.generate(z, torch.Generator().manual_seed(1), order="wavefront")
    raster = model.generate(z, torch.Generator().manual_seed(1), order="raster")
    other = model.generate(z, torch.Generator().manual_seed(2), order="wavefront")
    straightforward = reference.generate(model, z, torch.Generator().manual_seed(1))
    assert torch.equal(wave, raster) and torch.equal(wave, straightforward)
    assert not torch.equal(wave, other)  # the comparison can fail: other noise gives another image


@pytest.mark.parametrize("h,height,width", [(1, 12, 12), (2, 28, 28), (3, 5, 9), (1, 1, 7)])
def test_wavefront_visits_every_pixel_once_after_its_context(h, height, width):
    steps = wavefront_steps(height, width, h)
    assert len(steps) == (h + 1) * (height - 1) + width < height * width or height == 1
    when = torch.full((height, width), -1)
    for t, (rows, cols) in enumerate(steps):
        assert (when[rows, cols] == -1).all()
        when[rows, cols] = t
    assert (when >= 0).all()
    for i in range(height):
        for j in range(width):
            context = [(a, b) for a in range(i - h, i) for b in range(j - h, j + h + 1)] + \
                      [(i, b) for b in range(j - h, j)]
            assert all(when[a, b] < when[i, j] for a, b in context if 0 <= a < height and 0 <= b < width)
    assert len(raster_steps(height, width)) == height * width


@pytest.mark.parametrize("name", ["vae", "fpvae"])
def test_other_orders_match_the_straightforward_sampler(name):
    learner = tiny(name)
    model = learner.module.eval()
    z = torch.randn(3, learner.config.z_dim, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model.generate(z, torch.Generator().manual_seed(1)),
                       reference.generate(model, z, torch.Generator().manual_seed(1)))

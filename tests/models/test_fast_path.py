"""The fast training path computes the reference implementation's numbers (issue 7): same loss, same gradients."""
import pytest
import torch

import repbench
from repbench_models import reference

CASES = [("vae", {}), ("lpvae", {"h": 1}), ("lpvae", {"h": 2}), ("lpvae", {"h": 3}), ("fpvae", {})]


SHAPES = {"gray": (1, 12, 12), "rgb": (3, 16, 16)}


@pytest.mark.parametrize("name,options", CASES, ids=lambda v: str(v) if v else "")
@pytest.mark.parametrize("preset,image_shape", [("smoke", SHAPES["gray"]), ("smoke", SHAPES["rgb"])],
                         ids=["smoke-gray", "smoke-rgb"])
def test_fast_loss_and_gradients_equal_the_reference(name, options, preset, image_shape):
    torch.manual_seed(0)
    learner = repbench.create_learner(name, preset=preset, image_shape=image_shape, **options)
    # float64, so that the comparison is tight: in float32 BatchNorm's backward turns reordered sums into
    # relative differences of up to 1e-2 in the first layer's gradient
    model = learner.module.double().train()
    x = torch.randint(0, 256, (16, *image_shape), generator=torch.Generator().manual_seed(0)).double() / 127.5 - 1
    z = torch.randn(16, learner.config.z_dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def loss_and_grads(fn):
        model.zero_grad()
        torch.manual_seed(2)  # BatchNorm in training mode is deterministic; this guards any other randomness
        loss = fn()
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    fast, fast_g = loss_and_grads(lambda: sum(model.elbo_terms(x, z).values()).mean())
    ref, ref_g = loss_and_grads(lambda: reference.loss(model, x, z))
    assert torch.isclose(fast, ref, rtol=1e-12), (float(fast), float(ref))
    assert fast_g.keys() == ref_g.keys()
    for n in ref_g:
        scale = ref_g[n].abs().max().clamp(min=1e-3)
        assert (fast_g[n] - ref_g[n]).abs().max() <= 1e-9 * scale, n


@pytest.mark.parametrize("image_shape", SHAPES.values(), ids=SHAPES.keys())
def test_fast_path_at_the_quick_widths(image_shape):
    test_fast_loss_and_gradients_equal_the_reference("lpvae", {"h": 2}, "quick", image_shape)

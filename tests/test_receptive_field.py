"""The decoder's receptive field, measured with gradients, is exactly the design's definition."""
import pytest
import torch

from conftest import tiny

H = W = 9


def expected_local(h: int, i: int, j: int) -> set:
    rows = {(a, b) for a in range(i - h, i) for b in range(j - h, j + h + 1)}
    left = {(i, b) for b in range(j - h, j)}
    return {(a, b) for a, b in rows | left if 0 <= a < H and 0 <= b < W}


def dependencies(learner, i: int, j: int) -> set:
    """Input pixels whose value changes the decoder parameters at (i, j), for some of several random inputs."""
    torch.manual_seed(0)
    module = learner.module.double().eval()
    x = (torch.rand(4, 1, H, W, dtype=torch.float64) * 2 - 1).requires_grad_()
    z = torch.randn(4, learner.config.z_dim, dtype=torch.float64)
    out = module.decoder_params(x, z)[:, :, i, j]
    (grad,) = torch.autograd.grad(out.pow(2).sum() + out.sum(), x, allow_unused=True)
    if grad is None:  # the decoder never touched x
        return set()
    nz = grad.abs().sum((0, 1)) > 0
    return {(int(a), int(b)) for a, b in nz.nonzero()}


@pytest.mark.parametrize("name,h", [("vae", 0), ("lpvae", 0), ("lpvae", 1), ("lpvae", 2), ("lpvae", 3)])
def test_local_receptive_field_is_exact(name, h):
    learner = tiny(name, image_shape=(1, H, W), **({"h": h} if name == "lpvae" else {}))
    for i in range(H):
        for j in range(W):
            assert dependencies(learner, i, j) == expected_local(h, i, j), (i, j)


def test_full_pixelcnn_sees_only_the_raster_past():
    learner = tiny("fpvae", image_shape=(1, H, W))
    seen_any = 0
    for i in range(H):
        for j in range(W):
            deps = dependencies(learner, i, j)
            assert all(a < i or (a == i and b < j) for a, b in deps), (i, j, deps)
            for near in ((i, j - 1), (i - 1, j), (i - 1, j + 1), (i - 2, j)):
                if 0 <= near[0] and 0 <= near[1] < W:
                    assert near in deps, (i, j, near)
            seen_any += len(deps)
    assert dependencies(learner, 0, 0) == set()
    # far wider than any small horizon: pixels 3 rows up and 3 columns left reach the last pixel
    assert (H - 4, W - 4) in dependencies(learner, H - 1, W - 1)

"""The decoder's receptive field, measured with gradients, is exactly the design's definition."""
import pytest
import torch

from repbench.testing import tiny

H = W = 9


def expected_local(h: int, i: int, j: int, height: int = H, width: int = W) -> set:
    rows = {(a, b) for a in range(i - h, i) for b in range(j - h, j + h + 1)}
    left = {(i, b) for b in range(j - h, j)}
    return {(a, b) for a, b in rows | left if 0 <= a < height and 0 <= b < width}


def channel_dependencies(learner, i: int, j: int) -> set:
    """Input (channel, row, col) whose value changes the decoder parameters at (i, j), for some of several
    random inputs."""
    torch.manual_seed(0)
    module = learner.module.double().eval()
    x = (torch.rand(4, *learner.image_shape, dtype=torch.float64) * 2 - 1).requires_grad_()
    z = torch.randn(4, learner.config.z_dim, dtype=torch.float64)
    out = module.decoder_params(x, z)[:, :, i, j]
    (grad,) = torch.autograd.grad(out.pow(2).sum() + out.sum(), x, allow_unused=True)
    if grad is None:  # the decoder never touched x
        return set()
    nz = grad.abs().sum(0) > 0
    return {(int(c), int(a), int(b)) for c, a, b in nz.nonzero()}


def dependencies(learner, i: int, j: int) -> set:
    return {(a, b) for _, a, b in channel_dependencies(learner, i, j)}


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


CH = CW = 16  # the colour models need sides divisible by 8


@pytest.mark.parametrize("h", [0, 1, 2])
def test_colour_local_receptive_field_is_exact_in_every_channel(h):
    """Parameters at (i, j) see all three channels of the pixels in the horizon and no channel of (i, j)."""
    learner = tiny("lpvae", image_shape=(3, CH, CW), h=h)
    for i, j in [(0, 0), (0, 5), (1, 0), (3, 7), (8, 15), (15, 15), (15, 0)]:
        want = {(c, a, b) for c in range(3) for a, b in expected_local(h, i, j, CH, CW)}
        assert channel_dependencies(learner, i, j) == want, (i, j)


def test_colour_full_pixelcnn_sees_only_the_raster_past_in_every_channel():
    learner = tiny("fpvae", image_shape=(3, CH, CW))
    for i, j in [(0, 0), (0, 1), (2, 2), (7, 9), (15, 15)]:
        deps = channel_dependencies(learner, i, j)
        assert all(a < i or (a == i and b < j) for _, a, b in deps), (i, j)
        for near in ((i, j - 1), (i - 1, j), (i - 1, j + 1)):
            if 0 <= near[0] and 0 <= near[1] < CW:
                assert all((c, *near) in deps for c in range(3)), (i, j, near)
    assert (0, CH - 4, CW - 4) in channel_dependencies(learner, CH - 1, CW - 1)

"""The `paper` VAE family is the official model: with the official modules' weights copied in, repbench's encoder,
decoder and PixelCNN head give the same outputs, and the same ELBO terms, as a transcription of the official
forward passes (tests/models/official.py), for h = 0, 1, 2 and the full PixelCNN, grayscale and colour."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from repbench_models.vae import COLOUR_PRESETS, PRESETS, VAEModel

import official

CASES = [((1, 28, 28), 0), ((1, 28, 28), 1), ((1, 28, 28), 2), ((1, 28, 28), None),
         ((3, 32, 32), 0), ((3, 32, 32), 2), ((3, 32, 32), None)]


def randomize(module: nn.Module, gen: torch.Generator) -> None:
    """Non-trivial values everywhere, BatchNorm statistics and affine parameters included (eval mode uses them)."""
    with torch.no_grad():
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            if name.endswith("mask") or t.dtype == torch.long:
                continue
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=gen))
            elif name.endswith(("bias", "running_mean")) or t.dim() == 1:
                t.copy_(0.1 * torch.randn(t.shape, generator=gen))
            else:
                t.copy_(torch.randn(t.shape, generator=gen) / t[0].numel() ** 0.5)


def copy(src: nn.Module, dst: nn.Module) -> None:
    """Copy a layer's weights (and BatchNorm statistics); shapes must match exactly."""
    s, d = src.state_dict(), dst.state_dict()
    for key in d:
        if key != "mask" and key != "num_batches_tracked":
            assert s[key].shape == d[key].shape, key
            d[key].copy_(s[key])


def head_pairs(off: official.PixelCNN, head) -> list:
    pairs = [(off.in_cnn_2, head.feature_conv), (off.out_cnn1, head.out[0]), (off.out_cnn2, head.out[2])]
    if head.pixel_conv is not None:
        pairs.append((off.in_cnn_1, head.pixel_conv))
    for convs, block in zip(off.res, head.blocks):
        pairs += list(zip(convs, block.convs))
    return pairs


def grayscale_pairs(enc: official.DenseEncoder, dec: official.DenseDecoder, ours: VAEModel) -> list:
    e, d = ours.encoder, ours.decoder
    return [(enc.fc1, e[0]), (enc.bn1, e[1]), (enc.fc2, e[3]), (enc.bn2, e[4]), (enc.fc31, ours.mean_head),
            (enc.fc32, ours.std_head), (dec.fc1, d[0][0]), (dec.bn1, d[0][1]), (dec.fc2, d[0][3]),
            (dec.bn2, d[0][4]), (dec.fc3, d[1])]


def colour_pairs(enc: official.ResEncoder, dec: official.ResDecoder, ours: VAEModel) -> list:
    e, d = ours.encoder, ours.decoder
    pairs = [(enc.resnet_cnn00, e.residual_in), (enc.resnet_cnn01, e.shortcut_in), (enc.batchnorm_out, e.norm_out),
             (enc.en_mean, ours.mean_head), (enc.en_logstd, ours.std_head), (dec.fc, d.fc),
             (dec.batchnorm_out, d.norm_out), (dec.cnn_out, d.out)]
    for a, b in [(enc.resnet_cnn, e.convs), (enc.resnet_batchnorm, e.norms), (dec.resnet_up, d.ups),
                 (dec.resnet_cnn, d.convs5), (dec.resnet_cnn1, d.convs1), (dec.resnet_batchnorm, d.norms)]:
        assert len(a) == len(b)
        pairs += list(zip(a, b))
    return pairs


def rgb_order(k: int) -> torch.Tensor:
    """Official output channel of each of repbench's RGB mixture channels.

    Both start with the K logits; then repbench groups by (means, log-scales, coefficients) and channel within
    each, the official code by channel and (means, log-scales, coefficients) within each."""
    ours = [k + c * 3 * k + t * k + i for t in range(3) for c in range(3) for i in range(k)]
    return torch.tensor(list(range(k)) + ours)


def build(shape, horizon, seed=0):
    c = shape[0]
    cfg = (PRESETS if c == 1 else COLOUR_PRESETS)["paper"]
    ours = VAEModel(cfg, shape, horizon).eval()
    out = 3 * cfg.n_mix if c == 1 else 10 * cfg.n_mix
    if c == 1:
        enc = official.DenseEncoder(784, cfg.hidden, cfg.z_dim)
        dec = official.DenseDecoder(cfg.feature_channels, cfg.hidden, cfg.z_dim)
    else:
        enc = official.ResEncoder(cfg.z_dim, 3, cfg.hidden)
        dec = official.ResDecoder(cfg.z_dim, cfg.feature_channels, 3, cfg.hidden)
    head = official.PixelCNN(horizon, c, cfg.feature_channels, out, cfg.n_res, cfg.width, cfg.full_kernel)
    gen = torch.Generator().manual_seed(seed)
    for m in (enc, dec, head):
        randomize(m, gen)
        m.eval()
    pairs = (grayscale_pairs if c == 1 else colour_pairs)(enc, dec, ours) + head_pairs(head, ours.head)
    for src, dst in pairs:
        copy(src, dst)
    if c == 3:  # the same output layer, its rows in repbench's channel order
        with torch.no_grad():
            ours.head.out[2].weight.copy_(head.out_cnn2.weight[rgb_order(cfg.n_mix)])
            ours.head.out[2].bias.copy_(head.out_cnn2.bias[rgb_order(cfg.n_mix)])
    return ours, (enc, dec, head), cfg


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("shape,horizon", CASES, ids=[f"c{s[0]}-h{h}" for s, h in CASES])
def test_paper_model_equals_official(shape, horizon):
    ours, (enc, dec, head), cfg = build(shape, horizon)
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (3, *shape), generator=gen).float() / 127.5 - 1
    x[0, :, :2] = -1  # the edge bins too
    x[1, :, -2:] = 1
    with torch.no_grad():
        mean, std = ours.posterior(x)
        ref_mean, ref_std = enc(x)
        torch.testing.assert_close(mean, ref_mean, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(std, ref_std, atol=1e-5, rtol=1e-4)

        z = torch.randn(3, cfg.z_dim, generator=gen)
        params = ours.decoder_params(x, z)
        ref = head(x, dec(z))
        if shape[0] == 3:
            ref = ref[:, rgb_order(cfg.n_mix)]
        scale = ref.abs().max()
        torch.testing.assert_close(params, ref, atol=1e-5 * scale, rtol=1e-4)

        terms = ours.elbo_terms(x, z)
        ref_nll = (official.dmol_nll_1d if shape[0] == 1 else official.dmol_nll_rgb)(x, head(x, dec(z)))
        torch.testing.assert_close(terms["nll_nats"], ref_nll, rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(terms["kl_nats"], official.kl_diag_gaussian_std(ref_mean, ref_std),
                                   rtol=1e-5, atol=1e-4)
    # The official h = 0 head keeps a kernel-1 mask-A convolution whose 128 weights are always masked to zero.
    dead = head.in_cnn_1.weight.numel() if horizon == 0 else 0
    assert count(ours) == count(enc) + count(dec) + count(head) - dead


def test_h0_head_sees_no_pixel_but_keeps_the_zero_half():
    """h = 0: half of the first residual block's input is exactly zero, as in the official model."""
    ours, _, cfg = build((1, 28, 28), 0)
    seen = {}
    ours.head.blocks[0].register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0]))
    with torch.no_grad():
        ours.decoder_params(torch.zeros(2, 1, 28, 28), torch.randn(2, cfg.z_dim))
    assert seen["x"].shape[1] == cfg.width
    assert seen["x"][:, :cfg.width // 2].abs().max() == 0
    assert seen["x"][:, cfg.width // 2:].abs().max() > 0

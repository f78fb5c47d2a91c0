"""The `paper` M2 is the official M2 (model.py, m2_mnist.py, m2_svhn.py): with the official modules' weights
copied in, q(y|x), q(z|x, y), the decoder's parameters and L(x, y) agree, for MNIST (MLPs, h = 1) and SVHN (conv
nets, h = 2). repbench's decoder reads the code as [z, onehot(y)] where the official one reads [y, z]: the copy
permutes the first layer's input columns, the same function."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from repbench_models.m2 import COLOUR_PRESETS, PRESETS, M2Model

import official
from test_official import copy, count, head_pairs, randomize, rgb_order


def label_last(linear_src, linear_dst, classes: int) -> None:
    """Copy a first layer whose input is [y, z] into one whose input is [z, y]."""
    with torch.no_grad():
        w = linear_src.weight
        linear_dst.weight.copy_(torch.cat([w[:, classes:], w[:, :classes]], 1))
        linear_dst.bias.copy_(linear_src.bias)


def build(shape):
    c = shape[0]
    cfg = (PRESETS if c == 1 else COLOUR_PRESETS)["paper"]
    ours = M2Model(cfg, shape).eval()
    k, out = cfg.classes, (3 if c == 1 else 10) * cfg.n_mix
    if c == 1:
        cls, enc = official.M2Classifier(784, cfg.class_hidden, k), official.DenseEncoder(784 + k, cfg.hidden, cfg.z_dim)
        dec = official.DenseDecoderLabelled(cfg.feature_channels, cfg.hidden, cfg.z_dim + k)
    else:
        cls, enc, dec = official.M2ClassifierColour(), official.DCEncoder(cfg.z_dim), official.DCDecoder(cfg.z_dim)
    head = official.PixelCNN(cfg.h, c, cfg.feature_channels, out, cfg.n_res, cfg.width, cfg.full_kernel)
    gen = torch.Generator().manual_seed(0)
    for m in (cls, enc, dec, head):
        randomize(m, gen)
        m.eval()
    pairs = head_pairs(head, ours.head)
    if c == 1:
        mc, me, md = ours.classifier, ours.encoder, ours.decoder
        pairs += [(cls.fc1, mc[0][0]), (cls.bn1, mc[0][1]), (cls.fc2, mc[0][3]), (cls.bn2, mc[0][4]), (cls.fc3, mc[2]),
                  (enc.fc1, me[0]), (enc.bn1, me[1]), (enc.fc2, me[3]), (enc.bn2, me[4]),
                  (dec.bn1, md[0][1]), (dec.fc2, md[0][3]), (dec.bn2, md[0][4]), (dec.fc3, md[1])]
        label_last(dec.fc1, md[0][0], k)
    else:
        net, e, d = ours.classifier.net, ours.encoder, ours.decoder
        pairs += [(cls.conv1, net[0]), (cls.bn1, net[1]), (cls.conv2, net[5]), (cls.bn2, net[6]),
                  (cls.fc1, net[11]), (cls.bn3, net[12]), (cls.fc2, net[15]), (cls.bn4, net[16]), (cls.fc3, net[19])]
        pairs += [(conv, e.convs[3 * i]) for i, conv in enumerate(enc.convs)]
        pairs += [(bn, e.convs[3 * i + 1]) for i, bn in enumerate(enc.bns)]
        pairs += [(enc.y_linear, e.label[0]), (enc.label_bn, e.label[1]), (enc.ff, e.fc[0]), (enc.ff_bn, e.fc[1]),
                  (dec.bn1, d.fc[1]), (dec.ff2, d.fc[3]), (dec.bn2, d.fc[4])]
        pairs += [(deconv, d.ups[3 * i]) for i, deconv in enumerate(dec.deconvs)]
        pairs += [(bn, d.ups[3 * i + 1]) for i, bn in enumerate(dec.bns)]
        label_last(dec.ff1, d.fc[0], k)
    pairs += [(enc.fc31 if c == 1 else enc.en_mean, ours.mean_head),
              (enc.fc32 if c == 1 else enc.en_logstd, ours.std_head)]
    for src, dst in pairs:
        copy(src, dst)
    if c == 3:
        with torch.no_grad():
            ours.head.out[2].weight.copy_(head.out_cnn2.weight[rgb_order(cfg.n_mix)])
            ours.head.out[2].bias.copy_(head.out_cnn2.bias[rgb_order(cfg.n_mix)])
    return ours, (cls, enc, dec, head), cfg


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)], ids=["mnist", "svhn"])
def test_paper_m2_equals_official(shape):
    ours, (cls, enc, dec, head), cfg = build(shape)
    c, k = shape[0], cfg.classes
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (4, *shape), generator=gen).float() / 127.5 - 1
    y = torch.arange(4) % k
    onehot = F.one_hot(y, k).float()
    eps = torch.randn(4, cfg.z_dim, generator=gen)
    with torch.no_grad():
        torch.testing.assert_close(F.softmax(ours.class_logits(x), 1), cls(x), atol=1e-6, rtol=1e-5)
        mean, std = ours.q_z(x, y)
        ref_mean, ref_std = enc(torch.cat([x.flatten(1), onehot], 1)) if c == 1 else enc(x, onehot)
        torch.testing.assert_close(mean, ref_mean, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(std, ref_std, atol=1e-5, rtol=1e-4)
        z = mean + std * eps
        params = ours.decoder_params(x, ours.code(z, y))
        ref = head(x, dec(z, onehot))
        ref = ref if c == 1 else ref[:, rgb_order(cfg.n_mix)]
        torch.testing.assert_close(params, ref, atol=1e-5 * ref.abs().max(), rtol=1e-4)
        criterion = official.dmol_nll_1d if c == 1 else official.dmol_nll_rgb
        ref_l = official.m2_neg_elbo(enc, dec, head, criterion, x, onehot, eps, flatten_input=c == 1)
        torch.testing.assert_close(ours.neg_elbo(x, y, eps), ref_l, rtol=1e-4, atol=1e-3)
    assert count(ours) == sum(count(m) for m in (cls, enc, dec, head))

"""A transcription of the official code's forward passes (zmtomorrow/ImprovingVAERepresentationLearning:
pixelcnn.py, network.py, tools.py), kept to its layer order and its arithmetic, for the equivalence tests.

Only what the paper's models use is here: single_local_layer=True, if_pixel_bn=False, if_ed_bn=True, the Gaussian
prior. Nothing in repbench imports this file."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class MaskedCNN(nn.Conv2d):
    def __init__(self, mask_type, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("mask", torch.ones_like(self.weight))
        _, _, height, width = self.weight.size()
        self.mask[:, :, height // 2, width // 2 + (mask_type == "B"):] = 0
        self.mask[:, :, height // 2 + 1:, :] = 0

    def forward(self, x):
        return F.conv2d(x, self.weight * self.mask, self.bias, self.stride, self.padding)


class PixelCNN(nn.Module):
    """LocalPixelCNN (single_local_layer=True) when local_size is given, else FullPixelCNN; no BatchNorm."""

    def __init__(self, local_size, x_channels, in_channels_z, out_channels, res_num=5, channels=256, in_kernel=7):
        super().__init__()
        full = local_size is None
        kernel, pad = (in_kernel, in_kernel // 2) if full else (2 * local_size + 1, local_size)
        self.in_cnn_1 = MaskedCNN("A", x_channels, channels // 2, kernel, 1, pad, bias=False)
        self.in_cnn_2 = MaskedCNN("B", in_channels_z, channels // 2, 1, 1, 0, bias=False)
        k, p = (3, 1) if full else (1, 0)
        self.res = nn.ModuleList([nn.ModuleList([MaskedCNN("B", channels, channels, k, 1, p) for _ in range(3)])
                                  for _ in range(res_num)])
        self.out_cnn1 = nn.Conv2d(channels, channels, 1)
        self.out_cnn2 = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x, z_out):
        x = F.relu(torch.cat((self.in_cnn_1(x), self.in_cnn_2(z_out)), 1))
        for c11, c3, c12 in self.res:
            x = x + F.relu(c12(F.relu(c3(F.relu(c11(x))))))
        return self.out_cnn2(F.relu(self.out_cnn1(x)))


class DenseEncoder(nn.Module):
    def __init__(self, input_dim=784, h_dim=500, z_dim=32):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(input_dim, h_dim), nn.Linear(h_dim, h_dim)
        self.fc31, self.fc32 = nn.Linear(h_dim, z_dim), nn.Linear(h_dim, z_dim)
        self.bn1, self.bn2 = nn.BatchNorm1d(h_dim), nn.BatchNorm1d(h_dim)

    def forward(self, x):
        h = F.relu(self.bn2(self.fc2(F.relu(self.bn1(self.fc1(x.flatten(1)))))))
        return self.fc31(h), F.softplus(self.fc32(h))


class DenseDecoder(nn.Module):
    def __init__(self, o_dim=16, h_dim=500, z_dim=32):
        super().__init__()
        self.o_dim = o_dim
        self.fc1, self.fc2, self.fc3 = nn.Linear(z_dim, h_dim), nn.Linear(h_dim, h_dim), nn.Linear(h_dim, o_dim * 784)
        self.bn1, self.bn2 = nn.BatchNorm1d(h_dim), nn.BatchNorm1d(h_dim)

    def forward(self, z):
        h = F.relu(self.bn2(self.fc2(F.relu(self.bn1(self.fc1(z))))))
        return self.fc3(h).view(-1, self.o_dim, 28, 28)


class ResEncoder(nn.Module):
    def __init__(self, z_dim=64, res_num=3, h_dim=400):
        super().__init__()
        self.res_num = res_num
        self.resnet_cnn00, self.resnet_cnn01 = nn.Conv2d(3, h_dim, 3, 1, 1), nn.Conv2d(3, h_dim, 3, 1, 1)
        self.resnet_cnn = nn.ModuleList([nn.Conv2d(h_dim, h_dim, 3, 1, 1) for _ in range(res_num * 2 - 1)])
        self.resnet_batchnorm = nn.ModuleList([nn.BatchNorm2d(h_dim) for _ in range(res_num * 2 - 1)])
        self.batchnorm_out = nn.BatchNorm2d(h_dim)
        self.en_mean, self.en_logstd = nn.Linear(h_dim * 16, z_dim), nn.Linear(h_dim * 16, z_dim)

    def forward(self, x):
        for i in range(self.res_num):
            if i == 0:
                x_mid = self.resnet_cnn00(x)
                x = self.resnet_cnn01(x)
            else:
                x_mid = self.resnet_cnn[i * 2 - 1](F.elu(self.resnet_batchnorm[i * 2 - 1](x_mid)))
            x_mid = F.avg_pool2d(x_mid, [2, 2])
            x_mid = self.resnet_cnn[i * 2](F.elu(self.resnet_batchnorm[i * 2](x_mid)))
            x = F.avg_pool2d(x, [2, 2]) + x_mid
        x = F.elu(self.batchnorm_out(x)).view(x.size(0), -1)
        return self.en_mean(x), F.softplus(self.en_logstd(x))


class ResDecoder(nn.Module):
    def __init__(self, z_dim=64, out_channels=100, res_num=3, h_dim=400):
        super().__init__()
        self.h_dim, self.res_num = h_dim, res_num
        self.fc = nn.Linear(z_dim, h_dim * 16)
        self.resnet_up = nn.ModuleList([nn.ConvTranspose2d(h_dim, h_dim, 4, 2, 1) for _ in range(res_num * 2)])
        self.resnet_cnn1 = nn.ModuleList([nn.Conv2d(h_dim, h_dim, 1, 1) for _ in range(res_num)])
        self.resnet_cnn = nn.ModuleList([nn.Conv2d(h_dim, h_dim, 5, 1, 2) for _ in range(res_num)])
        self.resnet_batchnorm = nn.ModuleList([nn.BatchNorm2d(h_dim) for _ in range(res_num * 3)])
        self.batchnorm_out = nn.BatchNorm2d(h_dim)
        self.cnn_out = nn.Conv2d(h_dim, out_channels, 3, 1, 1)

    def forward(self, z):
        x = self.fc(z).view(-1, self.h_dim, 4, 4)
        bn = self.resnet_batchnorm
        for i in range(self.res_num):
            x_mid = self.resnet_up[i * 2](F.elu(bn[i * 3](x)))
            x_mid = self.resnet_cnn[i](F.elu(bn[i * 3 + 1](x_mid)))
            x_mid = self.resnet_cnn1[i](F.elu(bn[i * 3 + 2](x_mid)))
            x = self.resnet_up[i * 2 + 1](x) + x_mid
        return self.cnn_out(F.elu(self.batchnorm_out(x)))


def kl_diag_gaussian_std(mu, std):
    """batch_KL_diag_gaussian_std against N(0, I), in nats per image."""
    ratio = std ** 2
    return 0.5 * (torch.sum(mu ** 2, -1) + torch.sum(ratio, -1) - torch.sum(torch.log(ratio), -1) - mu.size(1))


def _bin_log_probs(x, means, log_scales):
    centered_x = x - means
    inv_stdv = torch.exp(-log_scales)
    plus_in = inv_stdv * (centered_x + 1. / 255.)
    min_in = inv_stdv * (centered_x - 1. / 255.)
    cdf_delta = torch.sigmoid(plus_in) - torch.sigmoid(min_in)
    mid_in = inv_stdv * centered_x
    log_pdf_mid = mid_in - log_scales - 2. * F.softplus(mid_in)
    inner_inner_cond = (cdf_delta > 1e-5).float()
    inner_inner_out = (inner_inner_cond * torch.log(torch.clamp(cdf_delta, min=1e-12))
                       + (1. - inner_inner_cond) * (log_pdf_mid - np.log(127.5)))
    inner_cond = (x > 0.999).float()
    inner_out = inner_cond * -F.softplus(min_in) + (1. - inner_cond) * inner_inner_out
    cond = (x < -0.999).float()
    return cond * (plus_in - F.softplus(plus_in)) + (1. - cond) * inner_out


def dmol_nll_1d(x, l):
    """discretized_mix_logistic_loss_1d: nats per image; params [logits K, means K, log-scales K]."""
    x, l = x.permute(0, 2, 3, 1), l.permute(0, 2, 3, 1)
    k = l.shape[-1] // 3
    logits = l[..., :k]
    rest = l[..., k:].contiguous().view(list(x.shape) + [2 * k])
    means, log_scales = rest[..., :k], torch.clamp(rest[..., k:], min=-7.)
    log_probs = _bin_log_probs(x.unsqueeze(-1), means, log_scales).sum(3) + torch.log_softmax(logits, -1)
    return -torch.logsumexp(log_probs, -1).sum((1, 2))


def dmol_nll_rgb(x, l):
    """discretized_mix_logistic_loss (PixelCNN++): params [logits K, then per channel (means, log-scales, coeffs)]."""
    x, l = x.permute(0, 2, 3, 1), l.permute(0, 2, 3, 1)
    k = l.shape[-1] // 10
    logits = l[..., :k]
    rest = l[..., k:].contiguous().view(list(x.shape) + [3 * k])
    means, log_scales = rest[..., :k], torch.clamp(rest[..., k:2 * k], min=-7.)
    coeffs = torch.tanh(rest[..., 2 * k:])
    xk = x.unsqueeze(-1).expand(*x.shape, k)
    m2 = means[:, :, :, 1] + coeffs[:, :, :, 0] * xk[:, :, :, 0]
    m3 = means[:, :, :, 2] + coeffs[:, :, :, 1] * xk[:, :, :, 0] + coeffs[:, :, :, 2] * xk[:, :, :, 1]
    means = torch.stack((means[:, :, :, 0], m2, m3), dim=3)
    log_probs = _bin_log_probs(xk, means, log_scales).sum(3) + torch.log_softmax(logits, -1)
    return -torch.logsumexp(log_probs, -1).sum((1, 2))


# ------------------------------------------------------------------------------------------ M2 (model.py M2)
class M2Classifier(nn.Module):
    """m2_classifier(if_bn=True): the MNIST q(y|x), softmax probabilities."""

    def __init__(self, x_dim=784, h_dim=500, y_dim=10):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(x_dim, h_dim), nn.Linear(h_dim, h_dim), nn.Linear(h_dim, y_dim)
        self.bn1, self.bn2 = nn.BatchNorm1d(h_dim), nn.BatchNorm1d(h_dim)

    def forward(self, x):
        x = F.relu(self.bn2(self.fc2(F.relu(self.bn1(self.fc1(x.flatten(1)))))))
        return F.softmax(self.fc3(x), dim=-1)


class M2ClassifierColour(nn.Module):
    """m2_classifier_color(if_bn=True) in eval mode (dropout off)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 6, 5), nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.fc3 = nn.Linear(400, 128), nn.Linear(128, 64), nn.Linear(64, 10)
        self.bn1, self.bn2, self.bn3, self.bn4 = (nn.BatchNorm2d(6), nn.BatchNorm2d(16), nn.BatchNorm1d(128),
                                                  nn.BatchNorm1d(64))

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2).flatten(1)
        x = F.relu(self.bn4(self.fc2(F.relu(self.bn3(self.fc1(x))))))
        return F.softmax(self.fc3(x), dim=-1)


class DCEncoder(nn.Module):
    """dc_encoder(if_label=True): q(z|x, y) for SVHN."""

    def __init__(self, z_dim=64):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(a, b, 5, 2, 2) for a, b in [(3, 32), (32, 64), (64, 128), (128, 256)]])
        self.bns = nn.ModuleList([nn.BatchNorm2d(c) for c in (32, 64, 128, 256)])
        self.y_linear, self.label_bn = nn.Linear(10, 20), nn.BatchNorm1d(20)
        self.ff, self.ff_bn = nn.Linear(1024 + 20, 256), nn.BatchNorm1d(256)
        self.en_mean, self.en_logstd = nn.Linear(256, z_dim), nn.Linear(256, z_dim)

    def forward(self, x, y):
        for conv, bn in zip(self.convs, self.bns):
            x = F.leaky_relu(bn(conv(x)), 0.2)
        y_embedding = F.leaky_relu(self.label_bn(self.y_linear(y)), 0.2)
        xy = F.leaky_relu(self.ff_bn(self.ff(torch.cat([x.flatten(1), y_embedding], 1))), 0.2)
        return self.en_mean(xy), F.softplus(self.en_logstd(xy))


class DCDecoder(nn.Module):
    """dc_decoder(if_label=True): the code [y, z] -> a 100-channel 32 x 32 feature map for the PixelCNN head."""

    def __init__(self, z_dim=64, out_channels=100, y_dim=10):
        super().__init__()
        self.ff1, self.bn1 = nn.Linear(z_dim + y_dim, 512), nn.BatchNorm1d(512)
        self.ff2, self.bn2 = nn.Linear(512, 1024), nn.BatchNorm1d(1024)
        self.deconvs = nn.ModuleList([nn.ConvTranspose2d(256, 128, 5, 1), nn.ConvTranspose2d(128, 64, 5, 1),
                                      nn.ConvTranspose2d(64, 64, 5, 1), nn.ConvTranspose2d(64, out_channels, 6, 2)])
        self.bns = nn.ModuleList([nn.BatchNorm2d(c) for c in (128, 64, 64)])

    def forward(self, z, y):
        z = torch.cat([y, z], dim=1)
        x = F.leaky_relu(self.bn1(self.ff1(z)), 0.2)
        x = F.leaky_relu(self.bn2(self.ff2(x)), 0.2).view(-1, 256, 2, 2)
        for deconv, bn in zip(self.deconvs, self.bns):
            x = F.leaky_relu(bn(deconv(x)), 0.2)
        return self.deconvs[-1](x)


class DenseDecoderLabelled(DenseDecoder):
    """densenet_decoder called with y: its input is [y, z]."""

    def forward(self, z, y):
        return super().forward(torch.cat([y, z], dim=1))


def m2_neg_elbo(enc, dec, head, criterion, x, y, eps, flatten_input):
    """-(loglikelihood + log p(y) - KL) of model.py's M2.forward with y given: L(x, y) in nats per image."""
    z_mu, z_std = enc(torch.cat([x.flatten(1), y], 1)) if flatten_input else enc(x, y)
    zs = z_mu + z_std * eps
    ll = -criterion(x, head(x, dec(zs, y)))
    return -(ll - np.log(y.shape[1]) - kl_diag_gaussian_std(z_mu, z_std))

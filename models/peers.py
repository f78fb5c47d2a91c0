"""Parts shared by the paper's peers (its Table 4): dim, simclr and aae (one file each beside this one).

- `ConvEncoder`: the DCGAN-like encoder of the Deep InfoMax experiments, used by dim and simclr, so the two
  differ only in their objectives. Grayscale: two 5x5 stride-2 convolutions (28 -> 14 -> 7), colour: three 4x4
  stride-2 convolutions (32 -> 16 -> 8 -> 4), BatchNorm and ReLU after each; then a fully connected layer and a
  linear map to the representation (32-d for grayscale, 64-d for colour, like the VAEs' z). It also returns
  its local feature map (the output of the second convolution: 7x7 for MNIST, 8x8 for CIFAR-10).
- Adversarial matching of codes to a prior through the one loss and the one Adam optimizer of the training
  loop: stopped gradients give the critic and the encoder each its own loss inside one scalar, so one backward
  pass trains the critic to tell prior samples from codes and the encoder to fool it (`adversarial_term`).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from repbench.config import TrainConfig
from repbench.errors import RepbenchError
from repbench.learners import TorchLearner


# ------------------------------------------------------------------------------------------ the adversary
def critic(in_dim: int, hidden: list[int]) -> nn.Sequential:
    """An MLP scoring codes: a logit, high for prior samples. No BatchNorm: it would normalise the prior's
    batch and the codes' batch apart and hide the very difference the critic must see."""
    layers: list[nn.Module] = []
    for a, b in zip([in_dim] + hidden[:-1], hidden):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(hidden[-1], 1))


def critic_loss(net: nn.Module, prior: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy (nats) of the critic: prior samples are real (1), codes fake (0). 2 ln 2 when it
    cannot tell them apart. In float32 also under autocast."""
    real, fake = net(prior).float(), net(codes).float()
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def adversarial_term(net: nn.Module, codes: torch.Tensor, prior: torch.Tensor, weight: float) -> torch.Tensor:
    """A term to add to a loss: its value is 0, so the loss still reads as the learner's own objective, while its
    gradient plays both sides of the game in one backward pass. The critic, on detached codes, learns to tell
    `prior` (real) from `codes` (fake). The encoder, through a copy of the critic whose parameters are detached,
    gets `weight` times the gradient of the non-saturating generator loss -log sigmoid(critic(codes)) (the one
    DIM and GANs use). A gradient-reversal layer (the critic's own cross-entropy, its gradient negated at the
    codes) would be the minimax game instead, whose gradient vanishes once the critic is confident: on mnist5k
    the prior critic of dim then won outright (cross-entropy 0.009 nats after 10 epochs, against 0.33 and
    rising with this form). The critic's cross-entropy is followed through `curve_metrics` (`critic_curve`)."""
    ce = critic_loss(net, prior, codes.detach())
    frozen = {name: p.detach() for name, p in net.named_parameters()}
    fool = F.softplus(-functional_call(net, frozen, (codes,)).float()).mean()
    term = ce + weight * fool
    return term - term.detach()


def critic_curve(net: nn.Module, codes: torch.Tensor, prior: torch.Tensor) -> dict[str, torch.Tensor]:
    """The critic's cross-entropy on test codes, for the training curves: near 2 ln 2 = 1.386 nats when the
    codes match the prior, lower when the critic tells them apart."""
    return {"test_critic_loss": critic_loss(net, prior, codes)}


# ------------------------------------------------------------------------------------------ the encoder
def _conv(cin: int, cout: int, kernel: int, padding: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride=2, padding=padding, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU())


class ConvEncoder(nn.Module):
    """Images as floats in [-1, 1] [B, C, H, W] -> (y [B, z_dim], local map [B, 2 * channels, h, w])."""

    def __init__(self, image_shape: tuple[int, int, int], channels: int, hidden: int, z_dim: int):
        super().__init__()
        c, h, w = image_shape
        if c == 1:  # 5x5 kernels, padding 2: each layer halves, rounding up (28 -> 14 -> 7, 12 -> 6 -> 3)
            self.local = nn.Sequential(_conv(1, channels, 5, 2), _conv(channels, 2 * channels, 5, 2))
            self.top = nn.Identity()
            out_c, out_h, out_w = 2 * channels, -(-h // 4), -(-w // 4)
        else:  # 4x4 kernels, padding 1: each layer halves, rounding down (32 -> 16 -> 8 -> 4)
            self.local = nn.Sequential(_conv(c, channels, 4, 1), _conv(channels, 2 * channels, 4, 1))
            self.top = _conv(2 * channels, 4 * channels, 4, 1)
            out_c, out_h, out_w = 4 * channels, h // 8, w // 8
        self.map_channels = 2 * channels
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(out_c * out_h * out_w, hidden), nn.BatchNorm1d(hidden),
                                  nn.ReLU(), nn.Linear(hidden, z_dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        local = self.local(x)
        return self.head(self.top(local)), local


def map_size(image_shape: tuple[int, int, int]) -> int:
    """Locations of `ConvEncoder`'s local map."""
    _, h, w = image_shape
    return -(-h // 4) * -(-w // 4) if image_shape[0] == 1 else (h // 4) * (w // 4)


# ------------------------------------------------------------------------------------------ learners
class ConvPeer(TorchLearner):
    """Presets chosen by the images: grayscale (`presets`, `train_presets`) or colour (`colour_*`)."""
    colour_presets: dict
    train_presets: dict[str, TrainConfig]
    colour_train_presets: dict[str, TrainConfig]

    def preset_config(self, preset: str):
        return (self.colour_presets if self.image_shape[0] == 3 else self.presets)[preset]

    def train_preset(self, preset: str) -> TrainConfig:
        return (self.colour_train_presets if self.image_shape[0] == 3 else self.train_presets)[preset]

    def validate(self) -> None:
        c, h, w = self.image_shape
        if c not in (1, 3):
            raise RepbenchError(f"learner '{self.name}' takes grayscale or RGB images, not {c} channels")
        if min(h, w) < 8:
            raise RepbenchError(f"learner '{self.name}' halves the image three times; {h}x{w} is too small "
                                f"(8x8 at least)")


def check_choice(learner: str, key: str, value, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise RepbenchError(f"learner '{learner}': {key} must be one of {', '.join(choices)}; got {value!r}")

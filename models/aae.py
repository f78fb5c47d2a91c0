"""aae: the adversarial autoencoder (Makhzani et al., 2016), a peer of the paper's Table 4.

A deterministic autoencoder with the vae's encoder and decoder (the VAEModel at h = 0: a plain decoder into
the discretized logistic mixture, like the ae baseline), whose code z is matched to the prior N(0, I) by a
critic on z instead of the VAE's KL term. It minimises the reconstruction NLL; the critic and the encoder play
their game inside the same loss (peers.adversarial_term, a term of value 0 whose gradients train both), so the
one Adam optimizer of the training loop trains all of it. Because z follows the prior, decoding prior draws gives images:
aae declares the generator ability (`sample`, `reconstruct`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from repbench.config import bounded
from repbench.learners import TorchLearner

from .dmol import to_unit
from .peers import adversarial_term, critic, critic_curve
from .vae import COLOUR_PRESETS, PRESETS, VAEConfig, VAEFamily, VAEModel, _levels, check_image_shape


@dataclass(frozen=True)
class AAEConfig(VAEConfig):
    adv_weight: float = bounded(1.0, min=0)     # weight of the encoder's loss of fooling the critic
    disc_hidden: int = bounded(1000, min=1)     # the critic: two hidden layers of this width (Makhzani's MNIST)


def _aae(presets: dict, disc_hidden: dict) -> dict:
    return {p: AAEConfig(**asdict(cfg), disc_hidden=disc_hidden[p]) for p, cfg in presets.items()}


DISC = {"paper": 1000, "medium": 500, "quick": 500, "smoke": 32}
AAE_PRESETS, AAE_COLOUR_PRESETS = _aae(PRESETS, DISC), _aae(COLOUR_PRESETS, DISC)


class AAEModel(VAEModel):
    """The vae's networks at h = 0 (the std head goes unused: the code is the mean head) and a critic on z."""

    def __init__(self, cfg: AAEConfig, image_shape: tuple[int, int, int]):
        super().__init__(cfg, image_shape, 0)
        self.critic = critic(cfg.z_dim, [cfg.disc_hidden, cfg.disc_hidden])

    def code(self, x: torch.Tensor) -> torch.Tensor:
        return self.posterior(x)[0]


class AAE(TorchLearner):
    """Adversarial autoencoder: the ae with its code matched to N(0, I) by a critic."""
    name = "aae"
    abilities = ("generator",)
    config_class = AAEConfig
    presets = AAE_PRESETS
    # The loss's value is the reconstruction NLL alone (the adversarial term adds gradients, not value), so the
    # curves are in bits/dim like the ae's; the critic's state has its own curve (test_critic_loss).
    loss_is_nll = True

    train_preset = VAEFamily.train_preset        # the vae's training settings, grayscale or colour
    bf16_paper_on_gpu = True                     # bf16 networks on a GPU at the paper preset; likelihood in float32

    def preset_config(self, preset: str) -> AAEConfig:
        return (AAE_COLOUR_PRESETS if self.image_shape[0] == 3 else AAE_PRESETS)[preset]

    def validate(self) -> None:
        check_image_shape(self.name, self.image_shape)

    def build_module(self) -> AAEModel:
        return AAEModel(self.config, self.image_shape)

    def loss(self, module: AAEModel, x_uint8: torch.Tensor) -> torch.Tensor:
        x = to_unit(x_uint8)
        z = module.code(x)
        nll = -module.pixel_log_prob(x, module.decoder_params(x, z)).sum((1, 2, 3)).mean()
        # adv_weight 0 still trains the critic (its curve then says how far the plain ae's codes are from
        # the prior) and leaves the encoder alone
        return nll + adversarial_term(module.critic, z, torch.randn_like(z), self.config.adv_weight)

    def curve_metrics(self, module: AAEModel, x_uint8: torch.Tensor) -> dict[str, float]:
        z = module.code(to_unit(x_uint8))
        return critic_curve(module.critic, z, torch.randn_like(z))

    def represent(self, x: torch.Tensor, kind: str = "mean") -> torch.Tensor:
        self.check_kind(kind)
        return self.batched(self.module.code, x)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images decoded from z ~ N(0, I), uint8 [n, C, H, W]."""
        z = torch.randn(n, self.config.z_dim, generator=generator, device=self.device)
        return _levels(self.module.eval().generate(z, generator))

    def reconstruct(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x's code decoded by sampling from p(x|z), uint8."""
        return _levels(self.module.eval().generate(self.batched(self.module.code, x), generator))

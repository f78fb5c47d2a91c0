"""dim: Deep InfoMax (Hjelm et al., 2019), one of the paper's peers in its Table 4.

The encoder (peers.ConvEncoder) maps an image to a global feature Y, the representation, through a local
feature map M. DIM maximises estimates of mutual information:
- local (weight beta, `local_weight`): between Y and the feature vector at each location of M, so Y keeps
  what the image's parts share;
- global (weight alpha, `global_weight`): between Y and the whole of M (a function of the image, so this is the
  image's information in Y).
The score of a pair (Y, M) is the dot product of two learned embeddings (each a 1x1-convolution residual
block with LayerNorm). Pairs from the same image are the joint's samples, pairs across the batch the product
of marginals. The estimators are Jensen-Shannon (`jsd`, the default) and InfoNCE (`nce`). Optionally (weight
gamma, `prior_weight`) Y is matched adversarially to a prior: sigmoid(Y) to the uniform on [0, 1]^d, or Y to
N(0, I). Defaults are the DIM(L) row of Table 4: alpha = 0, beta = 1, gamma = 0.1, uniform prior.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from repbench.config import TRAIN_PRESETS, TrainConfig, bounded
from repbench.errors import RepbenchError

from .dmol import to_unit
from .peers import ConvEncoder, ConvPeer, adversarial_term, check_choice, critic, critic_curve, map_size

ESTIMATORS = ("jsd", "nce")
PRIORS = ("uniform", "gaussian")
LOG2 = math.log(2.0)


# ------------------------------------------------------------------------------------------ estimators
def _pairs(u: torch.Tensor) -> torch.Tensor:
    """Scores u[i, j] or u[i, j, l] (Y of image i with M of image j, at location l) as [N, N, L]."""
    if u.ndim < 2 or u.shape[0] != u.shape[1]:
        raise ValueError(f"scores must be [N, N] or [N, N, L], got {list(u.shape)}")
    return u.reshape(u.shape[0], u.shape[0], -1)


def jsd_mi(u: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon estimate of mutual information from critic scores (pairs i == j are joint samples,
    i != j independent ones): E_joint[log 2 - softplus(-u)] - E_indep[softplus(u) - log 2].
    0 for a critic that scores everything alike at 0, up to 2 log 2 for one that separates perfectly."""
    u = _pairs(u.float())
    eye = torch.eye(len(u), dtype=torch.bool, device=u.device)
    return (LOG2 - F.softplus(-u[eye])).mean() - (F.softplus(u[~eye]) - LOG2).mean()


def infonce_mi(u: torch.Tensor) -> torch.Tensor:
    """InfoNCE estimate: each joint pair (i, i, l) is told apart from the pairs of Y_i with every location of
    every other image (j != i, any l'), K = (N - 1) L of them: mean log-softmax of the joint pair + log(K + 1).
    0 for scores all alike, at most log(K + 1) (log N for [N, N] scores)."""
    u = _pairs(u.float())
    n, _, locs = u.shape
    eye = torch.eye(n, dtype=torch.bool, device=u.device)
    pos = u[eye]                                                    # [N, L]
    others = torch.logsumexp(u[~eye].view(n, (n - 1) * locs), 1)    # [N]: log-sum-exp of Y_i's negatives
    return (pos - torch.logaddexp(pos, others[:, None])).mean() + math.log((n - 1) * locs + 1)


MI_ESTIMATORS = {"jsd": jsd_mi, "nce": infonce_mi}


# ------------------------------------------------------------------------------------------ the model
@dataclass(frozen=True)
class DIMConfig:
    z_dim: int = bounded(32, min=1)            # Y, the representation (64 for colour images)
    channels: int = bounded(64, min=1)         # the first convolution's channels, doubled by each next one
    hidden: int = bounded(1024, min=1)         # the fully connected layer before Y
    mi_units: int = bounded(2048, min=1)       # the embeddings of Y and M whose dot products are the scores
    estimator: str = "jsd"                     # jsd (Jensen-Shannon) or nce (InfoNCE)
    global_weight: float = bounded(0.0, min=0)  # alpha: I(Y; whole local map)
    local_weight: float = bounded(1.0, min=0)   # beta: I(Y; each location of the local map)
    prior_weight: float = bounded(0.1, min=0)   # gamma: adversarial prior matching of Y; 0 disables it
    prior: str = "uniform"                     # uniform (for sigmoid(Y)) or gaussian (for Y)
    disc_hidden: int = bounded(1000, min=1)    # the prior critic's layers: disc_hidden, then disc_hidden // 5


class Embed(nn.Module):
    """[B, C, L] -> [B, L, units]: a 1x1-convolution residual block with a linear shortcut and LayerNorm, so
    every location's embedding has the same scale and the dot-product scores stay in range."""

    def __init__(self, n_in: int, units: int):
        super().__init__()
        self.block = nn.Sequential(nn.Conv1d(n_in, units, 1, bias=False), nn.BatchNorm1d(units), nn.ReLU(),
                                   nn.Conv1d(units, units, 1))
        self.shortcut = nn.Conv1d(n_in, units, 1, bias=False)
        self.norm = nn.LayerNorm(units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm((self.block(x) + self.shortcut(x)).transpose(1, 2))


class DIMModel(nn.Module):
    def __init__(self, cfg: DIMConfig, image_shape: tuple[int, int, int]):
        super().__init__()
        self.cfg = cfg
        self.encoder = ConvEncoder(image_shape, cfg.channels, cfg.hidden, cfg.z_dim)
        c_map, units = self.encoder.map_channels, cfg.mi_units
        if cfg.local_weight > 0:  # only the networks an objective uses: no parameter without a gradient
            self.local_y, self.local_m = Embed(cfg.z_dim, units), Embed(c_map, units)
        if cfg.global_weight > 0:
            self.global_y = Embed(cfg.z_dim, units)
            self.global_m = nn.Sequential(nn.Flatten(), nn.Linear(c_map * map_size(image_shape), units), nn.ReLU(),
                                          nn.Linear(units, units))
        if cfg.prior_weight > 0:
            self.critic = critic(cfg.z_dim, [cfg.disc_hidden, max(1, cfg.disc_hidden // 5)])

    def represent(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)[0]

    def scores(self, y: torch.Tensor, m: torch.Tensor) -> dict[str, torch.Tensor]:
        """Critic scores of every (Y_i, M_j) pair: local [N, N, L], global [N, N]; in float32."""
        out = {}
        if self.cfg.local_weight > 0:
            gy, lm = self.local_y(y[:, :, None])[:, 0], self.local_m(m.flatten(2))      # [N, U], [N, L, U]
            out["local"] = torch.einsum("iu,jlu->ijl", gy.float(), lm.float())
        if self.cfg.global_weight > 0:
            gy, gm = self.global_y(y[:, :, None])[:, 0], self.global_m(m)                # [N, U], [N, U]
            out["global"] = gy.float() @ gm.float().T
        return out

    def prior_pair(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(codes, prior samples) for the critic; the samples from torch's global RNG."""
        if self.cfg.prior == "uniform":
            codes = torch.sigmoid(y)
            return codes, torch.rand_like(codes)
        return y, torch.randn_like(y)


# ------------------------------------------------------------------------------------------ the learner
PRESETS = {
    "paper": DIMConfig(),
    "medium": DIMConfig(channels=32, hidden=256, mi_units=256, disc_hidden=200),
    "quick": DIMConfig(channels=32, hidden=256, mi_units=256, disc_hidden=200),
    "smoke": DIMConfig(z_dim=8, channels=8, hidden=32, mi_units=16, disc_hidden=20),
}
COLOUR_PRESETS = {  # DIM's CIFAR-10 encoder: 64-128-256 convolutions, 1024 units, Y of 64
    "paper": DIMConfig(z_dim=64),
    "medium": DIMConfig(z_dim=64, channels=32, hidden=512, mi_units=512, disc_hidden=200),
    "quick": DIMConfig(z_dim=64, channels=32, hidden=256, mi_units=256, disc_hidden=200),
    "smoke": DIMConfig(z_dim=8, channels=8, hidden=32, mi_units=16, disc_hidden=20),
}
TRAIN = {**TRAIN_PRESETS, "quick": TrainConfig(epochs=10, batch_size=100, lr=1e-3, train_limit=5000, test_limit=1000),
         "medium": TrainConfig(epochs=20, batch_size=100, lr=1e-3),
         "paper": TrainConfig(epochs=100, batch_size=64, lr=1e-4, curve_every=5)}  # DIM's optimiser; MNIST's epochs
COLOUR_TRAIN = {**TRAIN, "paper": TrainConfig(epochs=1000, batch_size=64, lr=1e-4, curve_every=20)}  # DIM's CIFAR-10


class DIM(ConvPeer):
    """Deep InfoMax: a conv encoder's global feature, maximising its mutual information with local features.

    Jensen-Shannon or InfoNCE estimator, local and/or global objective, optional adversarial prior matching."""
    name = "dim"
    config_class = DIMConfig
    presets, colour_presets = PRESETS, COLOUR_PRESETS
    train_presets, colour_train_presets = TRAIN, COLOUR_TRAIN
    loss_is_nll = False  # the loss is minus the mutual-information estimate (nats), not a likelihood

    @property
    def display_name(self) -> str:
        """dim is DIM(L) with JSD; other estimators and the global-only objective say so: dim-nce, dim-global."""
        cfg = self.config
        return "dim" + ("" if cfg.estimator == "jsd" else f"-{cfg.estimator}") + \
            ("-global" if cfg.local_weight == 0 else "")

    def validate(self) -> None:
        super().validate()
        check_choice(self.name, "estimator", self.config.estimator, ESTIMATORS)
        check_choice(self.name, "prior", self.config.prior, PRIORS)
        if self.config.local_weight == 0 and self.config.global_weight == 0:
            raise RepbenchError("learner 'dim': local_weight and global_weight are both 0, so nothing is learned")

    def build_module(self) -> DIMModel:
        return DIMModel(self.config, self.image_shape)

    def mutual_info(self, module: DIMModel, x_uint8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(weighted mutual-information estimate in nats, Y) of a batch."""
        y, m = module.encoder(to_unit(x_uint8))
        weights = {"local": self.config.local_weight, "global": self.config.global_weight}
        mi = MI_ESTIMATORS[self.config.estimator]
        return sum(weights[k] * mi(u) for k, u in module.scores(y, m).items()), y

    def loss(self, module: DIMModel, x_uint8: torch.Tensor) -> torch.Tensor:
        mi, y = self.mutual_info(module, x_uint8)
        if self.config.prior_weight == 0:
            return -mi
        codes, prior = module.prior_pair(y)
        return -mi + adversarial_term(module.critic, codes, prior, self.config.prior_weight)

    def curve_metrics(self, module: DIMModel, x_uint8: torch.Tensor) -> dict[str, float]:
        if self.config.prior_weight == 0:
            return {}
        return critic_curve(module.critic, *module.prior_pair(module.represent(to_unit(x_uint8))))

    def represent(self, x: torch.Tensor, kind: str = "mean") -> torch.Tensor:
        self.check_kind(kind)
        return self.batched(lambda xb: self.module.represent(to_unit(xb)), x)

"""M2 (Kingma et al. 2014) with the VAE family's PixelCNN decoder head: the paper's Section 6.

Model: a classifier q(y|x), a Gaussian encoder q(z|x, y), priors p(y) = 1/K and p(z) = N(0, I), and a decoder
p(x|y, z): an MLP (grayscale) or a transposed-conv net (colour) from the code [z, onehot(y)] to a feature map,
then the PixelCNN head of models/pixelcnn.py with horizon `h` and the discretized logistic mixture of
models/dmol.py. `h` = 0 sees no pixel (the plain M2 decoder), h >= 1 is the local PixelCNN of horizon h, and
h = -1 asks for the full PixelCNN (every pixel before (i, j) in raster order).

Objective, in Kingma et al.'s notation: L and U are losses in nats, each the negative of a bound.
    L(x, y) = -E_q(z|x,y) log p(x|y, z) + KL(q(z|x,y) || p(z)) + log K      >= -log p(x, y)      (eq. 9)
    U(x)    = sum_y q(y|x) L(x, y) - H(q(y|x))                              >= -log p(x)         (eq. 10)
    J       = mean_labelled L + mean_unlabelled U + alpha mean_labelled [-log q(y|x)]          (eq. 11)
One z draw per (x, y); U enumerates every y, so an unlabelled image costs K decoder passes.

alpha = r (N + M) / N with the supervision rate r = 0.1, N labelled and M unlabelled images (M: every training
image, see below; `alpha_rule: code`, the default). This is the rule of the paper's code (0.1 x (unlabelled + labelled batches) / labelled
batches; batch rounding makes it 47 rather than 60 for 100 labels on MNIST) and Kingma et al.'s alpha = 0.1 N:
it weighs the cross-entropy against the per-image bounds by the number of images each labelled image stands
for. The paper's text prints alpha = r (N + M) / M (`alpha_rule: text`), about 0.1 whenever N << M, which
leaves the labels almost no weight next to bounds of hundreds of nats; it looks like N and M swapped.

Training data, as in the paper's code: the unlabelled set is every training image (the labelled ones too, their
labels unused there), and each training row pairs it with a labelled image and its label, cycling through the
labelled subset. A batch of B rows is thus B unlabelled and B labelled images: eq. 11 exactly at every step,
whatever B, N and M are, and BatchNorm always sees whole halves (never one image). The step's loss is J / 2,
the mean over its 2B images, so the training curve is in nats per image like the test curve (mean U of the test
images); Adam does not see the constant. `batch_size` counts rows, i.e. images of each half. Without labels
(fit without train_y) M2 trains U alone: an unsupervised mixture.

The paper's code takes lr 1e-3 (the text gives none; used here for every preset) and, in its MNIST script,
batch 32 and 100 epochs where the text says 16 and 50 (the text is followed here).

Representation: [mean of q(z|x, y_hat), q(y|x)] with y_hat = argmax q(y|x). M2 splits its code into a class y
and a style z (the decoder is told y, so z is pushed to hold what y does not): z alone would leave the class
out, and the mixture mean sum_y q(y|x) E[z|x, y] averages style codes from K different class-conditional
encoders. The pair keeps both halves, deterministically; its dimension is z_dim + K.

Abilities: `labels` and `classifier` (q(y|x)); `likelihood` with posterior(x) = q(z|x, y_hat) and
elbo_terms(x, z)["nll_nats"] = -log p(x|y_hat, z) + log K = -log p(x, y_hat | z). Then the battery's
log w = log p(x, y_hat, z) - log q(z|x, y_hat) is an importance weight for p(x, y_hat) <= p(x): `bpd` and
`bpd_iw` are valid bounds on -log p(x), those of q(y|x) replaced by a point mass at its guess (not M2's own U,
which the training curves report as test_loss). No `posterior` ability: that would make the battery's
representation z alone (the first half of `embedding`), not the pair above. `generator`: y uniform, z from
the prior, x from p(x|y, z); reconstructions decode the guess and the mean of q(z|x, y_hat).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from repbench.config import TrainConfig, bounded
from repbench.metrics.information import kl_to_standard_normal
from repbench.errors import RepbenchError
from repbench.learners import TorchLearner

from .dmol import num_params, to_unit
from .pixelcnn import PixelCNNHead
from .vae import VAEModel, _levels, as_unit, at_least_float32, mlp

FULL = -1            # the value of h that asks for the full PixelCNN
ALPHA_RULES = ("code", "text")


@dataclass(frozen=True)
class M2Config:
    h: int = bounded(1, min=FULL)               # decoder horizon: 0 none, >= 1 local, -1 the full PixelCNN
    labels: int = bounded(100, min=1)           # labelled training images asked for (the label budget)
    classes: int = bounded(10, min=2)           # K, the number of values of y
    z_dim: int = bounded(64, min=1)
    hidden: int = bounded(500, min=1)           # encoder / decoder width: MLP units, or the colour nets' first convs
    feature_channels: int = bounded(32, min=1)  # channels of the decoder's feature map fed to the PixelCNN head
    width: int = bounded(256, min=2)            # PixelCNN head width
    n_res: int = bounded(5, min=0)              # residual blocks in the head
    n_mix: int = bounded(10, min=1)             # logistic mixture components
    full_kernel: int = bounded(7, min=3, odd=True)  # the full PixelCNN's first (mask-A) kernel
    class_hidden: int = bounded(500, min=1)     # classifier width
    dropout: float = bounded(0.0, min=0)        # classifier dropout (the paper's SVHN classifier: 0.3)
    r: float = bounded(0.1, min=0)              # supervision rate: the cross-entropy weight alpha derives from it
    alpha_rule: str = "code"                    # "code": alpha = r (N + M) / N; "text": r (N + M) / M


PRESETS = {  # grayscale: MLPs of `hidden` units; paper = Table 6's MNIST model
    "paper": M2Config(),
    "medium": M2Config(hidden=256, feature_channels=8, width=32, n_res=2),
    "quick": M2Config(hidden=256, feature_channels=8, width=32, n_res=2),
    "smoke": M2Config(labels=20, z_dim=8, hidden=32, feature_channels=4, width=16, n_res=1, n_mix=3,
                      class_hidden=32),
}
COLOUR_PRESETS = {  # colour: conv nets of hidden, 2, 4, 8 x hidden channels; paper = Table 6's SVHN model
    "paper": M2Config(h=2, labels=1000, hidden=32, feature_channels=100, class_hidden=128, dropout=0.3),
    "medium": M2Config(h=2, labels=1000, hidden=16, feature_channels=16, width=32, n_res=2, class_hidden=64,
                       dropout=0.3),
    "quick": M2Config(h=2, labels=1000, hidden=16, feature_channels=16, width=32, n_res=2, class_hidden=64,
                      dropout=0.3),
    "smoke": M2Config(h=2, labels=20, z_dim=8, hidden=4, feature_channels=4, width=16, n_res=1, n_mix=3,
                      class_hidden=16),
}
# Batches count rows, each an unlabelled and a labelled image; an unlabelled image costs K decoder passes, so
# evaluation batches are small.
TRAIN = {
    "paper": TrainConfig(epochs=50, batch_size=16, lr=1e-3, eval_batch_size=100, curve_every=5),
    "medium": TrainConfig(epochs=5, batch_size=50, lr=1e-3, eval_batch_size=100),
    "quick": TrainConfig(epochs=5, batch_size=50, lr=1e-3, eval_batch_size=100, train_limit=5000,
                         test_limit=1000),
    "smoke": TrainConfig(epochs=1, batch_size=25, lr=1e-3, eval_batch_size=50, train_limit=300, test_limit=100),
}
COLOUR_TRAIN = {**TRAIN, "paper": TrainConfig(epochs=20, batch_size=32, lr=1e-3, eval_batch_size=50,
                                               curve_every=5)}


# ------------------------------------------------------------------------------------------ networks
def leaky(channels: int, conv: bool) -> list[nn.Module]:
    return [(nn.BatchNorm2d if conv else nn.BatchNorm1d)(channels), nn.LeakyReLU(0.2)]


class ConvEncoder(nn.Module):
    """q(z|x, y) for colour: four 5x5 stride-2 convs (BatchNorm, leaky ReLU) on x, then one FC layer on the conv
    features joined with an embedding of y (the paper's SVHN encoder)."""

    def __init__(self, channels: int, width: int, image_hw: tuple[int, int], classes: int):
        super().__init__()
        sizes = [channels, width, 2 * width, 4 * width, 8 * width]
        self.convs = nn.Sequential(*[m for a, b in zip(sizes[:-1], sizes[1:])
                                     for m in [nn.Conv2d(a, b, 5, 2, 2), *leaky(b, conv=True)]])
        self.label = nn.Sequential(nn.Linear(classes, 20), *leaky(20, conv=False))
        conv_dim = 8 * width * (image_hw[0] // 16) * (image_hw[1] // 16)
        self.out_dim = 8 * width
        self.fc = nn.Sequential(nn.Linear(conv_dim + 20, self.out_dim), *leaky(self.out_dim, conv=False))

    def forward(self, x: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.cat([self.convs(x).flatten(1), self.label(onehot)], dim=1))


class ConvDecoder(nn.Module):
    """The code [z, onehot(y)] -> a feature map for the PixelCNN head, the paper's SVHN decoder (the official
    dc_decoder): two FC layers to a 2x2 grid of 8 x width channels, three 5x5 stride-1 transposed convs (8w -> 4w
    -> 2w -> 2w channels, 2 -> 14 pixels) and a 6x6 stride-2 one to 32 x 32. Images of another size get the map
    resized to theirs (nearest), so the small presets' tests can use small images; 32 x 32 is the official model."""

    def __init__(self, code_dim: int, width: int, feature_channels: int, image_hw: tuple[int, int]):
        super().__init__()
        self.image_hw = image_hw
        self.base = (8 * width, 2, 2)
        self.fc = nn.Sequential(nn.Linear(code_dim, 16 * width), *leaky(16 * width, conv=False),
                                nn.Linear(16 * width, 32 * width), *leaky(32 * width, conv=False))
        sizes = [8 * width, 4 * width, 2 * width, 2 * width]
        ups = [m for a, b in zip(sizes[:-1], sizes[1:]) for m in [nn.ConvTranspose2d(a, b, 5, 1), *leaky(b, conv=True)]]
        self.ups = nn.Sequential(*ups, nn.ConvTranspose2d(2 * width, feature_channels, 6, 2))

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        out = self.ups(self.fc(code).view(len(code), *self.base))
        return out if tuple(out.shape[2:]) == tuple(self.image_hw) else F.interpolate(out, size=self.image_hw)


class ConvClassifier(nn.Module):
    """q(y|x) for colour: two 5x5 convs with 2x2 max-pooling, three FC layers; BatchNorm, ReLU, dropout (the
    paper's SVHN classifier)."""

    def __init__(self, channels: int, width: int, image_hw: tuple[int, int], classes: int, dropout: float):
        super().__init__()
        side = [((s - 4) // 2 - 4) // 2 for s in image_hw]
        drop = lambda: nn.Dropout(dropout)  # noqa: E731
        self.net = nn.Sequential(
            nn.Conv2d(channels, 6, 5), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2), drop(),
            nn.Conv2d(6, 16, 5), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2), drop(), nn.Flatten(),
            nn.Linear(16 * side[0] * side[1], width), nn.BatchNorm1d(width), nn.ReLU(), drop(),
            nn.Linear(width, width // 2), nn.BatchNorm1d(width // 2), nn.ReLU(), drop(),
            nn.Linear(width // 2, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class M2Model(nn.Module):
    """q(y|x), q(z|x, y) and p(x|y, z). The decoder half speaks the VAE family's API with the code [z, onehot(y)]
    in place of z, so `decoder_params`, `pixel_log_prob` and the samplers are the VAE family's own."""

    def __init__(self, cfg: M2Config, image_shape: tuple[int, int, int]):
        super().__init__()
        c, h, w = image_shape
        k = cfg.classes
        self.cfg, self.image_shape, self.classes = cfg, image_shape, k
        self.code_dim = cfg.z_dim + k
        if c == 1:  # MNIST: MLPs; the encoder reads [x, onehot(y)]
            self.classifier = nn.Sequential(mlp([h * w, cfg.class_hidden, cfg.class_hidden]),
                                            nn.Dropout(cfg.dropout), nn.Linear(cfg.class_hidden, k))
            self.encoder = mlp([h * w + k, cfg.hidden, cfg.hidden])
            enc_dim = cfg.hidden
            self.decoder = nn.Sequential(mlp([self.code_dim, cfg.hidden, cfg.hidden]),
                                         nn.Linear(cfg.hidden, cfg.feature_channels * h * w))
        else:       # SVHN / CIFAR-10: conv nets, 32 -> 2 -> 32
            self.classifier = ConvClassifier(c, cfg.class_hidden, (h, w), k, cfg.dropout)
            self.encoder = ConvEncoder(c, cfg.hidden, (h, w), k)
            enc_dim = self.encoder.out_dim
            self.decoder = ConvDecoder(self.code_dim, cfg.hidden, cfg.feature_channels, (h, w))
        self.mean_head = nn.Linear(enc_dim, cfg.z_dim)
        self.std_head = nn.Linear(enc_dim, cfg.z_dim)
        self.head = PixelCNNHead(c, cfg.feature_channels, cfg.width, cfg.n_res, num_params(cfg.n_mix, c),
                                 None if cfg.h == FULL else cfg.h, cfg.full_kernel)

    features = VAEModel.features
    decoder_params = VAEModel.decoder_params
    pixel_log_prob = VAEModel.pixel_log_prob
    generate = VAEModel.generate

    def class_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of q(y|x) [B, K]."""
        x = as_unit(x)
        return at_least_float32(self.classifier(x.flatten(1) if self.image_shape[0] == 1 else x))

    def guess(self, x: torch.Tensor) -> torch.Tensor:
        return self.class_logits(x).argmax(1)

    def q_z(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x, y) -> (mean, std), each [B, Z]."""
        x = as_unit(x)
        onehot = F.one_hot(y, self.classes).to(x.dtype)
        if self.image_shape[0] == 1:
            e = self.encoder(torch.cat([x.flatten(1), onehot], dim=1))
        else:
            e = self.encoder(x, onehot)
        return at_least_float32(self.mean_head(e)), F.softplus(at_least_float32(self.std_head(e)))

    def code(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.cat([z, F.one_hot(y, self.classes).to(z.dtype)], dim=1)

    def neg_elbo(self, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        """L(x, y) per image [B], nats: one z = mean + std * eps from q(z|x, y)."""
        x = as_unit(x)
        mean, std = self.q_z(x, y)
        z = mean + std * (torch.randn_like(std) if eps is None else eps)
        nll = -self.pixel_log_prob(x, self.decoder_params(x, self.code(z, y))).sum((1, 2, 3))
        return nll + kl_to_standard_normal(mean, std) + math.log(self.classes)

    def neg_elbo_every_class(self, x: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        """L(x, y) for every y [B, K], one decoder pass per (x, y); eps [K, B, Z] fixes the draws."""
        b, k = len(x), self.classes
        ys = torch.arange(k, device=x.device).repeat_interleave(b)
        flat_eps = None if eps is None else eps.reshape(k * b, -1)
        return self.neg_elbo(x.repeat(k, 1, 1, 1), ys, flat_eps).view(k, b).t()

    def unlabelled_loss(self, x: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        """U(x) per image [B]: sum_y q(y|x) L(x, y) - H(q(y|x)) >= -log p(x)."""
        x = as_unit(x)
        log_q = F.log_softmax(self.class_logits(x), dim=1)
        q = log_q.exp()
        return (q * self.neg_elbo_every_class(x, eps)).sum(1) + (q * log_q).sum(1)

    def terms(self, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        """Per-row terms of eq. 11 for a batch of (unlabelled image, labelled image, its label) rows. The
        labelled images go through the classifier on their own: the cross-entropy sees nothing else."""
        unlabelled, labelled, y = batch
        return {"unlabelled": self.unlabelled_loss(unlabelled), "labelled": self.neg_elbo(labelled, y),
                "cross_entropy": F.cross_entropy(self.class_logits(labelled), y, reduction="none")}


# ------------------------------------------------------------------------------------------ the learner
class M2(TorchLearner):
    """Semi-supervised M2 (Kingma et al. 2014) with a PixelCNN head of horizon h: the paper's Section 6."""
    name = "m2"
    kinds = ("mean",)
    abilities = ("labels", "classifier", "likelihood", "generator")
    config_class = M2Config
    presets = PRESETS
    bf16_paper_on_gpu = True  # class logits, posterior and likelihood leave autocast as float32
    model_version = 2  # 2: the official PixelCNN head and the official SVHN decoder
    _alpha: float | None = None  # set by training_data from the numbers of labelled and unlabelled images

    def preset_config(self, preset: str) -> M2Config:
        return (COLOUR_PRESETS if self.image_shape[0] == 3 else PRESETS)[preset]

    def train_preset(self, preset: str) -> TrainConfig:
        return (COLOUR_TRAIN if self.image_shape[0] == 3 else TRAIN)[preset]

    def validate(self) -> None:
        c, height, width = self.image_shape
        if c not in (1, 3):
            raise RepbenchError(f"learner '{self.name}' models grayscale or RGB images, not {c} channels")
        if c == 3 and (height % 16 or width % 16):
            raise RepbenchError(f"m2's colour nets halve the image four times; {height}x{width} is not a "
                                f"multiple of 16")
        if self.config.h > max(height, width):
            raise RepbenchError(f"h = {self.config.h} is wider than the image {(height, width)}; use h = -1 for "
                                f"the full PixelCNN")
        if self.config.alpha_rule not in ALPHA_RULES:
            raise RepbenchError(f"alpha_rule must be one of {', '.join(ALPHA_RULES)}, got "
                                f"{self.config.alpha_rule!r}")
        if not self.config.dropout < 1:
            raise RepbenchError(f"dropout must be below 1, got {self.config.dropout}")

    @property
    def display_name(self) -> str:
        h = "full" if self.config.h == FULL else f"h{self.config.h}"
        return f"m2-{h}-n{self.config.labels}"

    @property
    def label_budget(self) -> int:
        return self.config.labels

    def alpha(self, n_labelled: int, n_unlabelled: int) -> float:
        """The cross-entropy weight of eq. 11 (see the module's docstring for the two rules)."""
        ratio = n_labelled if self.config.alpha_rule == "code" else n_unlabelled
        return self.config.r * (n_labelled + n_unlabelled) / ratio

    def build_module(self) -> M2Model:
        return M2Model(self.config, self.image_shape)

    # ------------------------------------------------------------------------------------ training
    def training_data(self, train_x: torch.Tensor, train_y=None, labelled=None):
        """(images, labelled images, their labels), aligned: every training image once as an unlabelled image,
        each beside a labelled image cycled from the labelled subset. Only the labels at `labelled` are read.
        Without labels: the images alone."""
        self._alpha = None
        if train_y is None or labelled is None or len(labelled) == 0:
            return train_x
        idx = torch.as_tensor(labelled, dtype=torch.long).flatten()
        y = torch.as_tensor(train_y)
        if len(y) != len(train_x) or idx.min() < 0 or idx.max() >= len(train_x):
            raise RepbenchError(f"labels do not fit the training images: {len(y)} labels for {len(train_x)} "
                                f"images, labelled indices in [{int(idx.min())}, {int(idx.max())}]")
        y_lab = y[idx].long()
        if y_lab.min() < 0 or y_lab.max() >= self.config.classes:
            raise RepbenchError(f"m2 was built for {self.config.classes} classes (option classes); the labels "
                                f"run from {int(y_lab.min())} to {int(y_lab.max())}")
        self._alpha = self.alpha(len(idx), len(train_x))
        cycle = torch.arange(len(train_x)) % len(idx)
        return train_x, train_x[idx][cycle], y_lab[cycle]

    def loss(self, module: M2Model, batch) -> torch.Tensor:
        """Mean nats per image: J / 2 over (unlabelled, labelled, label) rows (eq. 11); mean U of plain images."""
        if not isinstance(batch, tuple):
            return module.unlabelled_loss(to_unit(batch)).mean()
        if self._alpha is None:
            raise RepbenchError("m2 got a labelled batch but no alpha: build the data with training_data")
        t = module.terms(batch)
        return (t["unlabelled"] + t["labelled"] + self._alpha * t["cross_entropy"]).mean() / 2

    def curve_metrics(self, module: M2Model, x_uint8: torch.Tensor) -> dict[str, torch.Tensor]:
        """KL(q(z|x, y_hat) || p(z)) of the test images: the information in z beside the class guess."""
        x = to_unit(x_uint8)
        mean, std = module.q_z(x, module.guess(x))
        return {"test_mutual_info": kl_to_standard_normal(mean.double(), std.double()).mean()}

    # ------------------------------------------------------------------------------------ abilities
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """q(y|x) [N, K] of uint8 images."""
        return self.batched(lambda xb: F.softmax(self.module.class_logits(xb), dim=1), x)

    def represent(self, x: torch.Tensor, kind: str = "mean") -> torch.Tensor:
        """[mean of q(z|x, y_hat), q(y|x)], [N, z_dim + K]."""
        self.check_kind(kind)

        def rep(xb):
            logits = self.module.class_logits(xb)
            mean, _ = self.module.q_z(xb, logits.argmax(1))
            return torch.cat([mean, F.softmax(logits, dim=1)], dim=1)
        return self.batched(rep, x)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x, y_hat): the Gaussian that `elbo_terms` pairs with p(x, y_hat | z)."""
        x = self.ready(x)
        return self.module.q_z(x, self.module.guess(x))

    def elbo_terms(self, x: torch.Tensor, z: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """nll_nats = -log p(x | y_hat, z) + log K and kl_nats = KL(q(z|x, y_hat) || p(z)), per image."""
        m = self.module
        x = as_unit(self.ready(x))
        y = m.guess(x)
        mean, std = m.q_z(x, y)
        if z is None:
            z = mean + std * torch.randn_like(std)
        nll = -m.pixel_log_prob(x, m.decoder_params(x, m.code(z, y))).sum((1, 2, 3)) + math.log(m.classes)
        return {"nll_nats": nll, "kl_nats": kl_to_standard_normal(mean, std)}

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images: y uniform, z from the prior, x from p(x|y, z); uint8 [n, C, H, W]."""
        y = torch.randint(self.config.classes, (n,), generator=generator, device=self.device)
        z = torch.randn(n, self.config.z_dim, generator=generator, device=self.device)
        return _levels(self.module.eval().generate(self.module.code(z, y), generator))

    def reconstruct(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode the class guess and the mean of q(z|x, y_hat) by sampling from p(x|y_hat, z), uint8."""
        def code(xb):
            y = self.module.guess(xb)
            return self.module.code(self.module.q_z(xb, y)[0], y)
        return _levels(self.module.eval().generate(self.batched(code, x), generator))

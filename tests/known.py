"""A learner with known answers, written straight against `repbench.Learner` (no torch module, no training).

Its code is the one-hot label of an image, read from the image's first pixel (level 20 * label), times `scale`;
its posterior is N(code, std^2) and its likelihood is uniform over the 256 levels of every pixel. So:
bpd = 8 bits/dim + KL / (D ln 2), mutual_info = scale^2 / 2 nats with std 1, the representations of ten balanced
classes span 9 dimensions, and probes read the label perfectly once scale is large and std small.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

import repbench
from repbench.data.datasets import ImageData, make_synthetic
from repbench.metrics import kl_to_standard_normal


class KnownCode(repbench.Learner):
    """One-hot label code with a Gaussian posterior and a uniform likelihood (known answers)."""
    name = "known-code"
    kinds = ("mean", "sample", "embedding")
    abilities = ("posterior", "likelihood", "classifier")
    option_defaults = {"scale": 3.0, "std": 0.01, "classes": 10}

    def fit(self, train_x, test_x=None, **fit_options):
        self.history = [{"epoch": 1, "train_loss": 8.0}]
        self.fitted = True
        return self

    def _opt(self, key):
        return self.options.get(key, self.option_defaults[key])

    def posterior(self, x):
        labels = (x[:, 0, 0, 0].long() // 20).clamp(max=self._opt("classes") - 1)
        mean = torch.nn.functional.one_hot(labels, self._opt("classes")).double() * self._opt("scale")
        return mean, torch.full_like(mean, self._opt("std"))

    def predict_proba(self, x):
        """The label read off the first pixel, with certainty."""
        mean, _ = self.posterior(x)
        return (mean > 0).double() if self._opt("scale") > 0 else torch.full_like(mean, 1 / mean.shape[1])

    def elbo_terms(self, x, z=None):
        mean, std = self.posterior(x)
        num_dims = x[0].numel()
        nll = torch.full((len(x),), num_dims * math.log(256.0), dtype=torch.float64)
        return {"nll_nats": nll, "kl_nats": kl_to_standard_normal(mean, std)}

    def represent(self, x, kind="mean"):
        self.check_kind(kind)
        mean, std = self.posterior(x)
        if kind == "embedding":
            return torch.cat([mean, std], 1).float()
        return (mean if kind == "mean" else mean + std * torch.randn(mean.shape, dtype=mean.dtype)).float()

    def save(self, path):
        Path(path).write_text(json.dumps({"learner": self.name, "options": self.options}))

    def load(self, path):
        saved = json.loads(Path(path).read_text())
        if saved.get("learner") != self.name:
            raise repbench.RepbenchError(f"{path} holds no {self.name}")
        return self


def coded_data(n_train=400, n_test=200) -> ImageData:
    """The generated bars, with each image's label written into its first pixel."""
    d = make_synthetic(n_train, n_test)
    tx, vx = d.train_x.clone(), d.test_x.clone()
    tx[:, 0, 0, 0] = (d.train_y * 20).to(torch.uint8)
    vx[:, 0, 0, 0] = (d.test_y * 20).to(torch.uint8)
    return ImageData("coded", tx, d.train_y, vx, d.test_y, 10)


def cond_entropy_of(std: float, z: int) -> float:
    return z * (0.5 * (1 + math.log(2 * math.pi)) + math.log(std))



"""The MLP probe's networks: one per probe seed, trained side by side as one batched model.

Seed s on its own is nn.Sequential(Linear(d, hidden), ReLU, Dropout, BatchNorm1d, Linear(hidden, classes)) built
after torch.manual_seed(s), trained by Adam on batches in the order of torch.randperm with a generator seeded s.
Here every seed draws its initialisation and dropout masks from a generator of its own and its batch order from
a second one, so the global random state is neither read nor changed, and a seed's network is the same whether
it trains alone or beside others. The batched products (bmm) amortise the per-step cost of a model this small
over the seeds; on one CPU thread they compute each seed's slice as its own product.
"""
from __future__ import annotations

import math
import threading

import torch
import torch.nn as nn
import torch.nn.functional as F

BN_MOMENTUM, BN_EPS = 0.1, 1e-5  # nn.BatchNorm1d's defaults
PREDICT_ROWS = 20_000            # test rows per prediction pass: k = 100 samples go through in a few passes
STOP = threading.Event()  # set while an interrupted battery waits for its fits in other threads: they end early


def linear_init(fan_in: int, fan_out: int, g: torch.Generator, device) -> tuple[torch.Tensor, torch.Tensor]:
    """nn.Linear's initialisation drawn from `g`: weight [fan_out, fan_in], bias [fan_out]."""
    w = torch.empty(fan_out, fan_in, device=device)
    nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=g)
    bound = 1 / math.sqrt(fan_in)
    return w, torch.empty(fan_out, device=device).uniform_(-bound, bound, generator=g)


class ProbeMLPs:
    """S probe MLPs d -> hidden -> classes, one per seed, as one batched model on `device`."""

    def __init__(self, d: int, hidden: int, classes: int, seeds, dropout: float, device: torch.device):
        self.device, self.dropout, self.hidden = device, dropout, hidden
        self.gens = [torch.Generator(device).manual_seed(int(s)) for s in seeds]   # initialisation, dropout
        self.orders = [torch.Generator().manual_seed(int(s)) for s in seeds]       # batch order
        layers = [linear_init(d, hidden, g, device) + linear_init(hidden, classes, g, device) for g in self.gens]
        self.w1, self.b1, self.w2, self.b2 = (torch.stack(p).requires_grad_() for p in zip(*layers))
        n = len(self.gens) * hidden  # BatchNorm over [batch, seed x hidden]: per feature, as each seed's own
        self.bn_w = torch.ones(n, device=device, requires_grad=True)
        self.bn_b = torch.zeros(n, device=device, requires_grad=True)
        self.running = (torch.zeros(n, device=device), torch.ones(n, device=device))

    def logits(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        """[S, B, d] -> [S, B, classes]."""
        h = torch.relu(torch.baddbmm(self.b1[:, None], x, self.w1.transpose(1, 2)))
        if train and self.dropout > 0:
            h = h * self._dropout_masks(h.shape[1])
        s, b, width = h.shape
        h = F.batch_norm(h.transpose(0, 1).reshape(b, s * width), *self.running, self.bn_w, self.bn_b, train,
                         BN_MOMENTUM, BN_EPS).view(b, s, width).transpose(0, 1)
        return torch.baddbmm(self.b2[:, None], h, self.w2.transpose(1, 2))

    def _dropout_masks(self, rows: int) -> torch.Tensor:
        # nn.Dropout's own mask on the CPU: bernoulli_(1 - p), divided by 1 - p, one call per seed's generator
        keep = 1 - self.dropout
        return torch.stack([torch.empty(rows, self.hidden, device=self.device).bernoulli_(keep, generator=g)
                            .div_(keep) for g in self.gens])

    def fit(self, train: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int, lr: float,
            weight_decay: float = 0.0) -> "ProbeMLPs":
        """Adam (with `weight_decay`, L2 on every parameter) on cross-entropy; train [S, N, d] and labels y [S, N]
        on the device."""
        # foreach: Adam's per-parameter update, bit for bit, in a few calls instead of one per tensor
        opt = torch.optim.Adam([self.w1, self.b1, self.bn_w, self.bn_b, self.w2, self.b2], lr=lr,
                               weight_decay=weight_decay, foreach=True)
        seed_rows = torch.arange(len(train), device=self.device)[:, None]
        for _ in range(epochs):
            if STOP.is_set():
                raise RuntimeError("probe fit stopped: the battery was interrupted")
            order = torch.stack([torch.randperm(train.shape[1], generator=g) for g in self.orders]).to(self.device)
            for i in range(0, order.shape[1], batch_size):
                idx = order[:, i:i + batch_size]
                if idx.shape[1] < 2:  # BatchNorm cannot train on one row
                    continue
                logits = self.logits(train[seed_rows, idx], train=True)
                # the sum of the seeds' mean losses: each seed's gradient is its own mean loss's
                loss = F.cross_entropy(logits.flatten(0, 1), y[seed_rows, idx].flatten(), reduction="sum")
                opt.zero_grad(set_to_none=True)
                (loss / idx.shape[1]).backward()
                opt.step()
        return self

    def predict(self, test: list[torch.Tensor]) -> torch.Tensor:
        """Class probabilities [S, M, classes], each seed's averaged over its k test samples ([k, M, d] each)."""
        k, m = test[0].shape[:2]
        step = max(1, PREDICT_ROWS // m)
        parts = []
        with torch.inference_mode():
            for i in range(0, k, step):
                x = torch.stack([t[i:i + step] for t in test]).to(self.device)  # [S, step, M, d]
                logits = self.logits(x.flatten(1, 2), train=False)
                parts.append(torch.softmax(logits, -1).view(len(test), -1, m, logits.shape[-1]))
        return torch.cat(parts, 1).mean(1)

"""The fixed battery of metrics, run on a trained learner and a dataset's fixed split.

Representations are extracted once and cached on disk under a key made of the checkpoint's bytes and the
extraction settings, so re-running metrics never re-encodes. For probabilistic learners the cache holds the
posterior means and stds; the representation types of the paper's Table 1 are derived from them:
`mean` (MAP), `sample_k1` (one posterior sample), `sample_k100` (probe scores averaged over 100 test-time samples;
the probe trains on one sample per image) and `embedding` (mean and std concatenated).
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .data import ImageData
from .metrics import (METRICS, bits_per_dim, cond_entropy, importance_weighted_bits_per_dim, intrinsic_dim,
                      kl_to_standard_normal, linear_probe, mutual_info, nonlinear_probe, pca_spectrum)
from .registry import RepbenchError

GROUPS = ("bpd", "bpd_iw", "mutual_info", "intrinsic_dim", "linear_probe", "nonlinear_probe", "rep_types")
REP_TYPES = ("sample_k1", "sample_k100", "mean", "embedding")


@dataclass(frozen=True)
class BatteryConfig:
    metrics: tuple[str, ...] = GROUPS
    probe_seeds: int = 3
    iw_samples: int = 10           # k of the importance-weighted bound
    test_samples: int = 100        # k of the `sample_k100` representation type
    linear_method: str = "linearsvc"
    nonlinear_epochs: int = 20

    def __post_init__(self):
        bad = [m for m in self.metrics if m not in GROUPS]
        if bad:
            raise RepbenchError(f"unknown metric {', '.join(map(repr, bad))}; available: {', '.join(GROUPS)}")


BATTERY_PRESETS = {  # the battery's size follows the training preset's unless options say otherwise
    "smoke": BatteryConfig(probe_seeds=1, iw_samples=4, test_samples=20, nonlinear_epochs=3),
    "quick": BatteryConfig(),
    "medium": BatteryConfig(),
    "paper": BatteryConfig(),
}


def battery_for(preset: str, overrides: dict | None = None) -> BatteryConfig:
    from .config import override
    return override(BATTERY_PRESETS[preset], overrides or {}, "battery")


@dataclass
class BatteryResult:
    metrics: dict[str, float | None] = field(default_factory=dict)   # None: not applicable to this learner
    spectrum: list[float] = field(default_factory=list)
    probes: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # probe -> rep type -> per-seed %
    timings_s: dict[str, float] = field(default_factory=dict)


def probabilistic(learner) -> bool:
    return "embedding" in getattr(learner, "kinds", ())


def has_likelihood(learner) -> bool:
    return all(hasattr(learner, m) for m in ("elbo_terms", "posterior"))


# ------------------------------------------------------------------------------------------ extraction
def cache_key(learner, data: ImageData, checkpoint: Path | None) -> str:
    h = hashlib.sha256()
    if checkpoint is not None and Path(checkpoint).exists():
        h.update(Path(checkpoint).read_bytes())
    else:
        for k, v in sorted(learner.module.state_dict().items()):
            h.update(k.encode()), h.update(v.detach().cpu().numpy().tobytes())
    h.update(repr((data.name, tuple(data.train_x.shape), tuple(data.test_x.shape), learner.kinds, "v1")).encode())
    return h.hexdigest()[:16]


def extract(learner, data: ImageData, cache_dir: Path | None = None, checkpoint: Path | None = None) -> dict:
    """{"train": {"mean", ["std"]}, "test": {...}}: float32 CPU tensors, cached by checkpoint and settings."""
    path = Path(cache_dir) / f"reps-{cache_key(learner, data, checkpoint)}.pt" if cache_dir else None
    if path is not None and path.exists():
        return torch.load(path, weights_only=True)
    reps = {}
    for split, x in (("train", data.train_x), ("test", data.test_x)):
        if probabilistic(learner):
            emb = learner.represent(x, "embedding").float().cpu()
            d = emb.shape[1] // 2
            reps[split] = {"mean": emb[:, :d].contiguous(), "std": emb[:, d:].contiguous()}
        else:
            reps[split] = {"mean": learner.represent(x, "mean").float().cpu()}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(reps, path)
    return reps


def rep_views(split: dict, rep_type: str, k: int, generator: torch.Generator) -> torch.Tensor:
    """The representation type as [N, d], or [k, N, d] for test-time sample averaging."""
    if rep_type == "mean":
        return split["mean"]
    if rep_type == "embedding":
        return torch.cat([split["mean"], split["std"]], 1)
    eps = torch.randn((k,) + tuple(split["mean"].shape), generator=generator)
    samples = split["mean"] + split["std"] * eps
    return samples[0] if k == 1 else samples


# ------------------------------------------------------------------------------------------ metrics
def likelihood_terms(learner, x_all: torch.Tensor, k: int, seed: int, progress: bool) -> tuple[float, float | None]:
    """(bpd, bpd_iw): the single-sample ELBO averaged over k draws, and the k-sample importance-weighted bound."""
    dist = torch.distributions.Normal
    elbos, log_ws = [], []
    bs = learner.train_config.eval_batch_size
    with torch.random.fork_rng(devices=[learner.device] if learner.device.type == "cuda" else []), \
            torch.inference_mode():
        torch.manual_seed(seed + 7)
        learner.module.eval()
        for i in tqdm(range(0, len(x_all), bs), desc="likelihood", disable=not progress, leave=False):
            x = x_all[i:i + bs].to(learner.device)
            mean, std = learner.posterior(x)
            kl = kl_to_standard_normal(mean, std)
            batch_elbo, batch_w = [], []
            for _ in range(k):
                z = mean + std * torch.randn_like(std)
                nll = learner.elbo_terms(x, z)["nll_nats"]
                batch_elbo.append(nll + kl)
                batch_w.append(-nll + dist(0.0, 1.0).log_prob(z).sum(-1) - dist(mean, std).log_prob(z).sum(-1))
            elbos.append(torch.stack(batch_elbo).mean(0).cpu())
            log_ws.append(torch.stack(batch_w).cpu())
    nll_plus_kl = torch.cat(elbos)
    bpd = bits_per_dim(nll_plus_kl, torch.zeros_like(nll_plus_kl), learner.num_dims)
    return bpd, importance_weighted_bits_per_dim(torch.cat(log_ws, 1), learner.num_dims) if k > 1 else None


def probe_table(reps: dict, train_y, test_y, cfg: BatteryConfig, types: tuple[str, ...], which: tuple[str, ...],
                device, progress: bool) -> dict[str, dict[str, list[float]]]:
    out: dict[str, dict[str, list[float]]] = {w: {t: [] for t in types} for w in which}
    jobs = [(w, t, s) for w in which for t in types for s in range(cfg.probe_seeds)]
    for w, t, s in tqdm(jobs, desc="probes", disable=not progress, leave=False):
        g = torch.Generator().manual_seed(1000 + s)
        k = cfg.test_samples if t == "sample_k100" else 1
        train = rep_views(reps["train"], t, 1, g).numpy()
        test = rep_views(reps["test"], t, k, g).numpy()
        if w == "linear_probe":
            acc = linear_probe(train, train_y, test, test_y, seed=s, method=cfg.linear_method)
        else:
            acc = nonlinear_probe(train, train_y, test, test_y, seed=s, epochs=cfg.nonlinear_epochs, device=device)
        out[w][t].append(acc)
    return out


def run_battery(learner, data: ImageData, cfg: BatteryConfig = BatteryConfig(), *, seed: int = 0,
                cache_dir: Path | None = None, checkpoint: Path | None = None, progress: bool = True) -> BatteryResult:
    res = BatteryResult()
    want = set(cfg.metrics)
    clock = time.perf_counter()

    def lap(name):
        nonlocal clock
        now = time.perf_counter()
        res.timings_s[name] = round(now - clock, 3)
        clock = now

    if want & {"bpd", "bpd_iw"}:
        if has_likelihood(learner):
            k = cfg.iw_samples if "bpd_iw" in want else 1
            res.metrics["bpd"], res.metrics["bpd_iw"] = likelihood_terms(learner, data.test_x, k, seed, progress)
            if "bpd_iw" not in want:
                res.metrics.pop("bpd_iw")
        else:
            res.metrics.update({m: None for m in want & {"bpd", "bpd_iw"}})
        lap("likelihood")
    reps = extract(learner, data, cache_dir, checkpoint)
    lap("extract")
    if "mutual_info" in want:
        std = reps["test"].get("std")
        res.metrics["mutual_info"] = mutual_info(reps["test"]["mean"], std) if std is not None else None
        res.metrics["cond_entropy"] = cond_entropy(std) if std is not None else None
        lap("mutual_info")
    if "intrinsic_dim" in want:
        res.spectrum = pca_spectrum(reps["test"]["mean"]).tolist()
        res.metrics["intrinsic_dim"] = intrinsic_dim(reps["test"]["mean"])
        lap("intrinsic_dim")
    which = tuple(p for p in ("linear_probe", "nonlinear_probe") if p in want or "rep_types" in want)
    types = (REP_TYPES if probabilistic(learner) else ("mean",)) if "rep_types" in want else ("mean",)
    for probe in which:
        res.probes.update(probe_table(reps, data.train_y.numpy(), data.test_y.numpy(), cfg, types, (probe,),
                                      learner.device, progress))
        lap(probe)
    for probe, by_type in res.probes.items():
        for t, accs in by_type.items():
            name = probe if t == "mean" else f"{probe}.{t}"
            res.metrics[name], res.metrics[name + "_std"] = float(np.mean(accs)), float(np.std(accs))
    return res


def unit_of(name: str) -> tuple[str, str]:
    """(unit, "higher"/"lower") for a battery metric name, including per-type and _std variants."""
    base = name.split(".")[0].removesuffix("_std")
    if base not in METRICS:
        return "", ""
    info = METRICS.get(base)
    return info.unit, "higher" if info.higher_is_better else "lower"


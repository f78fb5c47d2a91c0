"""The battery: the chosen registered metrics, run in a loop on a learner (or on bare representations).

Representations are extracted once and cached on disk under a key made of the checkpoint's bytes and the
extraction settings, so re-running metrics never re-encodes. For learners with a posterior the cache holds the
posterior means and stds, from which the probes derive the representation types of the paper's Table 1.
Each metric declares what it needs; one whose needs the learner does not meet gets None ("does not apply").
"""
from __future__ import annotations

import hashlib
import time
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import seeds
from ..learners import Learner, has_ability
from ..config import bounded, check_fields, eval_batch, override
from ..data import ImageData
from ..metrics import (KNN_DISTANCES, LINEAR_METHODS, METRICS, PROBE_PROTOCOLS, Values, battery_metrics, default_metrics,
                       entry_of, kl_to_standard_normal)
from ..errors import RepbenchError
from ..registry import unknown_name
from ..files import WriteError, atomic_save


def setting(default, *, flag: str | None = None, help: str = "", suite: bool = True, metavar: str | None = None,
            choices: tuple[str, ...] | None = None, **bounds):
    """A battery setting, declared once: its default and bounds (as config.bounded), its command-line option
    (`flag`; None: it has none) with its help, and whether a suite file's `battery:` may set it. The CLI's
    options and the suite file's keys are generated from these (battery_flags, BATTERY_KEYS)."""
    meta = {"flag": flag, "help": help, "suite": suite, "metavar": metavar, "choices": choices}
    return field(default=default, metadata={**(bounded(default, **bounds).metadata if bounds else {}), **meta})


@dataclass(frozen=True)
class BatteryConfig:
    metrics: tuple[str, ...] = field(default_factory=default_metrics)
    probe_seeds: int = setting(3, min=1, flag="--probe-seeds", help="Repeats of each probe.")
    iw_samples: int = setting(10, min=1, flag="--iw-samples",  # bpd_iw needs k >= 2
                              help="Samples k of the importance-weighted bound bpd_iw.")
    test_samples: int = setting(100, min=1)    # k of the `sample_k100` representation type
    linear_method: str = setting("linearsvc", flag="--linear-method", choices=LINEAR_METHODS,
                                 help="linearsvc: standardized LinearSVC; svc: SVC(kernel='linear') on the raw "
                                      "features, as in the paper's code; torch: LinearSVC's objective by L-BFGS "
                                      "(fast on many dimensions).")
    nonlinear_epochs: int = setting(20, min=1, flag="--probe-epochs", help="Epochs of the MLP probe.")
    nonlinear_dropout: float = setting(0.1, min=0, flag="--probe-dropout",  # a rate below 1
                                       help="Dropout of the MLP probe (0.1: the paper's text; its code has 0 by a "
                                            "typo).")
    nonlinear_standardize: bool = setting(True)  # the MLP probe on standardized features (the paper's code: raw)
    id_threshold: float = setting(0.01, above=0, flag="--id-threshold",
                                  help="intrinsic_dim counts eigenvalues at least this fraction of the largest.")
    knn_k: int = setting(20, min=1, flag="--knn-k",
                         help="Neighbours of the k-NN probe; at most the training images (and the smallest label "
                              "count with label_efficiency).")
    knn_distance: str = setting("cosine", flag="--knn-distance", choices=KNN_DISTANCES,
                                help="The k-NN probe's distance: cosine (votes exp(cos / 0.07)) or euclidean "
                                     "(votes 1 / distance).")
    probe_protocol: str = setting("fixed", flag="--probe-protocol", choices=PROBE_PROTOCOLS,
                                  help="fixed: the probes' hyper-parameters as set; tuned: the linear probe's C and "
                                       "the MLP's learning rate and weight decay chosen on a fifth of the training "
                                       "representations (the same rows for every learner), then refit on all.")
    eval_batch_size: int | None = setting(None, min=1, suite=False)  # images per likelihood call (None: the
    # device's default, config.eval_batch); changes no value
    label_counts: tuple[int, ...] = setting((100, 600, 1000, 3000), flag="--label-counts", metavar="N,N,...",
                                            help="Labelled training images for label_efficiency.")

    def __post_init__(self):
        known = battery_metrics()
        if isinstance(self.metrics, str) or not all(isinstance(m, str) for m in self.metrics):
            raise RepbenchError(f"metrics must be a list of names; available: {', '.join(known)}")
        bad = [m for m in self.metrics if m not in known]
        if bad:
            raise RepbenchError(unknown_name("metric", bad[0], known))
        if not self.metrics:
            raise RepbenchError(f"no metric chosen; available: {', '.join(known)}")
        check_fields(self)
        if not self.label_counts or any(isinstance(n, bool) or not isinstance(n, int) or n < 10
                                        for n in self.label_counts):
            raise RepbenchError(f"label_counts must be integers >= 10, got {self.label_counts!r}")
        if "bpd_iw" in self.metrics and self.iw_samples < 2:
            raise RepbenchError(f"iw_samples must be an integer >= 2 for bpd_iw, got {self.iw_samples}")
        if not self.nonlinear_dropout < 1:
            raise RepbenchError(f"nonlinear_dropout must be a number >= 0 and < 1, got {self.nonlinear_dropout!r}")
        if not self.id_threshold < 1:
            raise RepbenchError(f"id_threshold must be a number > 0 and < 1, got {self.id_threshold!r}")
        for f in fields(self):
            if f.metadata.get("choices") and getattr(self, f.name) not in f.metadata["choices"]:
                raise RepbenchError(f"unknown {f.name} '{getattr(self, f.name)}'; use "
                                    f"{', '.join(f.metadata['choices'])}")
        if "label_efficiency" in self.metrics and self.knn_k > min(self.label_counts):
            raise RepbenchError(f"knn_k ({self.knn_k}) must be at most the smallest of label_counts "
                                f"({min(self.label_counts)}): label_efficiency's k-NN probe votes among that many "
                                f"labelled representations")

    def check_data(self, data: ImageData) -> None:
        """The settings that the data bounds, checked before any work: a k-NN probe needs at least knn_k
        training images."""
        knn = [m for m in self.metrics if "knn_k" in METRICS.get(m).settings]
        if knn and self.knn_k > len(data.train_y):
            raise RepbenchError(f"knn_k ({self.knn_k}) is more than the {len(data.train_y)} training images of "
                                f"{data.name} that {knn[0]} votes among; choose a smaller --knn-k")


# The paper's protocol: its text first, its official code where the text is silent. A linear SVM is
# SVC(kernel="linear") on the unscaled posterior means (the code); the MLP probe has dropout 0.1 (the text; the
# code's `nn.Dropout(0,1)` is a rate of 0 by a typo: `--probe-dropout 0` gives the code's) and trains 100 epochs
# on unscaled features (the code's class_epochs and ClassNet). The intrinsic dimension counts eigenvalues of the
# test means' covariance; the text says "non-zero", which a float spectrum never has, so 1% of the largest stays.
# quick and medium keep the faster standardized LinearSVC and a 20-epoch MLP on standardized features.
PAPER_BATTERY = BatteryConfig(linear_method="svc", nonlinear_epochs=100, nonlinear_standardize=False)

BATTERY_PRESETS = {  # the battery's size follows the training preset's unless options say otherwise
    "smoke": BatteryConfig(probe_seeds=1, iw_samples=4, test_samples=20, nonlinear_epochs=3, label_counts=(100,)),
    "quick": BatteryConfig(),
    "medium": BatteryConfig(),
    "paper": PAPER_BATTERY,
}


# The keys of a suite file's `battery:` (its `metrics` is a key of its own, beside `battery`).
BATTERY_KEYS = tuple(f.name for f in fields(BatteryConfig) if f.metadata.get("suite"))


@dataclass(frozen=True)
class Flag:
    """A battery setting's command-line option, from its declaration."""
    name: str                   # the BatteryConfig field it sets
    flag: str
    help: str                   # with the presets' values: [default; smoke: 1; paper: 100]
    kind: type
    metavar: str | None = None
    choices: tuple[str, ...] | None = None


def battery_flags() -> list[Flag]:
    out = []
    for f in fields(BatteryConfig):
        if f.metadata.get("flag"):
            values = [(p, getattr(cfg, f.name)) for p, cfg in BATTERY_PRESETS.items()]
            shown = [_shown(getattr(BatteryConfig(), f.name))] + [f"{p}: {_shown(v)}" for p, v in values
                                                                   if v != getattr(BatteryConfig(), f.name)]
            out.append(Flag(f.name, f.metadata["flag"], f"{f.metadata['help']} [{'; '.join(shown)}]",
                            str if isinstance(f.default, tuple) else type(f.default), f.metadata.get("metavar"),
                            f.metadata.get("choices")))
    return out


def flag_values(given: dict) -> dict:
    """The battery options a command was given (None: not given), as BatteryConfig fields; a list option
    (--label-counts 100,1000) is read into integers."""
    out = {}
    for flag in battery_flags():
        value = given.get(flag.name)
        if value is not None and isinstance(getattr(BatteryConfig(), flag.name), tuple):
            try:
                value = tuple(int(n) for n in value.split(",") if n.strip())
            except ValueError:
                raise RepbenchError(f"{flag.flag} expects integers like 100,1000, got '{value}'") from None
        if value is not None:
            out[flag.name] = value
    return out


def _shown(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def battery_for(preset: str, overrides: dict | None = None) -> BatteryConfig:
    if preset not in BATTERY_PRESETS:
        raise RepbenchError(f"unknown preset '{preset}'; available: {', '.join(BATTERY_PRESETS)}")
    return override(BATTERY_PRESETS[preset], overrides or {}, "battery")


@dataclass
class BatteryResult:
    metrics: dict[str, float | None] = field(default_factory=dict)   # None: does not apply to this learner
    spectrum: list[float] = field(default_factory=list)
    probes: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # probe -> rep type -> per-seed %
    timings_s: dict[str, float] = field(default_factory=dict)
    measured_with: dict[str, dict] = field(default_factory=dict)     # metric -> the settings that produced it


# ------------------------------------------------------------------------------------------ inputs
@dataclass
class LikelihoodPass:
    neg_elbo_nats: torch.Tensor   # [N] single-sample negative ELBO, averaged over the k draws
    log_weights: torch.Tensor     # [k, N] log p(x|z) + log p(z) - log q(z|x)
    num_dims: int


class Inputs:
    """What metrics read: the data's fixed split with labels, the representations (extracted once, cached), and
    for a learner with a likelihood, one shared likelihood pass per number of samples."""

    def __init__(self, data: ImageData, learner=None, reps: dict | None = None, *, cache_dir: Path | None = None,
                 checkpoint: Path | None = None, batch_size: int | None = None, progress: bool = False):
        self.data, self.learner, self._reps = data, learner, reps
        self.device = learner.device if learner is not None else torch.device("cpu")
        self.batch_size = eval_batch(batch_size, self.device)
        self.cache_dir, self.checkpoint, self.progress = cache_dir, checkpoint, progress
        self._likelihood: dict[int, LikelihoodPass] = {}
        self._memo: dict = {}
        self.timings_s: dict[str, float] = {}

    def memo(self, key, compute):
        """A value computed once per battery and shared between metrics (e.g. probe accuracies)."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def has(self, need: str) -> bool:
        if need == "representations":
            return True
        if need == "labels":
            return self.data.train_y is not None and self.data.test_y is not None
        if need == "posterior":
            return "std" in self.reps["test"]
        return self.learner is not None and has_ability(self.learner, need)

    @property
    def reps(self) -> dict:
        if self._reps is None:
            start = time.perf_counter()
            self._reps = extract(self.learner, self.data, self.cache_dir, self.checkpoint)
            self.timings_s["extract"] = time.perf_counter() - start
        return self._reps

    def likelihood(self, k: int, generator: torch.Generator) -> LikelihoodPass:
        if k not in self._likelihood:
            start = time.perf_counter()
            self._likelihood[k] = likelihood_pass(self.learner, self.data.test_x, k, generator, self.batch_size,
                                                  self.progress)
            self.timings_s["likelihood"] = self.timings_s.get("likelihood", 0.0) + time.perf_counter() - start
        return self._likelihood[k]


class NoiseStream:
    """Standard normal draws [k, n, dim] for the next n images, drawn in fixed chunks of images, so the draws an
    image gets (and so every likelihood number) do not depend on the evaluation batch size."""
    CHUNK = 100

    def __init__(self, k: int, generator: torch.Generator):
        self.k, self.generator, self.buffer = k, generator, None

    def take(self, n: int, like: torch.Tensor) -> torch.Tensor:
        while self.buffer is None or self.buffer.shape[1] < n:
            fresh = torch.randn((self.k, self.CHUNK) + tuple(like.shape[1:]), generator=self.generator,
                                device=like.device, dtype=like.dtype)
            self.buffer = fresh if self.buffer is None else torch.cat([self.buffer, fresh], 1)
        out, self.buffer = self.buffer[:, :n], self.buffer[:, n:]
        return out


def likelihood_pass(learner, x_all: torch.Tensor, k: int, generator: torch.Generator, batch_size: int,
                    progress: bool) -> LikelihoodPass:
    """k posterior draws per test image: the single-sample ELBO of each, and the importance weights."""
    dist = torch.distributions.Normal
    elbos, log_ws = [], []
    noise = NoiseStream(k, generator)
    # The images go to the device once and the results come back once: no copy, and so no wait, per batch.
    x_all = x_all.to(learner.device)
    prior = dist(torch.zeros((), device=learner.device), torch.ones((), device=learner.device))
    with torch.inference_mode():
        for i in tqdm(range(0, len(x_all), batch_size), desc="likelihood", disable=not progress, leave=False):
            x = x_all[i:i + batch_size]
            mean, std = learner.posterior(x)
            kl = kl_to_standard_normal(mean, std)
            batch_elbo, batch_w = [], []
            for eps in noise.take(len(x), std):
                z = mean + std * eps
                nll = learner.elbo_terms(x, z)["nll_nats"]
                batch_elbo.append(nll + kl)
                batch_w.append(-nll + prior.log_prob(z).sum(-1) - dist(mean, std).log_prob(z).sum(-1))
            elbos.append(torch.stack(batch_elbo).mean(0))
            log_ws.append(torch.stack(batch_w))
    c, h, w = x_all.shape[1:]
    return LikelihoodPass(torch.cat(elbos).cpu(), torch.cat(log_ws, 1).cpu(), c * h * w)


# ------------------------------------------------------------------------------------------ extraction
def cache_key(learner, data: ImageData, checkpoint: Path | None) -> str | None:
    """A key of the learner's trained state and the extraction settings; None when the state has no bytes."""
    h = hashlib.sha256()
    if checkpoint is not None and Path(checkpoint).exists():
        h.update(Path(checkpoint).read_bytes())
    else:
        state = learner.state_bytes()
        if state is None:
            return None
        h.update(state)
    h.update(repr((data.name, tuple(data.train_x.shape), tuple(data.test_x.shape), learner.kinds, "v1")).encode())
    return h.hexdigest()[:16]


def extract(learner, data: ImageData, cache_dir: Path | None = None, checkpoint: Path | None = None) -> dict:
    """{"train": {"mean", ["std"]}, "test": {...}}: float32 CPU tensors, cached by checkpoint and settings."""
    key = cache_key(learner, data, checkpoint) if cache_dir else None
    path = Path(cache_dir) / f"reps-{key}.pt" if key else None
    if path is not None and path.exists():
        return torch.load(path, weights_only=True)
    reps = {}
    for split, x in (("train", data.train_x), ("test", data.test_x)):
        if has_ability(learner, "posterior"):
            emb = learner.represent(x, "embedding").float().cpu()
            d = emb.shape[1] // 2
            reps[split] = {"mean": emb[:, :d].contiguous(), "std": emb[:, d:].contiguous()}
        else:
            reps[split] = {"mean": learner.represent(x, "mean").float().cpu()}
    if path is not None:
        try:
            atomic_save(reps, path)
        except WriteError as exc:  # the cache only saves time: a full disk must not lose the run's values
            warnings.warn(f"representation cache not written ({exc})", RuntimeWarning, stacklevel=2)
    return reps


# ------------------------------------------------------------------------------------------ the loop
def run_battery(learner, data: ImageData, cfg: BatteryConfig | None = None, *, seed: int | None = None,
                cache_dir: Path | None = None, checkpoint: Path | None = None, progress: bool = True,
                reps: dict | None = None) -> BatteryResult:
    """Run the metrics `cfg.metrics` on a trained learner (or on `reps` alone, with learner None), on the
    learner's preset's share of `data`. Without `cfg`, the battery of the learner's preset. Every metric gets a
    generator seeded by `seed` (default: the learner's)."""
    if learner is None and reps is None:
        raise RepbenchError("run_battery needs a trained learner, or learner None with the representations "
                            "(reps={'train': {'mean': ...}, 'test': {...}})")
    if learner is not None and not isinstance(learner, Learner):
        raise RepbenchError(f"run_battery takes a repbench Learner (or None with reps=...), got "
                            f"{type(learner).__name__}")
    if not isinstance(data, ImageData):
        raise RepbenchError(f"run_battery takes the data as an ImageData (repbench.load_dataset), got "
                            f"{type(data).__name__}")
    cfg = cfg or battery_for(getattr(learner, "preset", "quick"))
    seed = seed if seed is not None else (learner.seed if learner is not None else 0)
    if learner is not None:  # the preset's test split, as `repbench run` measures it (a no-op on limited data)
        data = data.limit(*learner.data_limits())
    cfg.check_data(data)
    inputs = Inputs(data, learner, reps, cache_dir=cache_dir, checkpoint=checkpoint,
                    batch_size=cfg.eval_batch_size, progress=progress)
    res = BatteryResult()
    for name in tqdm(cfg.metrics, desc="metrics", disable=not progress, leave=False):
        metric = METRICS.get(name)
        start, shared_before = time.perf_counter(), sum(inputs.timings_s.values())
        if all(inputs.has(need) for need in metric.needs):
            generator = torch.Generator(device=inputs.device).manual_seed(seeds.metrics(seed))
            out = metric.compute(inputs, cfg, generator)
            out = out if isinstance(out, Values) else Values(out)
        else:
            # "does not apply" for the values this metric owns (rep_types also writes the plain probes')
            out = Values({n: None for n in metric.names if not n.endswith("_std") and entry_of(n) is metric})
        res.metrics.update(out.metrics)
        res.spectrum = out.details.get("spectrum", res.spectrum)
        for probe, by_type in out.details.get("probes", {}).items():
            res.probes.setdefault(probe, {}).update(by_type)
        # with the settings and version, how each probe fit ended (converged, iterations): a value's own record
        res.measured_with[name] = {**metric.resolved_settings(cfg), **({"fits": out.details["fits"]}
                                                                       if out.details.get("fits") else {})}
        shared = sum(inputs.timings_s.values()) - shared_before  # extraction or a likelihood pass it started
        res.timings_s[name] = round(time.perf_counter() - start - shared, 3)
    res.timings_s.update({k: round(v, 3) for k, v in inputs.timings_s.items()})
    return res

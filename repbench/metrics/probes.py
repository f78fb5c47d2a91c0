"""Probes: how well a classifier reads the labels off frozen representations (accuracy in percent).

Test representations may carry k posterior samples, shape [k, N, d]: the probe's per-class scores (SVM decision
values, or MLP probabilities) are averaged over the k samples before the arg-max, as in the paper's Table 1.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from .. import seeds
from . import Values, register_metric
from .mlp import ProbeMLPs

LINEAR_METHODS = ("linearsvc", "svc", "torch")
# The paper's Table 1: one posterior sample; probe scores averaged over k test-time samples (the probe trains on
# one sample per image); the posterior mean (MAP); mean and std concatenated.
REP_TYPES = ("sample_k1", "sample_k100", "mean", "embedding")
REP_TYPE_LABELS = {"sample_k1": "sample k=1", "sample_k100": "sample k=100", "mean": "MAP mean",
                   "embedding": "mean+std"}


def _as_samples(test_reps) -> np.ndarray:
    x = np.asarray(test_reps, dtype=np.float64)
    return x[None] if x.ndim == 2 else x


def _accuracy(scores: np.ndarray, y) -> float:
    return float((scores.argmax(1) == np.asarray(y)).mean() * 100.0)


def linear_probe(train_reps, train_y, test_reps, test_y, *, seed: int = 0, method: str = "linearsvc",
                 C: float = 1.0, max_iter: int = 1000) -> float:
    """Accuracy (%) of a linear SVM. `linearsvc`: standardized features and `LinearSVC` (the default);
    `svc`: `SVC(kernel="linear")` on the raw features, as in the paper's code; `torch`: LinearSVC's own objective
    (one-vs-rest squared hinge, L2, regularized bias) on standardized features, solved full-batch by L-BFGS,
    which is much faster where liblinear crawls (hundreds of nearly separable dimensions, such as raw pixels)."""
    import warnings
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC, LinearSVC
    train = np.asarray(train_reps, dtype=np.float64)
    test = _as_samples(test_reps)
    if method == "torch":
        return _torch_svm(train, train_y, test, test_y, C=C, max_iter=max_iter)
    if method == "linearsvc":
        scaler = StandardScaler().fit(train)
        train, test = scaler.transform(train), np.stack([scaler.transform(t) for t in test])
        clf = LinearSVC(C=C, random_state=seed, max_iter=max_iter)
    elif method == "svc":
        clf = SVC(kernel="linear", C=C, random_state=seed, decision_function_shape="ovr")
    else:
        raise ValueError(f"unknown linear probe method '{method}'; use {', '.join(LINEAR_METHODS)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(train, np.asarray(train_y))
    scores = np.mean([_scores(clf, t) for t in test], axis=0)
    return _accuracy(scores, np.searchsorted(clf.classes_, np.asarray(test_y)))


def _torch_svm(train, train_y, test, test_y, C: float, max_iter: int) -> float:
    mu, sd = train.mean(0), train.std(0)
    sd[sd == 0] = 1.0
    add_bias = lambda a: torch.cat([torch.as_tensor((a - mu) / sd), torch.ones(*a.shape[:-1], 1, dtype=torch.float64)], -1)
    x = add_bias(train)
    classes, y = np.unique(np.asarray(train_y), return_inverse=True)
    target = -torch.ones(len(x), len(classes), dtype=torch.float64)
    target[torch.arange(len(x)), torch.as_tensor(y)] = 1.0
    w = torch.zeros(x.shape[1], len(classes), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=1, max_iter=max_iter, tolerance_grad=1e-6, tolerance_change=1e-10,
                            history_size=20, line_search_fn="strong_wolfe")

    def objective():
        opt.zero_grad()
        loss = 0.5 * (w * w).sum() + C * torch.relu(1 - target * (x @ w)).pow(2).sum()
        loss.backward()
        return loss
    opt.step(objective)
    with torch.no_grad():
        scores = np.mean([(add_bias(t) @ w).numpy() for t in test], axis=0)
    return _accuracy(scores, np.searchsorted(classes, np.asarray(test_y)))


def _scores(clf, x: np.ndarray) -> np.ndarray:
    s = clf.decision_function(x)
    return np.stack([-s, s], 1) if s.ndim == 1 else s  # two classes: one decision value


def nonlinear_probe(train_reps, train_y, test_reps, test_y, *, seed: int = 0, epochs: int = 20,
                    batch_size: int = 100, lr: float = 1e-3, hidden: int = 200, dropout: float = 0.1,
                    standardize: bool = True, device: str | torch.device = "cpu") -> float:
    """Accuracy (%) of Linear(d, 200) -> ReLU -> Dropout(0.1) -> BatchNorm -> Linear(200, classes), Adam,
    on standardized features (`standardize=False`: the raw features, as the paper's code)."""
    return nonlinear_probes([train_reps], [train_y], [test_reps], test_y, seeds=(seed,), epochs=epochs,
                            batch_size=batch_size, lr=lr, hidden=hidden, dropout=dropout, standardize=standardize,
                            device=device)[0]


def nonlinear_probes(train_reps, train_y, test_reps, test_y, *, seeds, epochs: int = 20, batch_size: int = 100,
                     lr: float = 1e-3, hidden: int = 200, dropout: float = 0.1, standardize: bool = True,
                     device: str | torch.device = "cpu") -> list[float]:
    """`nonlinear_probe` for each seed in `seeds`, seed i on (train_reps[i], train_y[i], test_reps[i]), trained
    side by side as one batched model (metrics/mlp.py) on `PROBE_THREADS`: a seed's accuracy is the one it gets
    alone, and it leaves the global random state as it was."""
    device = torch.device(device)
    train, test = zip(*(_scaled(a, b, standardize) for a, b in zip(train_reps, test_reps)))
    y = torch.stack([torch.as_tensor(np.asarray(t), dtype=torch.long) for t in train_y])
    classes = int(max(y.max(), int(np.max(test_y)))) + 1
    with probe_threads():
        mlps = ProbeMLPs(train[0].shape[1], hidden, classes, seeds, dropout, device)
        probs = mlps.fit(torch.stack(train).to(device), y.to(device), epochs, batch_size, lr).predict(list(test))
    return [_accuracy(p, test_y) for p in probs.cpu().numpy()]


def _scaled(train_reps, test_reps, standardize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 training rows [N, d] and test samples [k, M, d], standardized by the training rows' statistics."""
    train = torch.as_tensor(np.asarray(train_reps), dtype=torch.float32)
    test = torch.as_tensor(np.asarray(test_reps), dtype=torch.float32)
    test = test[None] if test.ndim == 2 else test
    if not standardize:
        return train, test
    mu, sd = train.mean(0), train.std(0).clamp(min=1e-8)
    return (train - mu) / sd, (test - mu) / sd


# A probe is a tiny model (a d x 200 MLP on 100 rows a step, a linear SVM): on one thread it runs several times
# faster than on two, where starting and synchronising threads around each small kernel costs more than the
# work, and far faster on cores shared with other work (benchmarks/battery_speed.py, results/speed.md). One
# thread also makes its values independent of the caller's thread count. The likelihood pass keeps every thread.
PROBE_THREADS = 1


@contextmanager
def probe_threads():
    """torch and the BLAS libraries of numpy / scikit-learn on `PROBE_THREADS` inside; restored after."""
    from threadpoolctl import threadpool_limits
    before = torch.get_num_threads()
    torch.set_num_threads(PROBE_THREADS)
    try:
        with threadpool_limits(PROBE_THREADS, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------ battery entries
def rep_view(split: dict, rep_type: str, k: int, generator: torch.Generator) -> torch.Tensor:
    """A representation type from cached posterior means and stds: [N, d], or [k, N, d] for k test samples."""
    if rep_type == "mean":
        return split["mean"]
    if rep_type == "embedding":
        return torch.cat([split["mean"], split["std"]], 1)
    eps = torch.randn((k,) + tuple(split["mean"].shape), generator=generator)
    samples = split["mean"] + split["std"] * eps
    return samples[0] if k == 1 else samples


def probe_accuracies(inputs, cfg, probe: str, rep_type: str) -> list[float]:
    """Test accuracy (%) of `probe` on one representation type, once per probe seed (computed once per
    battery: the plain probes and the representation types share the `mean` results)."""
    setting = cfg.linear_method if probe == "linear_probe" else tuple(getattr(cfg, s) for s in MLP_SETTINGS)
    key = (probe, rep_type, cfg.probe_seeds, setting, cfg.test_samples if rep_type == "sample_k100" else None)
    return inputs.memo(key, lambda: _probe_accuracies(inputs, cfg, probe, rep_type))


def _probe_accuracies(inputs, cfg, probe: str, rep_type: str) -> list[float]:
    k = cfg.test_samples if rep_type == "sample_k100" else 1
    trains, tests = [], []
    for s in range(cfg.probe_seeds):
        g = torch.Generator().manual_seed(seeds.probe_views(s))
        trains.append(rep_view(inputs.reps["train"], rep_type, 1, g).numpy())
        tests.append(rep_view(inputs.reps["test"], rep_type, k, g).numpy())
    train_y = [inputs.data.train_y.numpy()] * cfg.probe_seeds
    return run_probes(probe, (trains, train_y, tests, inputs.data.test_y.numpy()), cfg, inputs.device)


# The battery settings the MLP probe's values depend on.
MLP_SETTINGS = ("nonlinear_epochs", "nonlinear_dropout", "nonlinear_standardize")


def run_probes(probe: str, args: tuple, cfg, device, epochs: int | None = None) -> list[float]:
    """Fits of a probe with the battery's settings, one per probe seed s = 0, 1, ...; `args` holds per-seed lists
    of training representations, training labels and test representations, and the test labels (`epochs`
    overrides the MLP's)."""
    trains, train_ys, tests, test_y = args
    if probe == "linear_probe":
        with probe_threads():
            return [linear_probe(*fit, test_y, seed=s, method=cfg.linear_method)
                    for s, fit in enumerate(zip(trains, train_ys, tests))]
    return nonlinear_probes(trains, train_ys, tests, test_y, seeds=range(len(trains)),
                            epochs=epochs or cfg.nonlinear_epochs, dropout=cfg.nonlinear_dropout,
                            standardize=cfg.nonlinear_standardize, device=device)


def _summarize(probe: str, by_type: dict[str, list[float]]) -> Values:
    values = {}
    for t, accs in by_type.items():
        name = probe if t == "mean" else f"{probe}.{t}"
        values[name], values[name + "_std"] = float(np.mean(accs)), float(np.std(accs))
    return Values(values, {"probes": {probe: by_type}})


@register_metric("linear_probe", unit="%", direction="higher", needs=("representations", "labels"), summary=4,
                 settings=("probe_seeds", "linear_method"), outputs=("linear_probe_std",),
                 description="test accuracy of a linear SVM trained on the training representations")
def _linear_probe(inputs, cfg, generator):
    return _summarize("linear_probe", {"mean": probe_accuracies(inputs, cfg, "linear_probe", "mean")})


@register_metric("nonlinear_probe", unit="%", direction="higher", needs=("representations", "labels"), summary=3,
                 settings=("probe_seeds",) + MLP_SETTINGS, outputs=("nonlinear_probe_std",),
                 description="test accuracy of an MLP (d-200-classes, dropout 0.1, BatchNorm)")
def _nonlinear_probe(inputs, cfg, generator):
    return _summarize("nonlinear_probe", {"mean": probe_accuracies(inputs, cfg, "nonlinear_probe", "mean")})


_TYPED = tuple(f"{p}{'' if t == 'mean' else '.' + t}{std}" for p in ("linear_probe", "nonlinear_probe")
               for t in REP_TYPES for std in ("", "_std"))


@register_metric("rep_types", unit="%", direction="higher", needs=("posterior", "labels"), outputs=_TYPED,
                 settings=("probe_seeds", "test_samples", "linear_method") + MLP_SETTINGS,
                 description="both probes on each representation type of the paper's Table 1: one posterior "
                             "sample, k test-time samples, the mean, mean and std concatenated")
def _rep_types(inputs, cfg, generator):
    out = Values({}, {"probes": {}})
    for probe in ("linear_probe", "nonlinear_probe"):
        part = _summarize(probe, {t: probe_accuracies(inputs, cfg, probe, t) for t in REP_TYPES})
        out.metrics.update(part.metrics)
        out.details["probes"].update(part.details["probes"])
    return out


# ------------------------------------------------------------------------------------------ label efficiency
MIN_STEPS = 500  # the MLP probe on a few labels still takes this many Adam steps (a few epochs of 100 would not)


def few_label_accuracies(inputs, cfg, probe: str, n: int) -> list[float] | None:
    """Accuracy (%) of `probe` trained on n labelled training representations (a class-balanced subset chosen by
    the probe seed: the same subsets for every learner) and scored on the whole test set, once per probe seed.
    None when the training set is too small for n."""
    from ..data import labelled_subset
    from ..errors import RepbenchError
    train_y = inputs.data.train_y
    try:
        subsets = [labelled_subset(train_y, n, seed=s) for s in range(cfg.probe_seeds)]
    except RepbenchError:
        return None
    train, test = inputs.reps["train"]["mean"], inputs.reps["test"]["mean"].numpy()
    args = ([train[i].numpy() for i in subsets], [train_y[i].numpy() for i in subsets], [test] * len(subsets),
            inputs.data.test_y.numpy())
    epochs = max(cfg.nonlinear_epochs, -(-MIN_STEPS // -(-n // 100)))
    return run_probes(probe, args, cfg, inputs.device, epochs)


_LABELLED = tuple(f"{p}.labels_{n}{std}" for p in ("linear_probe", "nonlinear_probe") for n in (100, 600, 1000, 3000)
                  for std in ("", "_std"))


@register_metric("label_efficiency", unit="%", direction="higher", needs=("representations", "labels"),
                 settings=("label_counts", "probe_seeds", "linear_method") + MLP_SETTINGS, outputs=_LABELLED,
                 output_pattern=r"(non)?linear_probe\.labels_\d+(_std)?",
                 description="both probes trained on only n labelled training representations (class-balanced "
                             "subsets chosen by seed, the same for every learner), scored on the whole test set")
def _label_efficiency(inputs, cfg, generator):
    values = {}
    for probe in ("linear_probe", "nonlinear_probe"):
        for n in cfg.label_counts:
            accs = few_label_accuracies(inputs, cfg, probe, n)
            name = f"{probe}.labels_{n}"
            values[name] = None if accs is None else float(np.mean(accs))
            if accs is not None:
                values[name + "_std"] = float(np.std(accs))
    return values

"""Probes: how well a classifier reads the labels off frozen representations (accuracy in percent).

Test representations may carry k posterior samples, shape [k, N, d]: the probe's per-class scores (SVM decision
values, or MLP probabilities) are averaged over the k samples before the arg-max, as in the paper's Table 1.
"""
from __future__ import annotations

import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace

import numpy as np
import torch

from .. import seeds
from . import METRICS, Values, register_metric
from .mlp import STOP, ProbeMLPs

LINEAR_METHODS = ("linearsvc", "svc", "torch")
MAX_ITER = 10_000  # of the linear probe's solver
# LinearSVC's stopping tolerance on the primal problem, liblinear's default for it: the gradient's norm at most
# this fraction of the first one's, scaled by the balance of the two sides
PRIMAL_TOL = 0.01
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


@dataclass(frozen=True)
class Fit:
    """One probe fit: test accuracy (%), whether its solver converged and in how many iterations (None for a
    probe without a stopping rule: the MLP trains a fixed number of epochs), and the hyper-parameters the tuned
    protocol chose (None under the fixed one)."""
    accuracy: float
    converged: bool | None = None
    iterations: int | None = None
    chosen: dict | None = None


def linear_probe(train_reps, train_y, test_reps, test_y, *, seed: int = 0, method: str = "linearsvc",
                 C: float = 1.0, max_iter: int = MAX_ITER) -> float:
    """Accuracy (%) of a linear SVM (see `linear_probe_fit`); warns when its solver did not converge."""
    fit = linear_probe_fit(train_reps, train_y, test_reps, test_y, seed=seed, method=method, C=C, max_iter=max_iter)
    if fit.converged is False:
        warnings.warn(f"the linear probe ({method}) did not converge in {fit.iterations} iterations",
                      RuntimeWarning, stacklevel=2)
    return fit.accuracy


def linear_probe_fit(train_reps, train_y, test_reps, test_y, *, seed: int = 0, method: str = "linearsvc",
                     C: float = 1.0, max_iter: int = MAX_ITER) -> Fit:
    """A linear SVM's accuracy (%) and convergence (see `linear_probe_views`)."""
    return linear_probe_views(train_reps, train_y, [test_reps], test_y, seed=seed, method=method, C=C,
                              max_iter=max_iter)[0]


def linear_probe_views(train_reps, train_y, views: list, test_y, *, seed: int = 0, method: str = "linearsvc",
                       C: float = 1.0, max_iter: int = MAX_ITER) -> list[Fit]:
    """One linear SVM trained once and scored on each of `views` (test representations of the same images, [N, d]
    or samples [k, N, d]): a Fit per view. `linearsvc`: standardized features and `LinearSVC` (the
    default), solving the primal problem when samples outnumber features (the dual crawls there: on raw mnist5k
    pixels it stopped at 1,000 iterations short of its optimum); `svc`: `SVC(kernel="linear")` on the raw
    features, as in the paper's code (no iteration cap); `torch`: LinearSVC's own objective (one-vs-rest squared
    hinge, L2, regularized bias) on standardized features, solved full-batch by L-BFGS."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC, LinearSVC
    train = np.asarray(train_reps, dtype=np.float64)
    views = [_as_samples(t) for t in views]
    if method == "torch":
        return _torch_svm(train, train_y, views, test_y, C=C, max_iter=max_iter)
    if method == "linearsvc":
        scaler = StandardScaler().fit(train)
        train = scaler.transform(train)
        views = [np.stack([scaler.transform(t) for t in test]) for test in views]
        primal = len(train) > train.shape[1]
        # The primal problem stops at liblinear's own tolerance for it (PRIMAL_TOL): at scikit-learn's 1e-4, meant
        # for the dual, three fits on raw mnist5k pixels had not ended after 50 minutes; at 0.01 one takes 337
        # Newton steps, about a minute.
        clf = LinearSVC(C=C, random_state=seed, max_iter=max_iter, dual=not primal,
                        tol=PRIMAL_TOL if primal else 1e-4)
    elif method == "svc":
        clf = SVC(kernel="linear", C=C, random_state=seed, decision_function_shape="ovr")
    else:
        raise ValueError(f"unknown linear probe method '{method}'; use {', '.join(LINEAR_METHODS)}")
    with _WARNINGS, warnings.catch_warnings(record=True) as caught:  # the warning filters are process-wide
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(train, np.asarray(train_y))
    for w in caught:  # only the convergence warning becomes the fit's record; others reach the user
        if not issubclass(w.category, ConvergenceWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    labels = np.searchsorted(clf.classes_, np.asarray(test_y))
    return [Fit(_accuracy(np.mean([_scores(clf, t) for t in test], axis=0), labels), converged,
                int(np.max(clf.n_iter_))) for test in views]


_WARNINGS = threading.Lock()  # one linear fit at a time records the solver's warnings


def _torch_svm(train, train_y, views: list, test_y, C: float, max_iter: int) -> list[Fit]:
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
    state = opt.state[w]  # L-BFGS stops at max_iter steps or max_eval (1.25 max_iter) evaluations short of a tolerance
    converged = state["n_iter"] < max_iter and state["func_evals"] < max_iter * 5 // 4
    labels = np.searchsorted(classes, np.asarray(test_y))
    with torch.no_grad():
        return [Fit(_accuracy(np.mean([(add_bias(t) @ w).numpy() for t in test], axis=0), labels), converged,
                    int(state["n_iter"])) for test in views]


def _scores(clf, x: np.ndarray) -> np.ndarray:
    s = clf.decision_function(x)
    return np.stack([-s, s], 1) if s.ndim == 1 else s  # two classes: one decision value


def nonlinear_probe(train_reps, train_y, test_reps, test_y, *, seed: int = 0, epochs: int = 20,
                    batch_size: int = 100, lr: float = 1e-3, weight_decay: float = 0.0, hidden: int = 200,
                    dropout: float = 0.1, standardize: bool = True, device: str | torch.device = "cpu") -> float:
    """Accuracy (%) of Linear(d, 200) -> ReLU -> Dropout(0.1) -> BatchNorm -> Linear(200, classes), Adam
    (with `weight_decay`, L2 on every parameter), on standardized features (`standardize=False`: the raw
    features, as the paper's code)."""
    return nonlinear_probes([train_reps], [train_y], [test_reps], test_y, seeds=(seed,), epochs=epochs,
                            batch_size=batch_size, lr=lr, weight_decay=weight_decay, hidden=hidden, dropout=dropout,
                            standardize=standardize, device=device)[0]


def nonlinear_probes(train_reps, train_y, test_reps, test_y, *, seeds, epochs: int = 20, batch_size: int = 100,
                     lr: float = 1e-3, weight_decay: float = 0.0, hidden: int = 200, dropout: float = 0.1,
                     standardize: bool = True, device: str | torch.device = "cpu") -> list[float]:
    """`nonlinear_probe` for each seed in `seeds`, seed i on (train_reps[i], train_y[i], test_reps[i]), trained
    side by side as one batched model (metrics/mlp.py) on `PROBE_THREADS`: a seed's accuracy is the one it gets
    alone, and it leaves the global random state as it was."""
    return nonlinear_probe_views(train_reps, train_y, [test_reps], test_y, seeds=seeds, epochs=epochs,
                                 batch_size=batch_size, lr=lr, weight_decay=weight_decay, hidden=hidden,
                                 dropout=dropout, standardize=standardize, device=device)[0]


def nonlinear_probe_views(train_reps, train_y, views: list, test_y, *, seeds, epochs: int = 20,
                          batch_size: int = 100, lr: float = 1e-3, weight_decay: float = 0.0, hidden: int = 200,
                          dropout: float = 0.1, standardize: bool = True,
                          device: str | torch.device = "cpu") -> list[list[float]]:
    """`nonlinear_probes` trained once and scored on each of `views` (per view, a test set per seed): the
    accuracies per view, per seed."""
    device = torch.device(device)
    # each seed's rows standardized once, with all of its views: [(train [N, d], [test [k, M, d] per view])]
    scaled = [_scaled(a, [v[i] for v in views], standardize) for i, a in enumerate(train_reps)]
    train = [t for t, _ in scaled]
    y = torch.stack([torch.as_tensor(np.asarray(t), dtype=torch.long) for t in train_y])
    classes = int(max(y.max(), int(np.max(test_y)))) + 1
    with probe_threads():
        mlps = ProbeMLPs(train[0].shape[1], hidden, classes, seeds, dropout, device)
        mlps.fit(torch.stack(train).to(device), y.to(device), epochs, batch_size, lr, weight_decay)
        probs = [mlps.predict([tests[j] for _, tests in scaled]) for j in range(len(views))]
    return [[_accuracy(p, test_y) for p in view.cpu().numpy()] for view in probs]


def _scaled(train_reps, views: list, standardize: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """float32 training rows [N, d] and each view's test samples [k, M, d], standardized by the training rows'
    statistics."""
    train = torch.as_tensor(np.asarray(train_reps), dtype=torch.float32)
    tests = [torch.as_tensor(np.asarray(t), dtype=torch.float32) for t in views]
    tests = [t[None] if t.ndim == 2 else t for t in tests]
    if not standardize:
        return train, tests
    mu, sd = train.mean(0), train.std(0).clamp(min=1e-8)
    return (train - mu) / sd, [(t - mu) / sd for t in tests]


# A probe is a tiny model (a d x 200 MLP on 100 rows a step, a linear SVM): on one thread it runs several times
# faster than on two, where starting and synchronising threads around each small kernel costs more than the
# work, and far faster on cores shared with other work (benchmarks/battery_speed.py, results/speed.md). One
# thread also makes its values independent of the caller's thread count. The likelihood pass keeps every thread.
PROBE_THREADS = 1


_LIMIT = threading.Lock()
_limited = {"depth": 0, "stack": None}


@contextmanager
def probe_threads():
    """torch and the BLAS libraries of numpy / scikit-learn on `PROBE_THREADS` inside; restored when the
    outermost of nested (or side-by-side) scopes ends."""
    from threadpoolctl import threadpool_limits
    with _LIMIT:
        if _limited["depth"] == 0:
            stack, before = ExitStack(), torch.get_num_threads()
            stack.callback(torch.set_num_threads, before)
            torch.set_num_threads(PROBE_THREADS)
            stack.enter_context(threadpool_limits(PROBE_THREADS, user_api="blas"))
            _limited["stack"] = stack
        _limited["depth"] += 1
    try:
        yield
    finally:
        with _LIMIT:
            _limited["depth"] -= 1
            if _limited["depth"] == 0:
                _limited.pop("stack").close()
                _limited["stack"] = None


KNN_DISTANCES = ("cosine", "euclidean")
# The cosine vote's temperature: each neighbour votes exp(similarity / 0.07), the weighted k-NN of the
# self-supervised literature (k = 20 by default there too); a Euclidean neighbour votes 1 / (distance + 1e-5).
KNN_TEMPERATURE = 0.07


def knn_probe(train_reps, train_y, test_reps, test_y, *, k: int = 20, distance: str = "cosine",
              batch_size: int = 2000) -> float:
    """Accuracy (%) of a weighted k-nearest-neighbour vote, which needs no training: the k training
    representations nearest a test representation vote for their labels, weighted exp(cos / 0.07) with
    `distance="cosine"` or 1 / (Euclidean distance + 1e-5) with `"euclidean"`. Test representations with
    samples [S, N, d] average each sample's normalized votes."""
    if distance not in KNN_DISTANCES:
        raise ValueError(f"unknown k-NN distance '{distance}'; use {', '.join(KNN_DISTANCES)}")
    train = torch.as_tensor(np.asarray(train_reps), dtype=torch.float32)
    test = torch.as_tensor(_as_samples(test_reps), dtype=torch.float32)
    if distance == "cosine":
        train, test = torch.nn.functional.normalize(train, dim=-1), torch.nn.functional.normalize(test, dim=-1)
    if k > len(train):  # fewer neighbours than asked would be a different probe under the same name
        raise ValueError(f"the k-NN probe's k = {k} needs at least {k} training representations, got {len(train)}")
    labels = torch.as_tensor(np.asarray(train_y), dtype=torch.long)
    classes = int(max(labels.max(), int(np.max(test_y)))) + 1
    votes = torch.zeros(test.shape[1], classes, dtype=torch.float64)
    # the cosine path multiplies by a contiguous transpose, in blocks of 2,000 rows: 1.3x faster than by train.T
    # in blocks of 500 on k = 100 test samples (2 threads)
    ref = train.T.contiguous() if distance == "cosine" else train
    for sample in test:
        for i in range(0, sample.shape[0], batch_size):
            votes[i:i + batch_size] += _knn_votes(sample[i:i + batch_size], ref, labels, k, distance, classes)
    return _accuracy(votes.numpy(), test_y)


def _knn_votes(x, ref, labels, k: int, distance: str, classes: int) -> torch.Tensor:
    """Each row's votes per class, normalized to sum to 1; `ref` is the training rows [n, d], transposed [d, n]
    for the cosine distance."""
    if distance == "cosine":
        near, idx = (x @ ref).topk(k, dim=1)
        weight = torch.exp(near.double() / KNN_TEMPERATURE)
    else:
        far, idx = torch.cdist(x, ref).topk(k, dim=1, largest=False)
        weight = 1.0 / (far.double() + 1e-5)
    votes = torch.zeros(len(x), classes, dtype=torch.float64).scatter_add_(1, labels[idx], weight)
    return votes / votes.sum(1, keepdim=True)


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


def probe_accuracies(inputs, cfg, probe: str, rep_type: str) -> list[Fit]:
    """`probe`'s fit on one representation type, once per probe seed (computed once per battery, with every other
    probe fit the battery's metrics read: see `fit_battery_probes`)."""
    fit_battery_probes(inputs, cfg)
    key = probe_key(cfg, probe, rep_type)

    def compute():  # outside a battery's prefetch: keep the type that shares this fit too
        result = _type_job(inputs, cfg, probe, rep_type)()
        _keep(inputs, {k: f for k, f in result.items() if k != key})
        return result[key]
    return inputs.memo(key, compute)


def _type_job(inputs, cfg, probe: str, rep_type: str):
    """A job returning {memo key: fits} for `rep_type` and the type that shares its fit."""
    return lambda: {probe_key(cfg, probe, t): f for t, f in _type_fits(inputs, cfg, probe, rep_type).items()}


def _keep(inputs, result: dict) -> None:
    for key, fits in result.items():
        inputs.memo(key, lambda fits=fits: fits)


SAMPLE_TYPES = ("sample_k1", "sample_k100")


def probe_key(cfg, probe: str, rep_type: str) -> tuple:
    setting = tuple(getattr(cfg, s) for s in PROBE_SETTINGS[probe])
    return probe, rep_type, cfg.probe_seeds, setting, cfg.test_samples if rep_type == "sample_k100" else None


def _type_fits(inputs, cfg, probe: str, rep_type: str) -> dict[str, list[Fit]]:
    """{rep type: fits}: the two sample types train on the same draw (the seed's generator, then one sample per
    training image), so one fit serves both, scored on one test sample and on k."""
    types = SAMPLE_TYPES if rep_type in SAMPLE_TYPES else (rep_type,)
    trains, views = [], {t: [] for t in types}
    for s in range(cfg.probe_seeds):
        g = torch.Generator().manual_seed(seeds.probe_views(s))
        trains.append(rep_view(inputs.reps["train"], rep_type, 1, g).numpy())
        after_train = g.get_state()
        for t in types:
            g.set_state(after_train)
            views[t].append(rep_view(inputs.reps["test"], t, cfg.test_samples if t == "sample_k100" else 1,
                                     g).numpy())
    train_y = [inputs.data.train_y.numpy()] * cfg.probe_seeds
    return dict(zip(types, run_probe_views(probe, (trains, train_y, list(views.values()), inputs.data.test_y.numpy()),
                                           cfg, inputs.device)))


# The battery settings each probe's values depend on.
MLP_SETTINGS = ("nonlinear_epochs", "nonlinear_dropout", "nonlinear_standardize", "probe_protocol")
KNN_SETTINGS = ("knn_k", "knn_distance")
PROBE_SETTINGS = {"linear_probe": ("linear_method", "probe_protocol"), "nonlinear_probe": MLP_SETTINGS,
                  "knn_probe": KNN_SETTINGS}
PROBES = tuple(PROBE_SETTINGS)
ALL_PROBE_SETTINGS = tuple(dict.fromkeys(s for p in PROBES for s in PROBE_SETTINGS[p]))


def run_probes(probe: str, args: tuple, cfg, device, epochs: int | None = None) -> list[Fit]:
    """Fits of a probe with the battery's settings, one per probe seed s = 0, 1, ...; `args` holds per-seed lists
    of training representations, training labels and test representations, and the test labels (`epochs`
    overrides the MLP's). Under the tuned protocol each seed's hyper-parameters are chosen on a validation split
    of its training representations first."""
    trains, train_ys, tests, test_y = args
    return run_probe_views(probe, (trains, train_ys, [tests], test_y), cfg, device, epochs)[0]


def run_probe_views(probe: str, args: tuple, cfg, device, epochs: int | None = None) -> list[list[Fit]]:
    """`run_probes` with each seed's probe trained once and scored on several test sets: `args` holds the views
    (a list of per-seed test lists) in place of the test representations; the fits per view, per seed."""
    if cfg.probe_protocol == "tuned" and probe in GRIDS:
        trains, train_ys, views, test_y = args
        per_seed = [tuned_fit(probe, (train, y, [v[s] for v in views], test_y), s, cfg, device, epochs)
                    for s, (train, y) in enumerate(zip(trains, train_ys))]
        return [list(fits) for fits in zip(*per_seed)]
    return _fit_views(probe, args, range(len(args[0])), cfg, device, epochs)


def _fits(probe: str, args: tuple, repeats, cfg, device, epochs: int | None = None, **params) -> list[Fit]:
    """The fits of the probe seeds `repeats` (one per entry of `args`' lists), with `params` for the probe."""
    trains, train_ys, tests, test_y = args
    return _fit_views(probe, (trains, train_ys, [tests], test_y), repeats, cfg, device, epochs, **params)[0]


def _fit_views(probe: str, args: tuple, repeats, cfg, device, epochs: int | None = None,
               **params) -> list[list[Fit]]:
    """`_fits` scored on each view (a list of per-seed test lists): the fits per view, per seed."""
    trains, train_ys, views, test_y = args
    if probe == "linear_probe":
        with probe_threads():
            per_seed = [linear_probe_views(train, y, [v[i] for v in views], test_y, seed=s, method=cfg.linear_method,
                                           max_iter=MAX_ITER, **params)
                        for i, (s, train, y) in enumerate(zip(repeats, trains, train_ys))]
        return [list(fits) for fits in zip(*per_seed)]
    if probe == "knn_probe":
        return [[Fit(knn_probe(*fit, test_y, k=cfg.knn_k, distance=cfg.knn_distance))
                 for fit in zip(trains, train_ys, tests)] for tests in views]
    accs = nonlinear_probe_views(trains, train_ys, views, test_y, seeds=repeats, epochs=epochs or cfg.nonlinear_epochs,
                                 dropout=cfg.nonlinear_dropout, standardize=cfg.nonlinear_standardize, device=device,
                                 **params)
    return [[Fit(a) for a in view] for view in accs]


# ------------------------------------------------------------------------------------------ the tuned protocol
PROBE_PROTOCOLS = ("fixed", "tuned")
# The candidates of the tuned protocol: a cost grid by decades for the linear SVM, learning rate and weight
# decay for the MLP; the fixed protocol's values (C = 1; lr 1e-3, no weight decay) are among them.
GRIDS = {"linear_probe": [{"C": c} for c in (0.01, 0.1, 1.0, 10.0, 100.0)],
         "nonlinear_probe": [{"lr": lr, "weight_decay": wd} for lr in (1e-4, 1e-3, 1e-2) for wd in (0.0, 1e-4)]}
VALIDATION_SHARE = 0.2  # of each class's training representations, held out to choose among the candidates


def validation_split(train_y, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, validation) indices: a fifth of each class (at least one row of a class with two or more) chosen by
    the probe seed alone, so every learner's probe is tuned on the same rows."""
    rng = np.random.default_rng(seed)
    y = np.asarray(train_y)
    held = [rng.permutation(np.flatnonzero(y == c))[:max(int(round(VALIDATION_SHARE * (y == c).sum())), 1)]
            for c in np.unique(y) if (y == c).sum() >= 2]
    val = np.sort(np.concatenate(held)) if held else np.array([], dtype=int)
    return np.setdiff1d(np.arange(len(y)), val), val


def tuned_fit(probe: str, args: tuple, seed: int, cfg, device, epochs: int | None = None) -> list[Fit]:
    """The candidate with the best validation accuracy (the first on a tie), refit on all training data and
    scored on each of the seed's test views (`args`: train, train_y, views, test_y): a Fit per view."""
    train, train_y, views, test_y = args
    fit_idx, val_idx = validation_split(train_y, seed)
    split = (train[fit_idx], np.asarray(train_y)[fit_idx], train[val_idx], np.asarray(train_y)[val_idx])
    scores = [_fit(probe, split, seed, cfg, device, epochs, **params).accuracy for params in GRIDS[probe]]
    best = GRIDS[probe][int(np.argmax(scores))]
    fits = _fit_views(probe, ([train], [train_y], [[v] for v in views], test_y), (seed,), cfg, device, epochs, **best)
    return [replace(f[0], chosen=best) for f in fits]


def _fit(probe: str, args: tuple, seed: int, cfg, device, epochs: int | None, **params) -> Fit:
    """One seed's fit: `args` holds its training representations, labels, test representations and labels."""
    train, train_y, test, test_y = args
    return _fits(probe, ([train], [train_y], [test], test_y), (seed,), cfg, device, epochs, **params)[0]


def fits_record(fits: list[Fit]) -> dict:
    """What `measured_with` keeps of one value's fits, per probe seed: whether each solver converged and in how
    many iterations, and what the tuned protocol chose; empty for neither (the fixed MLP, k-NN)."""
    out = {}
    if any(f.converged is not None for f in fits):
        out.update(converged=[f.converged for f in fits], iterations=[f.iterations for f in fits])
    if any(f.chosen is not None for f in fits):
        out["chosen"] = [f.chosen for f in fits]
    return out


def _summarize(probe: str, by_type: dict[str, list[Fit]]) -> Values:
    values, fits = {}, {}
    for t, per_seed in by_type.items():
        name = probe if t == "mean" else f"{probe}.{t}"
        accs = [f.accuracy for f in per_seed]
        values[name], values[name + "_std"] = float(np.mean(accs)), float(np.std(accs))
        if fits_record(per_seed):
            fits[name] = fits_record(per_seed)
    accuracies = {t: [f.accuracy for f in per_seed] for t, per_seed in by_type.items()}
    return Values(values, {"probes": {probe: accuracies}, "fits": fits})


# version 2: LinearSVC solves the primal problem where samples outnumber features, with 10,000 iterations
@register_metric("linear_probe", unit="%", direction="higher", needs=("representations", "labels"), summary=4,
                 settings=("probe_seeds",) + PROBE_SETTINGS["linear_probe"], outputs=("linear_probe_std",), version=2,
                 description="test accuracy of a linear SVM trained on the training representations")
def _linear_probe(inputs, cfg, generator):
    return _summarize("linear_probe", {"mean": probe_accuracies(inputs, cfg, "linear_probe", "mean")})


@register_metric("nonlinear_probe", unit="%", direction="higher", needs=("representations", "labels"), summary=3,
                 settings=("probe_seeds",) + MLP_SETTINGS, outputs=("nonlinear_probe_std",), version=1,
                 description="test accuracy of an MLP (d-200-classes, dropout 0.1, BatchNorm)")
def _nonlinear_probe(inputs, cfg, generator):
    return _summarize("nonlinear_probe", {"mean": probe_accuracies(inputs, cfg, "nonlinear_probe", "mean")})


@register_metric("knn_probe", unit="%", direction="higher", needs=("representations", "labels"), summary=5,
                 settings=("probe_seeds",) + KNN_SETTINGS, outputs=("knn_probe_std",), version=1,
                 description="test accuracy of a weighted k-NN vote among the training representations (k = 20, "
                             "cosine, votes exp(cos / 0.07)); no training")
def _knn_probe(inputs, cfg, generator):
    return _summarize("knn_probe", {"mean": probe_accuracies(inputs, cfg, "knn_probe", "mean")})


_TYPED = tuple(f"{p}{'' if t == 'mean' else '.' + t}{std}" for p in PROBES for t in REP_TYPES for std in ("", "_std"))


@register_metric("rep_types", unit="%", direction="higher", needs=("posterior", "labels"), outputs=_TYPED,
                 settings=("probe_seeds", "test_samples") + ALL_PROBE_SETTINGS, version=2,
                 description="the probes on each representation type of the paper's Table 1: one posterior "
                             "sample, k test-time samples, the mean, mean and std concatenated")
def _rep_types(inputs, cfg, generator):
    out = Values({}, {"probes": {}, "fits": {}})
    for probe in PROBES:
        part = _summarize(probe, {t: probe_accuracies(inputs, cfg, probe, t) for t in REP_TYPES})
        out.metrics.update(part.metrics)
        for key in ("probes", "fits"):
            out.details[key].update(part.details[key])
    return out


# ------------------------------------------------------------------------------------------ label efficiency
MIN_STEPS = 500  # the MLP probe on a few labels still takes this many Adam steps (a few epochs of 100 would not)


def few_label_accuracies(inputs, cfg, probe: str, n: int) -> list[Fit] | None:
    """`probe`'s fit trained on n labelled training representations (a class-balanced subset chosen by
    the probe seed: the same subsets for every learner) and scored on the whole test set, once per probe seed.
    None when the training set is too small for n."""
    fit_battery_probes(inputs, cfg)
    return inputs.memo(few_key(cfg, probe, n), lambda: _few_fits(inputs, cfg, probe, n))


def few_key(cfg, probe: str, n: int) -> tuple:
    return probe, "labels", n, cfg.probe_seeds, tuple(getattr(cfg, s) for s in PROBE_SETTINGS[probe])


def _few_fits(inputs, cfg, probe: str, n: int) -> list[Fit] | None:
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


_LABELLED = tuple(f"{p}.labels_{n}{std}" for p in PROBES for n in (100, 600, 1000, 3000) for std in ("", "_std"))


@register_metric("label_efficiency", unit="%", direction="higher", needs=("representations", "labels"),
                 settings=("label_counts", "probe_seeds") + ALL_PROBE_SETTINGS, outputs=_LABELLED, version=2,
                 output_pattern=r"(linear|nonlinear|knn)_probe\.labels_\d+(_std)?",
                 description="the probes trained on only n labelled training representations (class-balanced "
                             "subsets chosen by seed, the same for every learner), scored on the whole test set")
def _label_efficiency(inputs, cfg, generator):
    values, fits = {}, {}
    for probe in PROBES:
        for n in cfg.label_counts:
            per_seed = few_label_accuracies(inputs, cfg, probe, n)
            name = f"{probe}.labels_{n}"
            values[name] = None if per_seed is None else float(np.mean([f.accuracy for f in per_seed]))
            if per_seed is not None:
                values[name + "_std"] = float(np.std([f.accuracy for f in per_seed]))
                if fits_record(per_seed):
                    fits[name] = fits_record(per_seed)
    return Values(values, {"fits": fits})


# ------------------------------------------------------------------------------------------ fits side by side
# A probe fit is a small model on one thread (PROBE_THREADS), so a battery on two threads would leave a core
# idle through its probes. Instead the fits its metrics read run side by side, one per thread of the process,
# each on one thread: a fit's values are those it gets alone, bit for bit (its inputs and generators are its own).
# The longest fits first, so that the workers end together: those scored on k test samples (the k-NN's the
# longest: a vote among all training rows for each of k x N test rows), then the MLP's, then the rest.
SAMPLED_ORDER = ("knn_probe", "nonlinear_probe", "linear_probe")
FIT_ORDER = ("nonlinear_probe", "knn_probe", "linear_probe")


def fit_battery_probes(inputs, cfg) -> None:
    """Compute, once per battery, every probe fit that the metrics `cfg.metrics` read and that apply to
    `inputs`, and keep them in its memo; their wall time is the battery's `probes` timing."""
    inputs.memo(("battery probe fits", cfg), lambda: _fit_side_by_side(inputs, _battery_jobs(inputs, cfg)))


def _battery_jobs(inputs, cfg) -> list:
    """The fits as jobs, each returning {memo key: fits}."""
    applies = lambda m: m in cfg.metrics and all(inputs.has(need) for need in METRICS.get(m).needs)
    type_job = lambda p, t: _type_job(inputs, cfg, p, t)
    few_job = lambda p, n: lambda: {few_key(cfg, p, n): _few_fits(inputs, cfg, p, n)}
    typed = applies("rep_types")
    jobs = [type_job(probe, "sample_k1") for probe in SAMPLED_ORDER if typed]
    for probe in FIT_ORDER:
        types = (["mean"] if applies(probe) else []) + (["mean", "embedding"] if typed else [])
        jobs += [type_job(probe, t) for t in dict.fromkeys(types)]
        if applies("label_efficiency"):
            jobs += [few_job(probe, n) for n in sorted(cfg.label_counts, reverse=True)]
    return jobs


def _fit_side_by_side(inputs, jobs: list) -> None:
    inputs.reps  # extracted, and timed as its own step, before the fits' clock starts
    start = time.perf_counter()
    workers = min(torch.get_num_threads(), len(jobs)) if inputs.device.type == "cpu" else 1
    with probe_threads():
        if workers <= 1:
            results = [job() for job in jobs]
        else:
            pool = ThreadPoolExecutor(workers, thread_name_prefix="repbench-probe")
            try:
                results = list(pool.map(lambda job: job(), jobs))
            except BaseException:  # Ctrl-C or a failed fit: the MLP fits still running stop at their next epoch
                STOP.set()
                pool.shutdown(wait=True, cancel_futures=True)
                STOP.clear()
                raise
            pool.shutdown()
    for result in results:
        _keep(inputs, result)
    inputs.timings_s["probes"] = inputs.timings_s.get("probes", 0.0) + time.perf_counter() - start

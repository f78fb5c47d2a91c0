"""Representations made outside repbench, on the same leaderboard: precomputed features (`repbench eval --features
FILE.npz`) or any encoder callable (`repbench.evaluate(encode, dataset)`), scored by every metric that needs only
representations and labels, and recorded as a run like any other (folder, run.json, MLflow)."""
from __future__ import annotations

import hashlib
import zipfile
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..measure import BatteryConfig, battery_for, run_battery
from ..data import ImageData, load_dataset
from ..errors import RepbenchError, first_line
from .record import Measured
from .recording import Recorder
from .records import check_name, check_results_dir, find_finished, new_run_folder
from .runner import RunSpec

ARRAYS = ("train", "train_y", "test", "test_y")
PRESET = "features"  # how these runs show in tables: not trained by repbench at any preset
LARGEST = 1e15       # above it, squares summed over 100,000 rows overflow the probes' 32-bit floats (3.4e38)


def read_features(path: Path) -> dict[str, np.ndarray]:
    """The four arrays of a features file, checked: N x d finite floats and N integer labels per split."""
    path = Path(path)
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # an .npy: one bare array, not the four named ones
            raise ValueError(f"it holds one {type(loaded).__name__}, not named arrays")
        with loaded as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:  # truncated, not a zip
        raise RepbenchError(f"cannot read features file {path}: {first_line(exc, 150)} (expected an .npz "
                            f"with arrays {', '.join(ARRAYS)})") from None
    missing = [k for k in ARRAYS if k not in arrays]
    if missing:
        raise RepbenchError(f"{path} lacks the array(s) {', '.join(missing)}; it needs {', '.join(ARRAYS)} "
                            f"(np.savez(path, train=..., train_y=..., test=..., test_y=...))")
    check_arrays(arrays, str(path))
    return arrays


def check_arrays(a: dict, where: str) -> None:
    for split in ("train", "test"):
        x, y = np.asarray(a[split]), np.asarray(a[f"{split}_y"])
        if x.ndim != 2 or not np.issubdtype(x.dtype, np.number) or x.shape[1] == 0:
            raise RepbenchError(f"{where}: '{split}' must be an N x d array of numbers, got shape {x.shape} {x.dtype}")
        if not np.isfinite(x).all():
            raise RepbenchError(f"{where}: '{split}' has {int((~np.isfinite(x)).sum())} NaN or infinite values")
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or len(y) != len(x):
            raise RepbenchError(f"{where}: '{split}_y' must be {len(x)} integer labels, got shape {y.shape} {y.dtype}")
        if len(x) < 2:
            raise RepbenchError(f"{where}: '{split}' has {len(x)} rows; at least 2 are needed")
        if np.abs(x).max() >= LARGEST:
            raise RepbenchError(f"{where}: '{split}' has values as large as {np.abs(x).max():.3g}; representations "
                                f"must stay below {LARGEST:.0e} in magnitude (the probes' sums of squares in 32-bit "
                                f"floats)")
        if y.min() < 0:
            raise RepbenchError(f"{where}: '{split}_y' has negative labels ({int(y.min())}); labels are classes "
                                f"0, 1, 2, ...")
    if len(np.unique(a["train_y"])) < 2:
        raise RepbenchError(f"{where}: 'train_y' has a single class ({int(np.asarray(a['train_y'])[0])}); a probe "
                            f"needs at least two")
    if np.asarray(a["train"]).shape[1] != np.asarray(a["test"]).shape[1]:
        raise RepbenchError(f"{where}: train and test representations differ in width "
                            f"({np.asarray(a['train']).shape[1]} vs {np.asarray(a['test']).shape[1]})")


def check_dataset(arrays: dict, dataset: str, where: str, data_root: str | None = None) -> None:
    """Representations recorded as a dataset's must be of its fixed splits: the rows of the whole split or of a
    preset's share, in their order, which their labels must match (a file of other images is `external`)."""
    from ..config import TRAIN_PRESETS
    if dataset == "external":
        return
    data = load_dataset(dataset, data_root)
    sizes = []
    for limits in dict.fromkeys((p.train_limit, p.test_limit) for p in TRAIN_PRESETS.values()):
        split = data.limit(*limits)
        if all(np.array_equal(np.asarray(arrays[f"{s}_y"]), getattr(split, f"{s}_y").numpy())
               for s in ("train", "test")):
            return
        sizes.append(f"{len(split.train_y)} / {len(split.test_y)}")
    raise RepbenchError(f"{where} does not hold {dataset}'s splits: its {len(arrays['train_y'])} / "
                        f"{len(arrays['test_y'])} rows and labels are not those of {dataset} "
                        f"({' or '.join(sorted(set(sizes)))} rows in the dataset's order); give those rows, or "
                        f"--dataset external for representations of other images")


def representation_metrics(cfg: BatteryConfig) -> BatteryConfig:
    """The battery restricted to metrics that need only representations and labels."""
    from ..metrics import METRICS
    bare = lambda m: set(METRICS.get(m).needs) <= {"representations", "labels"}
    chosen = tuple(m for m in cfg.metrics if bare(m))
    if not chosen:  # the choices from the registry, so a new metric is offered as soon as it is registered
        raise RepbenchError(f"none of the metrics {', '.join(cfg.metrics)} can score bare representations; "
                            f"choose among {', '.join(m for m in METRICS.names() if bare(m))}")
    return replace(cfg, metrics=chosen)


def score(arrays: dict, name: str, dataset: str, cfg: BatteryConfig, *, fingerprint: str, results_dir=None,
          tracking_uri: str | None = None, experiment: str = "repbench", progress: bool = False, seed: int = 0,
          tags: dict | None = None) -> dict:
    """Run the representation metrics on the arrays; record a run unless `results_dir` is None."""
    cfg = representation_metrics(cfg)
    train_y, test_y = (torch.as_tensor(np.asarray(arrays[k]), dtype=torch.long) for k in ("train_y", "test_y"))
    classes = int(max(train_y.max(), test_y.max())) + 1
    data = ImageData(dataset, torch.zeros(len(train_y), 1, 1, 1, dtype=torch.uint8), train_y,
                     torch.zeros(len(test_y), 1, 1, 1, dtype=torch.uint8), test_y, classes)
    reps = {split: {"mean": torch.as_tensor(np.asarray(arrays[split]), dtype=torch.float32)}
            for split in ("train", "test")}
    cfg.check_data(data)
    if results_dir is None:
        res = run_battery(None, data, cfg, seed=seed, reps=reps, progress=progress)
        return {"name": name, "metrics": res.metrics, "measured_with": res.measured_with, "status": "EVALUATED"}
    return record_outside(name, dataset, cfg, data, reps, fingerprint=fingerprint, results_dir=Path(results_dir),
                          tracking_uri=tracking_uri, experiment=experiment, progress=progress, seed=seed,
                          tags=tags or {})


def record_outside(name: str, dataset: str, cfg, data, reps: dict, *, fingerprint: str, results_dir: Path,
                   tracking_uri: str | None, experiment: str, progress: bool, seed: int, tags: dict) -> dict:
    """Score representations made elsewhere and record them as a run (reusing one of the same source and
    settings): `<name>-<dataset>-features-s<seed>-<fingerprint of the representations>`."""
    spec = RunSpec(learner=name, dataset=dataset, preset=PRESET, seed=seed, results_dir=results_dir,
                   tracking_uri=tracking_uri, experiment=experiment, battery=cfg, tags=tags, progress=progress)
    identity = {"name": f"{name}-{dataset}-{PRESET}-s{seed}", "learner": name, "display_name": name,
                "dataset": dataset, "preset": PRESET, "seed": seed}
    runs_root = check_results_dir(results_dir) / "runs"
    prefix = f"{identity['name']}-{fingerprint}"
    done = find_finished(runs_root, prefix)
    rec = Recorder.attach(spec, done) if done else Recorder.start(
        spec, identity, {"learner": name, "source": "representations made outside repbench",
                         "fingerprint": fingerprint, "shape": {"train": list(reps["train"]["mean"].shape),
                                                               "test": list(reps["test"]["mean"].shape)}},
        new_run_folder(runs_root, prefix), "cpu", key=prefix,
        dataset={"name": dataset, "digest": fingerprint, "profile": {
            "train_representations": len(reps["train"]["mean"]), "test_representations": len(reps["test"]["mean"])}})
    old = rec.stored(history=[]) if done else None
    todo = old.missing(cfg) if old else list(cfg.metrics)
    if old and not todo:
        rec.add_tags(tags)
        return rec.result(old, "REUSED")
    with rec.guard(keep_status=bool(done)):
        res = run_battery(None, data, replace(cfg, metrics=tuple(todo)), seed=seed, reps=reps, progress=progress)
        record = rec.save(Measured.of(res, cfg), [], history=[], into=old)
    if old:
        rec.add_tags(tags)
        return rec.result(record, "REUSED", measured_now=todo)
    return rec.finished(record)


def evaluate_features(path: Path, *, name: str | None = None, dataset: str = "external", battery: dict | None = None,
                      data_root: str | None = None, **kw) -> dict:
    """`repbench eval --features FILE.npz`: scored as `dataset`'s if it holds that dataset's splits, or as
    `external` data."""
    check_name(name or Path(path).stem, "--name" if name else "the features file's name (give --name)")
    check_name(dataset, "--dataset")
    arrays = read_features(path)
    check_dataset(arrays, dataset, str(path), data_root)
    fingerprint = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:10]
    return score(arrays, name or Path(path).stem, dataset, battery_for("quick", battery), fingerprint=fingerprint,
                 **kw)


def evaluate(model, dataset: str | ImageData = "mnist5k", *, name: str | None = None, preset: str = "quick",
             battery: dict | None = None, batch_size: int = 500, results_dir: str | Path | None = "results",
             tracking_uri: str | None = None, experiment: str = "repbench", progress: bool = False, seed: int = 0,
             tags: dict | None = None) -> dict:
    """Score a model that maps uint8 images [N, C, H, W] to an N x d tensor or array on a dataset's fixed split,
    with the preset's data limits and battery; recorded as a run under `results_dir` (None: only returned).
    `model` is an object with `encode(images)` (the shape most representation libraries give their models; it is
    used whenever present) or a callable (a torch module, a function, a scikit-learn transformer's `transform`
    wrapped to take images)."""
    from ..config import TRAIN_PRESETS, check_preset
    encode = getattr(model, "encode", None)
    encode = encode if callable(encode) else model
    if not callable(encode):
        raise RepbenchError(f"evaluate takes a callable or an object with encode(images) -> array, got a "
                            f"{type(model).__name__}")
    if name is not None:
        check_name(name, "name")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise RepbenchError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(dataset, (str, ImageData)):
        raise RepbenchError(f"dataset must be a dataset name or an ImageData, got {type(dataset).__name__}")
    data = load_dataset(dataset) if isinstance(dataset, str) else dataset
    limits = TRAIN_PRESETS[check_preset(preset)]
    data = data.limit(limits.train_limit, limits.test_limit)
    arrays = {"train": _encode_all(encode, data.train_x, batch_size), "train_y": data.train_y.numpy(),
              "test": _encode_all(encode, data.test_x, batch_size), "test_y": data.test_y.numpy()}
    label = name or getattr(model, "__name__", type(model).__name__).lower()
    check_arrays(arrays, f"the output of {label}")
    h = hashlib.sha256()
    for key in ("train", "test"):
        h.update(np.ascontiguousarray(arrays[key], dtype=np.float32).tobytes())
    return score(arrays, label, data.name, battery_for(preset, battery), fingerprint=h.hexdigest()[:10],
                 results_dir=results_dir, tracking_uri=tracking_uri, experiment=experiment, progress=progress,
                 seed=seed, tags=tags)


def _encode_all(encode, x: torch.Tensor, batch_size: int) -> np.ndarray:
    outs = []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            out = encode(x[i:i + batch_size])
            out = out.detach().cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
            if out.ndim != 2 or len(out) != len(x[i:i + batch_size]):
                raise RepbenchError(f"the encoder must map {len(x[i:i + batch_size])} images to a "
                                    f"{len(x[i:i + batch_size])} x d array, got shape {out.shape}")
            outs.append(out.astype(np.float32))
    return np.concatenate(outs)



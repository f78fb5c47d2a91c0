"""A run = learner x dataset x preset x seed -> train -> representations -> metrics -> record.

`run(spec)` plans (every option is checked before any work), then either completes a finished run of the same
configuration (measuring only what it lacks, from cached representations) or trains one in its own folder,
and records it: `run.json`, `metrics.json` and the MLflow run always agree on how it ended.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch

from .. import seeds
from ..data import DATASETS, ImageData, labelled_subset, load_dataset
from ..errors import RepbenchError
from ..learners import create_learner, has_ability, learner_from_params
from ..malloc import tune as tune_malloc
from ..measure import BatteryConfig, plots, run_battery
from .record import Measured, RunRecord
from .recording import Recorder
from .records import (RunBusy, check_results_dir, find_finished, find_run, new_run_folder, resumable, run_name,
                      run_prefix, settle_orphans)
from .tracking import check_tracking, default_tracking_uri, reconcile


@dataclass(frozen=True)
class RunSpec:
    learner: str
    options: dict = field(default_factory=dict)
    dataset: str = "mnist5k"
    preset: str = "quick"
    seed: int = 0
    device: str = "auto"
    results_dir: Path = Path("results")
    tracking_uri: str | None = None
    experiment: str = "repbench"
    data_root: str | None = None
    download: bool = False
    resume: bool | Literal["auto"] = False  # True: continue the interrupted run (error if none); "auto": if any
    progress: bool = True
    grid: int = 8  # images per row of the sample / reconstruction grid; 0 skips it
    augment: bool = True  # the dataset's training augmentation, where it has one (cifar10)
    battery: BatteryConfig = BatteryConfig()
    reuse: bool = False  # complete the newest finished run of this configuration instead of training again
    tags: dict = field(default_factory=dict)
    # A cluster cell's folder is scratch on its node: its checkpoint goes to the tracking server every N epochs
    # (0: never), and a cell restarted elsewhere continues the MLflow run it began (see cluster.py).
    checkpoint_every: int = 0
    mlflow_run_id: str | None = None


def resolve_device(name: str) -> torch.device:
    """The device a name means, checked; on a GPU, its fast kernels switched on (`gpu_settings`)."""
    device = _device(name)
    if device.type == "cuda":
        gpu_settings(device)
    return device


def gpu_settings(device: torch.device) -> None:
    """cuDNN tries the convolution algorithms for each batch shape once and keeps the fastest (batches have
    fixed shapes), and on Ampere and later float32 matrix products use TF32, as torch's convolutions already do
    by default. GPU runs are not bit-exact either way."""
    torch.backends.cudnn.benchmark = True
    if torch.cuda.get_device_capability(device)[0] >= 8:
        torch.backends.cuda.matmul.allow_tf32 = True


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise RepbenchError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise RepbenchError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RepbenchError(f"device '{name}' asked for, but no CUDA device is available (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RepbenchError(f"device '{name}' does not exist: {torch.cuda.device_count()} CUDA device(s)")
    return device


def plan(spec: RunSpec, device: torch.device | str = "cpu"):
    """The learner a spec asks for, built (options checked) but not trained; nothing is loaded or written."""
    shape = DATASETS.get(spec.dataset).image_shape
    if spec.grid < 0:
        raise RepbenchError(f"--grid must be >= 0 (images per row; 0 skips the grid), got {spec.grid}")
    if isinstance(spec.seed, bool) or not isinstance(spec.seed, int) or not 0 <= spec.seed < 2 ** 31:
        raise RepbenchError(f"--seed must be an integer from 0 to 2^31 - 1, got {spec.seed!r}")
    if not (isinstance(spec.resume, bool) or spec.resume == "auto"):
        raise RepbenchError(f"resume must be True, False or 'auto', got {spec.resume!r}")
    check_tracking(spec.tracking_uri or default_tracking_uri(spec.results_dir), spec.experiment)
    return create_learner(spec.learner, preset=spec.preset, image_shape=shape, seed=spec.seed, device=device,
                          **spec.options)


def finished_run(spec: RunSpec) -> Path | None:
    """The newest finished run of the configuration a spec asks for, if any; nothing is loaded or written."""
    learner = plan(spec)
    return find_finished(Path(spec.results_dir) / "runs", run_prefix(learner, spec.dataset, spec.augment))


def run(spec: RunSpec) -> dict:
    """Execute one run; return its record (status, metrics, folder, MLflow run id)."""
    tune_malloc()  # before the run allocates tensors: see malloc.py
    device = resolve_device(spec.device)
    learner = plan(spec, device)
    runs_root, prefix = check_results_dir(spec.results_dir) / "runs", run_prefix(learner, spec.dataset, spec.augment)
    with configuration_lock(runs_root, prefix):
        finished, folder, resume = look_up(spec, learner)
        if finished is None:  # under the lock until run.json says RUNNING: a second process then sees this run
            data = load_data(spec, learner)
            spec.battery.check_data(data)
            # a new run's folder only now: data that cannot be loaded or settings it rules out leave none behind
            folder = folder or new_run_folder(runs_root, prefix)
            rec = Recorder.open(spec, learner, folder, device, data)
    if finished is not None:  # before any data is loaded: reusing a finished cell should cost nothing
        return complete(finished, spec, device)
    with rec.guard():
        train(learner, data, spec, rec, resume)
        measured, artifacts = measure(learner, data, rec.folder, spec.battery, spec, run_name(learner, spec.dataset))
        record = rec.save(measured, artifacts, history=learner.history)
    return rec.finished(record)


def look_up(spec: RunSpec, learner) -> tuple[Path | None, Path | None, bool]:
    """(a finished run to complete instead of training, when `reuse` allows it; else None, the interrupted run's
    folder to continue in (None: a new run), and whether there is one). Orphaned runs are settled and
    MLflow brought in line first, so that what is found is how things stand."""
    prefix = run_prefix(learner, spec.dataset, spec.augment)
    runs_root = check_results_dir(spec.results_dir) / "runs"
    settle_orphans(runs_root, prefix)
    reconcile(spec.results_dir, spec.tracking_uri or default_tracking_uri(spec.results_dir))
    done = find_finished(runs_root, prefix) if spec.reuse and spec.resume is not True else None
    if done is not None:
        return done, None, False
    folder, why_not = resumable(runs_root, prefix) if spec.resume else (None, "")
    if spec.resume is True and folder is None:
        raise RepbenchError(f"--resume: nothing to continue for {run_name(learner, spec.dataset)} with these "
                            f"options under {runs_root}: {why_not}")
    return None, folder, folder is not None


def train(learner, data: ImageData, spec: RunSpec, rec: Recorder, resume: bool) -> None:
    """Fit the learner in the run's folder: its checkpoint every epoch, each epoch's values to the record."""
    augment = DATASETS.get(spec.dataset).augment if spec.augment else None
    learner.fit(data.train_x, data.test_x, checkpoint=rec.folder / "checkpoint.pt", resume=resume,
                progress=spec.progress, on_epoch=rec.log_epoch, **({"augment": augment} if augment else {}),
                **labels_for(learner, data, rec))
    if not (rec.folder / "checkpoint.pt").exists():  # a learner that writes no checkpoint of its own
        learner.save(rec.folder / "checkpoint.pt")


@contextlib.contextmanager
def configuration_lock(runs_root: Path, prefix: str):
    """Held from looking for a configuration's runs until its new run says RUNNING in run.json, so that a second
    process deciding at the same moment sees that run (and reuses, waits for or refuses it) instead of training
    the same cell twice. A lost process's lock is released by the kernel with its file."""
    from filelock import FileLock, Timeout
    locks = runs_root.parent / "locks"
    try:
        locks.mkdir(exist_ok=True)
    except OSError as exc:
        raise RepbenchError(f"cannot create {locks}: {exc.strerror or exc}") from None
    try:
        with FileLock(str(locks / f"{prefix}.lock"), timeout=600):
            yield
    except Timeout:
        raise RunBusy(f"another process has held {prefix}'s lock for 10 minutes; wait for it or stop it") from None


def labels_for(learner, data: ImageData, rec: Recorder) -> dict:
    """The labels a semi-supervised learner may use: a class-balanced subset of `label_budget` training images
    chosen by the run's seed; the run records which. Other learners get none."""
    if not has_ability(learner, "labels"):
        return {}
    idx = labelled_subset(data.train_y, learner.label_budget, learner.seed)
    rec.note_labelled(idx, learner.seed)
    return {"train_y": data.train_y, "labelled": idx}


def load_data(spec: RunSpec, learner) -> ImageData:
    data = load_dataset(spec.dataset, spec.data_root, spec.download)
    return data.limit(*learner.data_limits())


def complete(folder: Path, spec: RunSpec, device: torch.device) -> dict:
    """A finished run of this configuration: measure the metrics it lacks or measured with other settings
    (from the cached representations, without training), tag it with this suite, and return it as REUSED."""
    rec = Recorder.attach(spec, folder)
    old = rec.stored()
    todo = old.missing(spec.battery)
    if not todo:
        rec.add_tags(spec.tags)
        return rec.result(old, "REUSED")
    learner = learner_from_params(rec.state["params"], device).load(folder / "checkpoint.pt")
    old = rec.stored(learner.history)  # a damaged record is rebuilt with the checkpoint's training history
    data = load_data(spec, learner)
    cfg = replace(spec.battery, metrics=tuple(todo))
    cfg.check_data(data)
    with rec.guard(keep_status=True):
        measured, artifacts = measure(learner, data, folder, cfg, replace(spec, grid=0), old.name or "")
        record = rec.save(measured, artifacts, into=old)
    rec.add_tags(spec.tags)
    return rec.result(record, "REUSED", measured_now=todo)


def measure(learner, data: ImageData, folder: Path, cfg: BatteryConfig, spec: RunSpec, title: str
            ) -> tuple[Measured, list[Path]]:
    """Run the battery, draw its figures; return the record's measured part and the files to keep."""
    checkpoint = folder / "checkpoint.pt"
    res = run_battery(learner, data, cfg, seed=learner.seed, cache_dir=Path(spec.results_dir) / "cache",
                      checkpoint=checkpoint if checkpoint.exists() else None, progress=spec.progress)
    artifacts = [checkpoint]
    if res.spectrum:
        artifacts.append(plots.spectrum_plot({title: res.spectrum}, folder / "spectrum.png"))
    if res.probes:
        artifacts.append(plots.probe_plot(res.probes, folder / "probes.png", title,
                                          chance=100.0 / max(int(data.train_y.max()) + 1, 1)))
    if spec.grid and has_ability(learner, "generator"):
        artifacts.append(sample_grid(learner, data, folder / "samples.png", spec.grid, learner.seed, title))
    return Measured.of(res, cfg), artifacts


def sample_grid(learner, data: ImageData, path: Path, n: int, seed: int, title: str) -> Path:
    """min(n, 6) test images, each with n - 1 samples of p(x|z) sharing its z (a local decoder's samples need
    not look like the input: they show what z keeps), then a row of samples from the prior."""
    g = torch.Generator(device=learner.device).manual_seed(seeds.sample_grid(seed))
    rows, k = min(n, 6), max(n - 1, 1)
    x = data.test_x[:rows]
    samples = learner.reconstruct(x.repeat_interleave(k, 0), g).view(rows, k, *x.shape[1:])
    return plots.conditional_grid(x, samples, learner.sample(k + 1, g), path, title)


def evaluate_saved(*, run_ref: str | None, checkpoint: Path | None, dataset: str | None, results_dir: Path,
                   battery: dict, device: str = "auto", tracking_uri: str | None = None,
                   data_root: str | None = None, progress: bool = True, grid: int = 0) -> dict:
    """Re-run chosen metrics on a trained learner: a run of ours (results merged into its record) or any
    checkpoint (results beside it in eval-metrics.json). `battery` holds overrides of the preset's battery."""
    from ..learners import load_learner
    from ..measure import battery_for
    from ..files import write_json
    device = resolve_device(device)
    if run_ref:
        folder = find_run(results_dir, run_ref)
        spec = RunSpec("?", results_dir=Path(results_dir), tracking_uri=tracking_uri, progress=progress,
                       data_root=data_root)
        rec = Recorder.attach(spec, folder)
        learner = learner_from_params(rec.state.get("params", {}), device).load(folder / "checkpoint.pt")
        if dataset and dataset != rec.state.get("dataset"):
            raise RepbenchError(f"run {folder.name} was trained on {rec.state.get('dataset')}; its record takes no "
                                f"values measured on {dataset} (evaluate its checkpoint with --checkpoint instead)")
        dataset = rec.state.get("dataset", "mnist5k")
    else:
        learner, folder, rec = load_learner(checkpoint, device=device), Path(checkpoint).parent, None
        dataset = dataset or "mnist5k"
    shape = DATASETS.get(dataset).image_shape
    if tuple(learner.image_shape) != tuple(shape):
        raise RepbenchError(f"{checkpoint or folder} holds a {learner.display_name} of images {learner.image_shape}; "
                            f"dataset {dataset} has images {tuple(shape)} (give the dataset it was trained on)")
    cfg = battery_for(learner.preset, battery)
    spec = RunSpec(learner.name, dataset=dataset, results_dir=Path(results_dir), data_root=data_root,
                   progress=progress, grid=grid, battery=cfg)
    data = load_dataset(dataset, data_root).limit(*learner.data_limits())
    cfg.check_data(data)
    title = f"{learner.display_name} on {dataset}"
    if rec is None:
        measured, _ = measure(learner, data, folder, cfg, spec, title)
        record = RunRecord.new({"name": title, "learner": learner.name, "dataset": dataset}, measured).to_json()
        write_json(folder / "eval-metrics.json", record)
        return {**record, "folder": str(folder), "mlflow_run_id": None, "status": "EVALUATED",
                "tracking_error": None}
    with rec.guard(keep_status=True):
        measured, artifacts = measure(learner, data, folder, cfg, spec, title)
        old = rec.stored(learner.history)
        record = rec.save(measured, [a for a in artifacts if a.name != "checkpoint.pt"], into=old)
    # the record on disk keeps every metric; the timings returned are this evaluation's own
    return {**rec.result(record, "EVALUATED"), "timings_s": measured.timings_s or {}}

"""A run = learner x dataset x preset x seed -> train -> representations -> metrics -> record.

Each run owns a folder under `results/runs/` holding its checkpoint, `run.json` (configuration and status) and
`metrics.json`, so nothing is lost if tracking fails, and `--resume` finds the interrupted run of the same
configuration and continues it (same folder, same MLflow run).
"""
from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .api import create_learner
from .battery import BatteryConfig, battery_for, run_battery, unit_of
from .data import DATASETS, ImageData, load_dataset
from . import plots
from .registry import RepbenchError
from .tracking import MLflowTracker, default_tracking_uri
from .train import NonFiniteLoss


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
    resume: bool = False
    progress: bool = True
    grid: int = 8  # images per row of the sample / reconstruction grid; 0 skips it
    augment: bool = True  # the dataset's training augmentation, where it has one (cifar10)
    battery: BatteryConfig = BatteryConfig()
    reuse: bool = False  # return the newest finished run of this configuration instead of training again
    tags: dict = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise RepbenchError(f"unknown device '{name}'; use auto, cpu or cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RepbenchError(f"device '{name}' asked for, but no CUDA device is available (use --device cpu)")
    return torch.device(name)


def display_name(learner: str, options: dict) -> str:
    h = options.get("h")
    return f"{learner}-h{h}" if h is not None else learner


def config_key(learner, dataset: str, augment: bool = True) -> str:
    """A hash of everything that determines a run's trained weights: learner, dataset, image shape, preset, seed
    and the resolved settings (`key_settings`), so options spelled differently but resolving alike share a key."""
    from .data import DATASETS
    blob = {"learner": learner.name, "dataset": dataset, "image_shape": list(learner.image_shape),
            "preset": learner.preset, "seed": learner.seed, "settings": learner.key_settings()}
    if not augment and DATASETS.get(dataset).augment is not None:
        blob["augment"] = False  # only then, so runs on data without augmentation keep their keys
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:10]


def run_prefix(learner: str, options: dict, dataset: str, preset: str, seed: int, augment: bool = True) -> str:
    """The run folder prefix of a configuration: readable name and the configuration key."""
    from .data import DATASETS
    built = create_learner(learner, preset=preset, image_shape=DATASETS.get(dataset).image_shape, seed=seed,
                           **options)
    return f"{built.display_name}-{dataset}-{preset}-s{seed}-{config_key(built, dataset, augment)}"


def new_run_folder(runs_root: Path, prefix: str) -> Path:
    """Create a fresh run folder atomically: two runs started in the same millisecond still get their own."""
    runs_root.mkdir(parents=True, exist_ok=True)
    now = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now)) + f"{int(now * 1000) % 1000:03d}"
    for n in range(1000):
        folder = runs_root / f"{prefix}-{stamp}{'' if n == 0 else f'-{n}'}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise RepbenchError(f"could not create a new run folder for {prefix} under {runs_root}")


def find_resumable(runs_root: Path, prefix: str) -> Path | None:
    for folder in sorted(runs_root.glob(prefix + "-*"), reverse=True):
        state = read_json(folder / "run.json")
        if state.get("status") != "FINISHED" and (folder / "checkpoint.pt").exists():
            return folder
    return None


def find_finished(runs_root: Path, prefix: str) -> Path | None:
    for folder in sorted(runs_root.glob(prefix + "-*"), reverse=True):
        if read_json(folder / "run.json").get("status") == "FINISHED" and (folder / "metrics.json").exists():
            return folder
    return None


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    tmp.replace(path)


def environment() -> dict[str, str]:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).parent).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    import mlflow
    import numpy
    import sklearn
    return {"git_commit": commit, "repbench": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "sklearn": sklearn.__version__, "mlflow": mlflow.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "threads": str(torch.get_num_threads())}


def run(spec: RunSpec) -> dict:
    """Execute one run; return its record (status, metrics, folder, MLflow run id)."""
    device = resolve_device(spec.device)
    prefix = run_prefix(spec.learner, spec.options, spec.dataset, spec.preset, spec.seed, spec.augment)  # checks options
    runs_root = Path(spec.results_dir) / "runs"
    done = find_finished(runs_root, prefix) if spec.reuse and not spec.resume else None
    if done is not None:  # before any data is loaded: reusing a finished cell should cost nothing
        state = read_json(done / "run.json")
        return {**read_json(done / "metrics.json"), "folder": str(done), "mlflow_run_id": state.get("mlflow_run_id"),
                "status": "REUSED", "tracking_error": None}
    data = load_dataset(spec.dataset, spec.data_root, spec.download)
    learner = create_learner(spec.learner, preset=spec.preset, image_shape=data.image_shape, seed=spec.seed,
                             device=device, **spec.options)
    data = data.limit(learner.train_config.train_limit, learner.train_config.test_limit)
    augment = DATASETS.get(spec.dataset).augment if spec.augment else None
    params = {**learner.params(), "augment": getattr(augment, "__name__", "none")}
    name = f"{display_name(spec.learner, spec.options)}-{spec.dataset}-{spec.preset}-s{spec.seed}"
    folder = find_resumable(runs_root, prefix) if spec.resume else None
    if spec.resume and folder is None:
        raise RepbenchError(f"--resume: no interrupted run of {name} with these options under {runs_root}; "
                            f"start it without --resume")
    folder = folder or new_run_folder(runs_root, prefix)
    state = read_json(folder / "run.json") or {"name": name, "spec": asdict(spec), "params": params,
                                                "dataset": spec.dataset, "environment": environment()}
    tracker = MLflowTracker(spec.tracking_uri or default_tracking_uri(spec.results_dir), spec.experiment,
                            spec.results_dir)
    tags = {"learner": spec.learner, "display_name": display_name(spec.learner, spec.options),
            "dataset": spec.dataset, "preset": spec.preset, "seed": str(spec.seed), "run_folder": str(folder),
            **spec.tags}
    state["mlflow_run_id"] = tracker.start(name, {**params, "dataset": spec.dataset, "device": str(device),
                                                  "env": state["environment"]}, tags, state.get("mlflow_run_id"))
    state.update(status="RUNNING", device=str(device))
    write_json(folder / "run.json", state)
    try:
        learner.fit(data.train_x, data.test_x, checkpoint=folder / "checkpoint.pt", resume=spec.resume,
                    progress=spec.progress, on_epoch=lambda r: tracker.log_metrics(
                        {k: v for k, v in r.items() if k != "epoch"}, step=r["epoch"]),
                    **({"augment": augment} if augment is not None else {}))
        record, artifacts = measure(learner, data, folder, spec.battery, seed=spec.seed, progress=spec.progress,
                                    cache_dir=Path(spec.results_dir) / "cache", grid=spec.grid,
                                    title=f"{display_name(spec.learner, spec.options)} on {spec.dataset}")
    except (NonFiniteLoss, RepbenchError) as exc:
        finish(state, folder, tracker, "FAILED", error=str(exc))
        raise
    except KeyboardInterrupt:
        finish(state, folder, tracker, "KILLED", error="interrupted; continue with --resume")
        raise
    except Exception as exc:  # a bug or a library failure: the record says FAILED and the traceback is on disk
        (folder / "traceback.txt").write_text(traceback.format_exc())
        first = (str(exc).splitlines() or [""])[0][:160]
        message = (f"{name} failed unexpectedly ({type(exc).__name__}: {first}); the traceback is in "
                   f"{folder / 'traceback.txt'}; the last finished epoch's checkpoint is kept")
        finish(state, folder, tracker, "FAILED", error=message)
        raise RepbenchError(message) from exc
    record = {"name": name, "learner": spec.learner, "dataset": spec.dataset, "preset": spec.preset,
              "seed": spec.seed, **record, "history": learner.history}
    save_record(folder, record, tracker, artifacts)
    finish(state, folder, tracker, "FINISHED")
    return {**record, "folder": str(folder), "mlflow_run_id": state["mlflow_run_id"], "status": "FINISHED",
            "tracking_error": tracker.error}


def measure(learner, data: ImageData, folder: Path, cfg: BatteryConfig, *, seed: int, progress: bool,
            cache_dir: Path, grid: int, title: str) -> tuple[dict, list[Path]]:
    """Run the battery, draw its figures; return the record's measured part and the files to keep."""
    checkpoint = folder / "checkpoint.pt"
    res = run_battery(learner, data, cfg, seed=seed, cache_dir=cache_dir,
                      checkpoint=checkpoint if checkpoint.exists() else None, progress=progress)
    artifacts = [checkpoint]
    if res.spectrum:
        artifacts.append(plots.spectrum_plot({title: res.spectrum}, folder / "spectrum.png"))
    if res.probes:
        artifacts.append(plots.probe_plot(res.probes, folder / "probes.png", title))
    if grid and hasattr(learner, "sample"):
        start = time.perf_counter()
        artifacts.append(sample_grid(learner, data, folder / "samples.png", grid, seed, title))
        res.timings_s["samples"] = round(time.perf_counter() - start, 3)
    units = {k: dict(zip(("unit", "better"), unit_of(k))) for k in res.metrics}
    return {"metrics": res.metrics, "units": units, "spectrum": res.spectrum, "probes": res.probes,
            "timings_s": res.timings_s, "battery": asdict(cfg)}, artifacts


def save_record(folder: Path, record: dict, tracker: MLflowTracker, artifacts: list[Path]) -> None:
    write_json(folder / "metrics.json", record)
    tracker.log_metrics({k: v for k, v in record["metrics"].items() if v is not None})
    tracker.set_tags({f"unit.{k}": f"{u['unit']} ({u['better']} is better)" for k, u in record["units"].items()
                      if u["unit"]})
    for path in artifacts + [folder / "metrics.json", folder / "run.json"]:
        tracker.log_artifact(path)


def finish(state: dict, folder: Path, tracker: MLflowTracker, status: str, error: str | None = None) -> None:
    state.update(status=status, error=error, finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
    write_json(folder / "run.json", state)
    if error:
        tracker.set_tags({"error": error})
    tracker.end(status)


def sample_grid(learner, data: ImageData, path: Path, n: int, seed: int, title: str) -> Path:
    """Rows: test images, their reconstructions, then two rows of samples from the prior."""
    g = torch.Generator(device=learner.device).manual_seed(seed)
    x = data.test_x[:n]
    return plots.image_grid([("test images", x), ("reconstructions", learner.reconstruct(x, g)),
                             ("samples", learner.sample(2 * n, g))], path, n, title)


def find_run(results_dir: Path, ref: str) -> Path:
    """A run folder by MLflow run id, folder name, or a unique prefix of either."""
    runs = [f for f in sorted((Path(results_dir) / "runs").glob("*")) if (f / "run.json").exists()]
    exact = [f for f in runs if f.name == ref or read_json(f / "run.json").get("mlflow_run_id") == ref]
    hits = exact or [f for f in runs if f.name.startswith(ref) or
                     str(read_json(f / "run.json").get("mlflow_run_id") or "").startswith(ref)]
    if not hits:
        raise RepbenchError(f"no run '{ref}' under {Path(results_dir) / 'runs'} (give an MLflow run id or a run "
                            f"folder name; `--checkpoint PATH` evaluates any checkpoint)")
    if len(hits) > 1:
        raise RepbenchError(f"run '{ref}' is ambiguous: {', '.join(h.name for h in hits[:5])}")
    return hits[0]


def evaluate_saved(*, run_ref: str | None, checkpoint: Path | None, dataset: str | None, results_dir: Path,
                   battery: dict, device: str = "auto", tracking_uri: str | None = None,
                   data_root: str | None = None, progress: bool = True, grid: int = 0) -> dict:
    """Re-run the battery on a trained learner: a run of ours (results merged into it) or any checkpoint.
    `battery` holds overrides of the learner's preset's battery."""
    from .api import load_learner
    folder = find_run(results_dir, run_ref) if run_ref else None
    state = read_json(folder / "run.json") if folder else {}
    checkpoint = folder / "checkpoint.pt" if folder else Path(checkpoint)
    learner = load_learner(checkpoint, device=resolve_device(device))
    dataset = dataset or state.get("dataset") or "mnist5k"
    data = load_dataset(dataset, data_root).limit(learner.train_config.train_limit, learner.train_config.test_limit)
    battery = battery_for(learner.preset, battery)
    out_folder = folder or checkpoint.parent
    title = f"{display_name(learner.name, learner.options)} on {dataset}"
    measured, artifacts = measure(learner, data, out_folder, battery, seed=learner.seed, progress=progress,
                                  cache_dir=Path(results_dir) / "cache", grid=grid, title=title)
    old = read_json(out_folder / "metrics.json") if folder else {}
    record = {**old, **measured, "metrics": {**old.get("metrics", {}), **measured["metrics"]},
              "units": {**old.get("units", {}), **measured["units"]}, "name": state.get("name", title),
              "dataset": dataset, "history": learner.history}
    tracker = MLflowTracker(tracking_uri or default_tracking_uri(results_dir), "repbench", results_dir)
    if state.get("mlflow_run_id"):
        tracker.attach(state["mlflow_run_id"])
    if folder:
        save_record(out_folder, record, tracker, [a for a in artifacts if a.name != "checkpoint.pt"])
    else:
        write_json(out_folder / "eval-metrics.json", record)
    return {**record, "folder": str(out_folder), "mlflow_run_id": state.get("mlflow_run_id"), "status": "EVALUATED",
            "tracking_error": tracker.error}


"""A run = learner x dataset x preset x seed -> train -> representations -> metrics -> record.

Each run owns a folder under `results/runs/` holding its checkpoint, `run.json` (configuration and status) and
`metrics.json`, so nothing is lost if tracking fails, and `--resume` finds the interrupted run of the same
configuration and continues it (same folder, same MLflow run).
"""
from __future__ import annotations

import hashlib
import json
import math
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .api import create_learner
from .data import ImageData, load_dataset
from .metrics import METRICS, bits_per_dim, cond_entropy, mutual_info
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


def config_key(params: dict, dataset: str) -> str:
    blob = json.dumps({"params": params, "dataset": dataset}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def find_resumable(runs_root: Path, prefix: str) -> Path | None:
    for folder in sorted(runs_root.glob(prefix + "-*"), reverse=True):
        state = read_json(folder / "run.json")
        if state.get("status") != "FINISHED" and (folder / "checkpoint.pt").exists():
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
    data = load_dataset(spec.dataset, spec.data_root, spec.download)
    learner = create_learner(spec.learner, preset=spec.preset, image_shape=data.image_shape, seed=spec.seed,
                             device=device, **spec.options)
    data = data.limit(learner.train_config.train_limit, learner.train_config.test_limit)
    params = learner.params()
    name = f"{display_name(spec.learner, spec.options)}-{spec.dataset}-{spec.preset}-s{spec.seed}"
    prefix = f"{name}-{config_key(params, spec.dataset)}"
    runs_root = Path(spec.results_dir) / "runs"
    folder = find_resumable(runs_root, prefix) if spec.resume else None
    if spec.resume and folder is None:
        raise RepbenchError(f"--resume: no interrupted run of {name} with these options under {runs_root}; "
                            f"start it without --resume")
    folder = folder or runs_root / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder.mkdir(parents=True, exist_ok=True)
    state = read_json(folder / "run.json") or {"name": name, "spec": asdict(spec), "params": params,
                                                "dataset": spec.dataset, "environment": environment()}
    tracker = MLflowTracker(spec.tracking_uri or default_tracking_uri(spec.results_dir), spec.experiment,
                            spec.results_dir)
    tags = {"learner": spec.learner, "display_name": display_name(spec.learner, spec.options),
            "dataset": spec.dataset, "preset": spec.preset, "seed": str(spec.seed), "run_folder": str(folder)}
    state["mlflow_run_id"] = tracker.start(name, {**params, "dataset": spec.dataset, "device": str(device),
                                                  "env": state["environment"]}, tags, state.get("mlflow_run_id"))
    state.update(status="RUNNING", device=str(device))
    write_json(folder / "run.json", state)
    try:
        learner.fit(data.train_x, data.test_x, checkpoint=folder / "checkpoint.pt", resume=spec.resume,
                    progress=spec.progress, on_epoch=lambda r: tracker.log_metrics(
                        {k: v for k, v in r.items() if k != "epoch"}, step=r["epoch"]))
        metrics = evaluate(learner, data, seed=spec.seed)
        artifacts = [folder / "checkpoint.pt"]
        if spec.grid and hasattr(learner, "sample"):
            artifacts.append(image_grid(learner, data, folder / "samples.png", spec.grid, spec.seed))
    except (NonFiniteLoss, RepbenchError) as exc:
        finish(state, folder, tracker, "FAILED", error=str(exc))
        raise
    except KeyboardInterrupt:
        finish(state, folder, tracker, "KILLED", error="interrupted; continue with --resume")
        raise
    record = {"name": name, "learner": spec.learner, "dataset": spec.dataset, "preset": spec.preset,
              "seed": spec.seed, "metrics": metrics, "history": learner.history,
              "units": {k: METRICS.get(k).unit for k in metrics if k in METRICS}}
    write_json(folder / "metrics.json", record)
    tracker.log_metrics(metrics)
    for path in artifacts + [folder / "metrics.json", folder / "run.json"]:
        tracker.log_artifact(path)
    finish(state, folder, tracker, "FINISHED")
    return {**record, "folder": str(folder), "mlflow_run_id": state["mlflow_run_id"], "status": "FINISHED",
            "tracking_error": tracker.error}


def finish(state: dict, folder: Path, tracker: MLflowTracker, status: str, error: str | None = None) -> None:
    state.update(status=status, error=error, finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
    write_json(folder / "run.json", state)
    if error:
        tracker.set_tags({"error": error})
    tracker.end(status)


def evaluate(learner, data: ImageData, seed: int) -> dict[str, float]:
    """Test-set bits/dim (single-sample ELBO), mutual information and conditional entropy (nats)."""
    nll, kl, means, stds = [], [], [], []
    with torch.random.fork_rng(devices=[learner.device] if learner.device.type == "cuda" else []):
        torch.manual_seed(seed + 7)
        learner.module.eval()
        with torch.inference_mode():
            for i in range(0, len(data.test_x), learner.train_config.eval_batch_size):
                x = data.test_x[i:i + learner.train_config.eval_batch_size].to(learner.device)
                t = learner.elbo_terms(x)
                m, s = learner.posterior(x)
                nll.append(t["nll_nats"].cpu()), kl.append(t["kl_nats"].cpu())
                means.append(m.cpu()), stds.append(s.cpu())
    mean, std = torch.cat(means), torch.cat(stds)
    return {"bpd": bits_per_dim(torch.cat(nll), torch.cat(kl), learner.num_dims),
            "mutual_info": mutual_info(mean, std), "cond_entropy": cond_entropy(std)}


def image_grid(learner, data: ImageData, path: Path, n: int, seed: int) -> Path:
    """Rows: test images, their reconstructions, then two rows of samples from the prior."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid
    g = torch.Generator(device=learner.device).manual_seed(seed)
    x = data.test_x[:n]
    rows = [("test images", x), ("reconstructions", learner.reconstruct(x, g)),
            ("samples", learner.sample(2 * n, g))]
    fig, axes = plt.subplots(len(rows), 1, figsize=(n * 0.8, 0.9 * (len(rows) + 1)),
                             gridspec_kw={"height_ratios": [math.ceil(len(r[1]) / n) for r in rows]})
    for ax, (title, imgs) in zip(axes, rows):
        grid = make_grid(imgs.float() / 255, nrow=n, padding=1, pad_value=1.0)
        ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_title(title, fontsize=9, loc="left")
        ax.axis("off")
    fig.suptitle(f"{learner.name} {learner.options or ''} on {data.name}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

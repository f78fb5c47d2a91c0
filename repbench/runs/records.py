"""Run folders and their records: `run.json` (configuration, environment, status) and `metrics.json` (values,
the settings that produced each, figures' data), written atomically so an interruption never leaves half a file.

A run folder is named `<display name>-<dataset>-<preset>-s<seed>-<configuration key>-<time>`; the key hashes
everything that determines the trained weights, so finished and interrupted runs of a configuration are found
by globbing their prefix.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import torch

from .. import __version__
from ..errors import RepbenchError
from ..files import read_json, write_json


def config_key(learner, dataset: str, augment: bool = True) -> str:
    """A hash of everything that determines a run's trained weights: learner, dataset, image shape, preset, seed
    and the resolved settings (`key_settings`), so options spelled differently but resolving alike share a key."""
    from ..data import DATASETS
    blob = {"learner": learner.name, "dataset": dataset, "image_shape": list(learner.image_shape),
            "preset": learner.preset, "seed": learner.seed, "settings": learner.key_settings()}
    if getattr(learner, "model_version", 1) != 1:
        blob["model_version"] = learner.model_version  # only then, so other learners' runs keep their keys
    if not augment and DATASETS.get(dataset).augment is not None:
        blob["augment"] = False  # only then, so runs on data without augmentation keep their keys
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:10]


def run_name(learner, dataset: str) -> str:
    return f"{learner.display_name}-{dataset}-{learner.preset}-s{learner.seed}"


def run_prefix(learner, dataset: str, augment: bool = True) -> str:
    """The run folder prefix of a configuration: readable name and the configuration key."""
    return f"{run_name(learner, dataset)}-{config_key(learner, dataset, augment)}"


def check_results_dir(path: Path) -> Path:
    """The results folder, created if need be; a file in its place or a read-only folder is a one-line error."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RepbenchError(f"--results-dir {path} is a file, not a folder")
    try:
        (path / "runs").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RepbenchError(f"cannot create the results folder {path}: {exc.strerror or exc}") from None
    if not os.access(path / "runs", os.W_OK | os.X_OK):
        raise RepbenchError(f"the results folder {path} is not writable")
    return path


def check_name(name, what: str) -> str:
    """A name that becomes part of a run folder's name: a separator or '..' in it would write outside the
    results folder, a leading '.' would hide the folder."""
    if not isinstance(name, str) or not name or not name.isprintable() or len(name) > 100 or \
            any(bad in name for bad in ("/", "\\", "..")) or name.startswith("."):
        raise RepbenchError(f"{what} {name!r} cannot name a run folder: use up to 100 letters, digits and - _ . "
                            f"(no '/', no '..', no leading '.')")
    return name


def new_run_folder(runs_root: Path, prefix: str) -> Path:
    """Create a fresh run folder atomically: two runs started in the same millisecond still get their own."""
    check_name(prefix, "run folder")
    try:
        runs_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RepbenchError(f"cannot create the runs folder {runs_root}: {exc.strerror or exc}") from None
    now = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now)) + f"{int(now * 1000) % 1000:03d}"
    for n in range(1000):
        folder = runs_root / f"{prefix}-{stamp}{'' if n == 0 else f'-{n}'}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
        except OSError as exc:
            raise RepbenchError(f"cannot create a run folder under {runs_root}: {exc.strerror or exc}") from None
    raise RepbenchError(f"could not create a new run folder for {prefix} under {runs_root}")


def run_folders(runs_root: Path, prefix: str) -> list[Path]:
    """Folders of a configuration, newest first."""
    return sorted(Path(runs_root).glob(prefix + "-*"), reverse=True)


class RunBusy(RepbenchError):
    """The configuration's newest run is still being trained: a second process would repeat its work."""


def resumable(runs_root: Path, prefix: str) -> tuple[Path | None, str]:
    """The newest interrupted run of a configuration (stopped or failed, with a checkpoint), unless a newer run
    finished, or None with what was found instead (for `--resume`'s error). A RUNNING one belongs to a live
    process (`settle_orphans` has run) and is never taken over nor repeated: RunBusy."""
    for folder in run_folders(runs_root, prefix):
        state = read_json(folder / "run.json")
        if state.get("status") == "FINISHED":
            return None, f"its newest run finished ({folder.name}); run it without --resume to reuse or repeat it"
        if state.get("status") == "RUNNING":
            proc = state.get("process") or state.get("environment") or {}
            done = f"; {state['epochs_done']} epochs done, the last at {state.get('epoch_finished_at')}" \
                if state.get("epochs_done") else ""
            raise RunBusy(f"{folder.name} is still running (process {proc.get('pid')} on {proc.get('hostname')}"
                          f"{done}); wait for it or stop it first")
        if (folder / "checkpoint.pt").exists():
            return folder, "resumable"
    return None, "no interrupted run with a checkpoint; start it without --resume"


def settle_orphans(runs_root: Path, prefix: str) -> int:
    """Runs of this configuration left RUNNING by a process of this machine that no longer exists (kill -9, a
    lost session, a reboot) are marked KILLED in run.json, resumable where a checkpoint was written, with their
    MLflow run left for `tracking.reconcile` to bring in line (`mlflow_sync: pending`). Return how many."""
    settled = 0
    for folder in run_folders(runs_root, prefix):
        state = read_json(folder / "run.json")
        proc = state.get("process") or state.get("environment") or {}
        if state.get("status") != "RUNNING" or proc.get("hostname") != platform.node() or _alive(proc):
            continue
        resumable = (folder / "checkpoint.pt").exists()
        state.update(status="KILLED", mlflow_sync="pending", finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"),
                     error="its process ended without closing the run (killed or lost); " +
                           ("`--resume` or the suite continues it from its last checkpoint" if resumable
                                  else "no epoch had finished"))
        write_json(folder / "run.json", state)
        settled += 1
    return settled


def this_process() -> dict[str, str]:
    """Who runs a run: host and pid, and to tell a pid that names another process since (a new boot of the
    machine, or a fresh machine with the same host name, reuses pids) the kernel's boot id and the process's
    start time in clock ticks since boot. A host name is taken to name one machine: a results folder shared by
    two live machines of one name is not supported."""
    return {"hostname": platform.node(), "pid": str(os.getpid()), "boot_id": _boot_id(),
            "pid_start_ticks": _start_ticks(os.getpid())}


def _alive(proc: dict) -> bool:
    """Whether the process a run.json names still runs; unknown counts as alive, so a run is never taken over."""
    try:
        pid = int(proc.get("pid"))
    except (TypeError, ValueError):
        return True  # no pid recorded: cannot tell, so leave it alone
    boot = _boot_id()
    if proc.get("boot_id") and boot and proc["boot_id"] != boot:
        return False  # started before this machine's last boot
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    ticks = _start_ticks(pid)
    return not (proc.get("pid_start_ticks") and ticks and proc["pid_start_ticks"] != ticks)


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _start_ticks(pid: int) -> str:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), '' where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()  # the command name in parentheses may hold spaces
    except (OSError, ValueError):
        return ""
    return fields[19] if len(fields) > 19 else ""


def find_finished(runs_root: Path, prefix: str) -> Path | None:
    return next(iter(finished_folders(runs_root, prefix)), None)


def finished_folders(runs_root: Path, prefix: str) -> list[Path]:
    """The finished runs of a configuration (with a record), newest first."""
    return [folder for folder in run_folders(runs_root, prefix)
            if read_json(folder / "run.json").get("status") == "FINISHED" and (folder / "metrics.json").exists()]


def cpu_features() -> str:
    """The widest SIMD instruction set the CPU offers (training is bit-exact only within one)."""
    try:
        flags = set(" ".join(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                             if line.startswith("flags")).split())
    except OSError:
        return platform.processor() or "unknown"
    for name in ("avx512f", "avx2", "avx", "sse4_2", "asimd"):
        if name in flags:
            return name.replace("avx512f", "avx512")
    return "unknown"


def environment() -> dict[str, str]:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).parent).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    import mlflow
    import numpy
    import sklearn
    return {"git_commit": commit, "repbench": __version__, "torch": torch.__version__,
            "torch_build": f"cpu capability {torch.backends.cpu.get_cpu_capability()}"
                           f"{'; cuda ' + torch.version.cuda if torch.version.cuda else ''}",
            "numpy": numpy.__version__, "sklearn": sklearn.__version__, "mlflow": mlflow.__version__,
            "python": platform.python_version(), "machine": platform.machine(), "cpu_features": cpu_features(),
            "threads": str(torch.get_num_threads()), "malloc": malloc_mode(),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **this_process()}


def malloc_mode() -> str:
    from ..malloc import tune
    return tune()


def find_run(results_dir: Path, ref: str) -> Path:
    """A run folder by MLflow run id, folder name, a unique prefix of either, or its path."""
    if "/" in ref:  # a path, as a shell completes it (no folder name has a slash): a run of this results folder
        folder, runs_root = Path(ref).resolve(), (Path(results_dir) / "runs").resolve()
        if not (folder / "run.json").exists():
            raise RepbenchError(f"{ref} is not a run folder (it has no run.json); runs are under {runs_root}")
        if folder.parent != runs_root:
            raise RepbenchError(f"{ref} is a run of another results folder than {runs_root.parent}: give "
                                f"--results-dir {folder.parent.parent}")
        return folder
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

"""One run's three records: its folder, `run.json` and the MLflow run, kept in agreement however the run ends.

`Recorder.guard()` wraps the work: a user error or a NaN marks the run FAILED with its one-line reason, Ctrl-C
marks it KILLED (resumable), anything unexpected marks it FAILED, keeps the traceback in the folder and becomes
one line for the user.
"""
from __future__ import annotations

import contextlib
import json
import logging
import time
import traceback
from pathlib import Path

from .record import Measured, RunRecord
from .records import environment, run_name, run_prefix, this_process
from ..errors import RepbenchError
from ..files import WriteError, read_json, write_json
from .tracking import MLflowTracker, default_tracking_uri, send_record, sync

# One line per finished epoch of a run. Silent unless a handler is attached: `repbench run` has its own bars,
# and a suite shows these lines above its bar (suite_run.py), where a cell of a medium suite runs for hours.
PROGRESS = logging.getLogger("repbench.progress")


class Recorder:
    def __init__(self, spec, folder: Path, state: dict, tracker: MLflowTracker):
        self.spec, self.folder, self.state, self.tracker = spec, Path(folder), state, tracker
        self._clock = (time.monotonic(), 0)  # (when this process started the run, epochs it has trained since)

    @classmethod
    def open(cls, spec, learner, folder: Path, device, data=None) -> "Recorder":
        """Start (or, resuming, reopen) the records of a run that is about to train in `folder` on `data`."""
        from ..data import DATASETS
        augment = DATASETS.get(spec.dataset).augment if spec.augment else None
        identity = {"name": run_name(learner, spec.dataset), "learner": learner.name,
                    "display_name": learner.display_name, "dataset": spec.dataset, "preset": learner.preset,
                    "seed": learner.seed}
        return cls.start(spec, identity, {**learner.params(), "augment": getattr(augment, "__name__", "none")},
                         folder, device, key=run_prefix(learner, spec.dataset, spec.augment),
                         dataset=data.describe() if data is not None else None)

    @classmethod
    def start(cls, spec, identity: dict, params: dict, folder: Path, device, key: str | None = None,
              dataset: dict | None = None) -> "Recorder":
        """Start the records of a run with this identity (name, learner, display name, dataset, preset, seed).
        `key` (the run folder prefix: name and configuration hash) is tagged `config_key`, so that a tracking
        server alone can tell which runs are of one configuration (cluster.py, a suite's report)."""
        state = read_json(folder / "run.json") or {**identity, "spec": _spec_dict(spec), "params": params,
                                                    "environment": environment()}
        tracker = MLflowTracker(spec.tracking_uri or default_tracking_uri(spec.results_dir), spec.experiment,
                                spec.results_dir)
        tags = {"learner": identity["learner"], "display_name": identity["display_name"],
                "dataset": identity["dataset"], "preset": identity["preset"], "seed": str(identity["seed"]),
                "run_folder": str(folder), **({"config_key": key} if key else {}), **spec.tags}
        battery = {k: v for k, v in _spec_dict(spec)["battery"].items() if k != "eval_batch_size"}
        known = state.get("mlflow_run_id") or spec.mlflow_run_id  # resuming: kept even if the store is away now
        params = {**state["params"], "dataset": identity["dataset"], "device": str(device),
                  "env": state["environment"], "battery": battery}
        state["mlflow_run_id"] = tracker.start(identity["name"], params, tags, known, dataset) or known
        if spec.checkpoint_every and not state["mlflow_run_id"]:  # a cluster cell's record is the server's alone
            raise RepbenchError(f"the tracking server did not take this cell's run ({tracker.error}); nothing was "
                                f"trained")
        state.pop("mlflow_start", None)
        if not state["mlflow_run_id"]:  # the store was away: `tracking.sync` starts the run once it answers
            state["mlflow_start"] = {"experiment": spec.experiment, "run_name": identity["name"], "params": params,
                                     "tags": tags, "dataset": dataset}
        # the process that runs it now (a resumed run's `environment` is its first start's): see settle_orphans
        state.update(status="RUNNING", device=str(device), error=None, process=this_process())
        rec = cls(spec, folder, state, tracker)
        rec.write_state()
        return rec

    @classmethod
    def attach(cls, spec, folder: Path) -> "Recorder":
        """The records of an existing run, to add values to it without changing how it ended."""
        state = read_json(folder / "run.json")
        if not state.get("params"):
            raise RepbenchError(f"{folder / 'run.json'} is missing or unreadable; the run cannot be reused")
        tracker = MLflowTracker(spec.tracking_uri or default_tracking_uri(spec.results_dir), spec.experiment,
                                spec.results_dir)
        if state.get("mlflow_run_id"):
            tracker.attach(state["mlflow_run_id"])
        return cls(spec, folder, state, tracker)

    def identity(self) -> dict:
        return {k: self.state.get(k) for k in ("name", "learner", "display_name", "dataset", "preset", "seed")}

    def stored(self, history: list | None = None) -> RunRecord:
        """The run's metrics.json. An unreadable one (cut short, edited by hand) counts as this run's record with
        nothing measured and the training `history` given (the checkpoint's), so that measuring again repairs it
        whole; read as {} it would lose the run's name and training curves."""
        record = read_json(self.folder / "metrics.json")
        if isinstance(record.get("metrics"), dict):
            return RunRecord.from_json(record)
        return RunRecord.new(self.identity(), Measured(metrics={}), history)

    def write_state(self) -> None:
        write_json(self.folder / "run.json", self.state)

    def note_labelled(self, indices, seed: int) -> None:
        """Record which training images' labels a semi-supervised run used (count, seed, hash; the list beside)."""
        import hashlib
        listed = [int(i) for i in indices]
        self.state["labelled"] = {"n": len(listed), "seed": seed, "file": "labelled.json",
                                  "sha256": hashlib.sha256(json.dumps(listed).encode()).hexdigest()[:16]}
        write_json(self.folder / "labelled.json", listed)
        self.write_state()
        self.tracker.set_tags({"labelled_n": len(listed), "labelled_sha256": self.state["labelled"]["sha256"]})

    def log_epoch(self, record: dict) -> None:
        self.tracker.log_metrics({k: v for k, v in record.items() if k != "epoch"}, step=record["epoch"])
        if record["epoch"] <= (self.state.get("epochs_done") or 0):  # a resume's last restored epoch, sent again
            return
        self.note_epoch(record)
        if self.spec.checkpoint_every and record["epoch"] % self.spec.checkpoint_every == 0:
            self.upload_checkpoint()

    def note_epoch(self, record: dict) -> None:
        """How far the run is, in run.json and as a progress line with the pace of this process's epochs."""
        epoch, (start, trained) = record["epoch"], self._clock
        self._clock = (start, trained + 1)
        self.state.update(epochs_done=epoch, epoch_finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
        self.write_state()
        total = (self.state.get("params") or {}).get("train_config", {}).get("epochs")
        minutes = (time.monotonic() - start) / 60 / (trained + 1)
        values = ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k != "epoch" and isinstance(v, float))
        left = f", {_duration(minutes * (total - epoch))} left" if total and total > epoch else ""
        pace = f"{minutes * 60:.0f} s" if minutes < 1 else f"{minutes:.1f} min"
        PROGRESS.info(f"{self.state.get('name')}: epoch {epoch}{f'/{total}' if total else ''}, {values} "
                      f"({pace}/epoch{left})")

    def upload_checkpoint(self) -> None:
        """Send the last finished epoch's checkpoint to the tracking server: a cluster cell's folder is scratch,
        and a retry on another node resumes from what the server holds."""
        self.tracker.log_artifact(self.folder / "checkpoint.pt", link=True)

    def save(self, measured: Measured, artifacts: list[Path], history: list | None = None,
             into: RunRecord | None = None) -> RunRecord:
        """The run's record, built here alone: `measured` merged into the record it completes (`into`), or a new
        record of this run; written to metrics.json and sent to MLflow with `artifacts`."""
        record = into.merge(measured) if into is not None else RunRecord.new(self.identity(), measured, history)
        write_json(self.folder / "metrics.json", record.to_json())
        send_record(self.tracker, self.folder, record.to_json(), artifacts)
        return record

    def add_tags(self, tags: dict) -> None:
        if tags:
            self.tracker.set_tags(tags)

    def finish(self, status: str, error: str | None = None) -> None:
        """The run's end, in run.json and in MLflow; if MLflow cannot take it now, run.json says so
        (`mlflow_sync: pending`) and a later command brings MLflow in line."""
        self.state.update(status=status, error=error, finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"),
                          tracking_uri=self.tracker.uri)
        if error:
            self.tracker.set_tags({"error": error})
        # "done" only for a run the store has whole: one it never started (the store away or broken) is pending too
        self.state["mlflow_sync"] = "done" if self.tracker.end(status) and self.state.get("mlflow_run_id") \
            else "pending"
        self.write_state()
        if self.state["mlflow_sync"] == "pending" and sync(self.folder / "run.json", self.tracker.uri):
            self.state = read_json(self.folder / "run.json")  # the store came back: it has the whole record now

    @contextlib.contextmanager
    def guard(self, keep_status: bool = False):
        """Record how the work in the block ends. With `keep_status` (adding metrics to a finished run) a
        failure leaves the run's status and its earlier values as they were."""
        try:
            yield
        except RepbenchError as exc:
            self._end("FAILED", str(exc), keep_status, free_space=isinstance(exc, WriteError))
            raise
        except KeyboardInterrupt:
            if self.spec.checkpoint_every and not keep_status:  # a cancelled cluster cell resumes from here
                self.upload_checkpoint()
            kept = "the last finished epoch's checkpoint is kept" if (self.folder / "checkpoint.pt").exists() \
                else "no epoch had finished, so there is nothing to resume"
            self._end("KILLED", f"interrupted; {kept}", keep_status)
            raise
        except OSError as exc:  # a full disk or a read-only folder met outside our own writers (a figure, ...)
            message = f"cannot write in {self.folder}: {exc.strerror or exc}; free space and continue"
            self._end("FAILED", message, keep_status, free_space=True)
            raise RepbenchError(message) from None
        except Exception as exc:  # a bug or a library failure: one line for the user, the traceback on disk
            with contextlib.suppress(OSError):
                (self.folder / "traceback.txt").write_text(traceback.format_exc())
            first = (str(exc).splitlines() or [""])[0][:160]
            message = (f"{self.state.get('name', self.folder.name)} failed unexpectedly ({type(exc).__name__}: "
                       f"{first}); the traceback is in {self.folder / 'traceback.txt'}; the last finished "
                       f"epoch's checkpoint is kept")
            self._end("FAILED", message, keep_status)
            raise RepbenchError(message) from exc

    def _end(self, status: str, error: str, keep_status: bool, free_space: bool = False) -> None:
        if free_space:  # half-written temporary files are what fills a disk; the last good files stay
            for tmp in self.folder.glob("*.tmp"):
                tmp.unlink(missing_ok=True)
        if keep_status:
            return
        try:
            self.finish(status, error=error)
        except RepbenchError as exc:
            raise RepbenchError(f"{error}; and the run's record could not be updated ({exc})") from None

    def result(self, record: RunRecord, status: str, **extra) -> dict:
        """What a run returns: its record with where it lies and how it ended."""
        return {**record.to_json(), "folder": str(self.folder), "mlflow_run_id": self.state.get("mlflow_run_id"),
                "status": status, "tracking_error": self.tracker.error, **extra}

    def finished(self, record: RunRecord) -> dict:
        self.finish("FINISHED")
        return self.result(record, "FINISHED")


def _spec_dict(spec) -> dict:
    from dataclasses import asdict
    return asdict(spec)


def _duration(minutes: float) -> str:
    return "under a minute" if minutes < 1 else f"about {minutes:.0f} min" if minutes < 90 else \
        f"about {minutes / 60:.1f} h"

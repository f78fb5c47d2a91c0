"""Run tracking behind a small interface; MLflow is imported only when a run starts.

Default store: a SQLite file under the results folder, with artifacts beside it. `MLFLOW_TRACKING_URI` or an
explicit URI points it at a real MLflow server instead. Tracking failures warn and never stop a run: the runner
writes its own JSON files whatever happens here.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")


def default_tracking_uri(results_dir: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(Path(results_dir) / 'mlflow.db').resolve()}"


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


class MLflowTracker:
    """One MLflow run. Every call is guarded: the first failure warns once and turns tracking off."""

    def __init__(self, tracking_uri: str, experiment: str, results_dir: Path):
        self.uri, self.experiment, self.results_dir = tracking_uri, experiment, Path(results_dir)
        self.run_id: str | None = None
        self.client = None
        self.error: str | None = None

    def _guard(self, what: str, fn, *args, **kw):
        if self.error is not None:
            return None
        try:
            return fn(*args, **kw)
        except Exception as exc:  # MLflow, SQL and HTTP errors all end up here
            self.error = f"{what}: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            warnings.warn(f"MLflow tracking at {self.uri} failed ({self.error}); results are still written to "
                          f"the run folder", RuntimeWarning, stacklevel=3)
            return None

    def start(self, run_name: str, params: dict, tags: dict, run_id: str | None = None) -> str | None:
        return self._guard("start", self._start, run_name, params, tags, run_id)

    def prepare(self) -> None:
        """Create the store and the experiment now (before several processes share them)."""
        self._guard("prepare", self._experiment_id)

    def _connect(self):
        import logging
        for noisy in ("alembic", "mlflow.store.db.utils"):  # the SQLite store's migrations chatter at INFO
            logging.getLogger(noisy).setLevel(logging.WARNING)
        from mlflow.tracking import MlflowClient
        if self.client is None:
            self.client = MlflowClient(tracking_uri=self.uri)
        return self.client

    def _experiment_id(self) -> str:
        client = self._connect()
        exp = client.get_experiment_by_name(self.experiment)
        if exp is not None:
            return exp.experiment_id
        local = self.uri.startswith("sqlite:") or self.uri.startswith("file:")
        location = (self.results_dir / "mlartifacts").resolve().as_uri() if local else None
        return client.create_experiment(self.experiment, artifact_location=location)

    def _start(self, run_name, params, tags, run_id):
        from mlflow.entities import Param, RunTag
        self._connect()
        if run_id is not None:  # resuming: reopen the same run
            self.client.update_run(run_id, status="RUNNING")
            self.run_id = run_id
            return run_id
        run = self.client.create_run(self._experiment_id(), run_name=run_name, tags=tags)
        self.run_id = run.info.run_id
        flat = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
        for i in range(0, len(flat), 100):
            self.client.log_batch(self.run_id, params=flat[i:i + 100])
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
        return self.run_id

    def attach(self, run_id: str) -> None:
        """Log into an existing run (finished or not) without changing its status."""
        def connect():
            from mlflow.tracking import MlflowClient
            self.client = MlflowClient(tracking_uri=self.uri)
            self.client.get_run(run_id)
            self.run_id = run_id
        self._guard("attach", connect)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        def log():
            import time
            from mlflow.entities import Metric
            now = int(time.time() * 1000)
            self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step or 0)
                                                        for k, v in metrics.items()])
        if self.run_id is not None:
            self._guard("log_metrics", log)

    def set_tags(self, tags: dict[str, Any]) -> None:
        if self.run_id is not None:
            for k, v in tags.items():
                self._guard("set_tag", self.client.set_tag, self.run_id, k, str(v))

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        if self.run_id is not None and Path(path).exists():
            self._guard("log_artifact", self.client.log_artifact, self.run_id, str(path), folder)

    def end(self, status: str) -> None:
        assert status in RUN_STATUSES
        if self.run_id is not None:
            self._guard("end", self.client.set_terminated, self.run_id, status)

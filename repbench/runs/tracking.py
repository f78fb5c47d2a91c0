"""Run tracking behind a small interface; MLflow is imported only when a run starts.

Default store: a SQLite file under the results folder, with artifacts beside it. `MLFLOW_TRACKING_URI` or an
explicit URI points it at a real MLflow server instead. Tracking failures warn and never stop a run: the runner
writes its own JSON files whatever happens here. A server is asked once, briefly, whether it answers before a run
starts (MLflow's own client would retry for minutes), and HTTP calls retry little, so a lost server costs seconds.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any

from ..errors import first_line
from ..files import write_json

RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")
# MLflow's defaults retry a failing HTTP call for minutes; a tracking outage should cost a run seconds.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
# Who ran a run and when (`env.*`): they differ from run to run and configure nothing, so they are tags; as
# parameters they filled the compare view's plots, which pick the parameters that differ.
PROCESS_KEYS = ("hostname", "pid", "boot_id", "pid_start_ticks", "started_at")


def experiment_tags() -> dict[str, str]:
    """Tags of every repbench experiment: MLflow 3 opens a model-development experiment on its runs list (not
    its GenAI traces view), and each metric's unit and direction, from the metric registry, once per experiment."""
    from ..metrics import METRICS
    units = {f"repbench.unit.{name}": f"{m.unit} ({m.direction} is better)" if m.direction != "neither" else
             f"{m.unit} (no better direction)" for name, m in METRICS.in_order()}
    return {"mlflow.experimentKind": "custom_model_development", **units}


def connect(uri: str):
    """An MLflow client of its own for `uri` (the process-wide tracking URI is left alone), with short HTTP
    retries and the SQLite store's migration chatter silenced. A SQLite store is created under a lock."""
    import logging
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per fetched file is noise
    for noisy in ("alembic", "mlflow.store.db.utils"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from mlflow.tracking import MlflowClient
    if uri.startswith("sqlite:///") and uri not in _READY:
        client = create_store(lambda: MlflowClient(tracking_uri=uri), Path(uri[len("sqlite:///"):]))
        _READY.add(uri)
        return client
    return MlflowClient(tracking_uri=uri)


_READY: set[str] = set()  # SQLite stores this process has seen created


def create_store(make_client, db: Path):
    """The client of a SQLite store, made under a lock beside the store: making a client builds the store, which
    creates or migrates its tables, and two runs started together on a fresh results folder would both migrate
    ("table _alembic_tmp_tags already exists"), leave one run untracked and, at worst, the store broken for
    every later run."""
    from filelock import FileLock, Timeout
    try:
        with FileLock(str(db) + ".lock", timeout=300):
            client = make_client()
            client._tracking_client.store  # noqa: B018 -- built here, under the lock, whatever MLflow's version
            return client
    except Timeout:
        raise OSError(f"the store {db} stayed locked by another process for 5 minutes") from None


SCHEMES = ("file", "sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks")
EXPERIMENT_CHARS = 256  # MLflow's SQL stores keep an experiment's name in 256 characters


def check_tracking(uri: str | None, experiment: str | None = None) -> None:
    """A tracking URI MLflow can use and an experiment name it can store, checked before any work (MLflow
    would fail only when the run starts, and the run would go on untracked)."""
    from urllib.parse import urlparse
    from ..errors import RepbenchError
    if uri is not None:
        scheme = urlparse(uri).scheme.split("+")[0]
        if not uri.strip() or (scheme and scheme not in SCHEMES):
            raise RepbenchError(f"tracking URI '{uri}': MLflow cannot use {f'the scheme {scheme}:' if scheme else 'it'}"
                                f"; use http(s)://HOST:PORT, sqlite:///FILE.db, file:///FOLDER or a database URI "
                                f"(postgresql://, mysql://, mssql://)")
    if experiment is not None and not experiment.strip():
        raise RepbenchError("the experiment name is empty; give a name (default: repbench)")
    if experiment is not None and len(experiment) > EXPERIMENT_CHARS:
        raise RepbenchError(f"the experiment name has {len(experiment)} characters; MLflow keeps at most "
                            f"{EXPERIMENT_CHARS}")


def interrupt_on_sigterm() -> None:
    """From now on SIGTERM (kill, `timeout`, a scheduler) raises KeyboardInterrupt as Ctrl-C does, so a run's
    records end KILLED and resumable. Main thread only, as every signal handler."""
    signal.signal(signal.SIGTERM, _raise_interrupt)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def deferred_interrupt():
    """Hold a Ctrl-C until the block ends: a store interrupted mid-write could be left with a broken cursor
    or a half-written row. As soon as the call returns, the held signal goes to the handler it was meant for
    (a suite's worker notes there that the suite is stopping, so it starts no queued cell)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda *args: caught.append(args))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)
        if caught and callable(previous):
            previous(*caught[0])
        elif caught and previous != signal.SIG_IGN:
            raise KeyboardInterrupt


def is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def unreachable(uri: str, attempts: int = 2, timeout_s: float = 10.0) -> str | None:
    """Why an MLflow server does not answer its health check, or None when it does (local stores always do).
    A refused connection is known at once; the timeout allows a busy server (one worker taking an upload)."""
    if not is_remote(uri):
        return None
    reason = ""
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as response:
                if response.status == 200:
                    return None
                reason = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            reason = f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:
            reason = str(getattr(exc, "reason", exc)) or type(exc).__name__
        if attempt + 1 < attempts:
            time.sleep(1.0)
    return f"no MLflow server answers at {uri} ({reason})"


def default_tracking_uri(results_dir: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(Path(results_dir) / 'mlflow.db').resolve()}"


def plain(value: Any) -> str:
    """A parameter's value as MLflow shows it: a list or tuple as a JSON list (`[100, 600]`, not Python's
    `(100, 600)`), anything else as its text (`True` and `None` as before, so older runs still compare equal)."""
    return json.dumps(list(value), default=str) if isinstance(value, (list, tuple)) else str(value)


def source_tags(commit: str | None) -> dict[str, str]:
    """MLflow's own tags for where a run came from, which its runs list shows (Source, Version, User)."""
    import getpass
    tags = {"mlflow.source.type": "LOCAL", "mlflow.source.name": "repbench"}
    if commit and commit != "unknown":
        tags["mlflow.source.git.commit"] = commit
    try:
        tags["mlflow.user"] = getpass.getuser()
    except (KeyError, OSError):  # a container user without a name
        pass
    return tags


def dataset_input(dataset: dict):
    """A run's data as an MLflow dataset input (the runs list's Dataset column): its name, a digest of the
    images and labels it used, and their sizes; `dataset` is {name, digest, profile}."""
    from mlflow.entities import Dataset, DatasetInput, InputTag
    return DatasetInput(Dataset(name=dataset["name"], digest=dataset["digest"], source_type="repbench",
                                source=json.dumps({"dataset": dataset["name"]}),
                                profile=json.dumps(dataset.get("profile", {}))),
                        tags=[InputTag("mlflow.data.context", "training")])


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
    """One MLflow run. Every call is guarded: the first failure warns once and records `error` (the store missed
    something, so the run is left to `sync`); calls are then skipped for `retry_s` seconds and tried again, so a
    server back from a restart gets the later epochs and checkpoints of a long run."""

    def __init__(self, tracking_uri: str, experiment: str, results_dir: Path, retry_s: float = 60.0):
        self.uri, self.experiment, self.results_dir = tracking_uri, experiment, Path(results_dir)
        self.run_id: str | None = None
        self.client = None
        self.error: str | None = None
        self.retry_s = retry_s
        self._quiet_until = 0.0  # time.monotonic() before which calls are skipped
        self._away = False       # the last call failed: ask the server's health before the next

    def _guard(self, what: str, fn, *args, **kw):
        if time.monotonic() < self._quiet_until:
            return None
        if self._away and unreachable(self.uri, attempts=1):
            self._quiet_until = time.monotonic() + self.retry_s  # still away: no minutes lost in client retries
            return None
        try:
            with deferred_interrupt():
                result = fn(*args, **kw)
            self._away = False
            return result
        except Exception as exc:  # MLflow, SQL and HTTP errors all end up here
            self._fail(what, f"{type(exc).__name__}: {first_line(exc)}")
            return None

    def _fail(self, what: str, why: str) -> None:
        self._quiet_until, self._away = time.monotonic() + self.retry_s, True
        if self.error is None:
            self.error = f"{what}: {why}"
            warnings.warn(f"MLflow tracking at {self.uri} failed ({self.error}); results are still written to "
                          f"the run folder, and the MLflow run is brought in line when the store answers again",
                          RuntimeWarning, stacklevel=4)

    def start(self, run_name: str, params: dict, tags: dict, run_id: str | None = None,
              dataset: dict | None = None) -> str | None:
        """Create the run (or reopen `run_id`); `dataset` ({name, digest, profile}) becomes its dataset input."""
        problem = unreachable(self.uri)
        if problem:
            self._fail("start", problem)
            return None
        return self._guard("start", self._start, run_name, params, tags, run_id, dataset)

    def prepare(self) -> None:
        """Create the store and the experiment now (before several processes share them)."""
        self._guard("prepare", self._experiment_id)

    def _connect(self):
        if self.client is None:
            self.client = connect(self.uri)
        return self.client

    def _experiment_id(self) -> str:
        client = self._connect()
        exp = client.get_experiment_by_name(self.experiment)
        if exp is None:
            local = self.uri.startswith("sqlite:") or self.uri.startswith("file:")
            location = (self.results_dir / "mlartifacts").resolve().as_uri() if local else None
            exp = client.get_experiment(client.create_experiment(self.experiment, artifact_location=location))
        for key, value in experiment_tags().items():
            if exp.tags.get(key) != value:
                client.set_experiment_tag(exp.experiment_id, key, value)
        return exp.experiment_id

    def _start(self, run_name, params, tags, run_id, dataset=None):
        from mlflow.entities import Param, RunTag
        self._connect()
        if run_id is not None:  # resuming: reopen the same run, with this start's tags (its folder, its node)
            self.client.update_run(run_id, status="RUNNING")
            self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
            if "error" in self.client.get_run(run_id).data.tags:  # how the last session ended; run.json drops it too
                self.client.delete_tag(run_id, "error")
            self.run_id = run_id
            return run_id
        flat = flatten(params)
        process = {k: v for k, v in flat.items() if k.startswith("env.") and k[4:] in PROCESS_KEYS}
        tags = {k: str(v) for k, v in {**source_tags(flat.get("env.git_commit")), **process, **tags}.items()}
        run = self.client.create_run(self._experiment_id(), run_name=run_name, tags=tags)
        self.run_id = run.info.run_id
        kept = [Param(k, plain(v)[:6000]) for k, v in flat.items() if k not in process]
        for i in range(0, len(kept), 100):
            self.client.log_batch(self.run_id, params=kept[i:i + 100])
        if dataset is not None:
            self._log_dataset(dataset)
        return self.run_id

    def _log_dataset(self, dataset: dict) -> None:
        # Two runs that log the same new dataset at once both try to insert it, and the store refuses the second
        # (a unique constraint; cells of a suite start together). Its transaction is undone, and on a second try
        # the dataset is there to link to.
        for attempt in range(3):
            try:
                self.client.log_inputs(self.run_id, datasets=[dataset_input(dataset)])
                return
            except Exception:  # noqa: BLE001 - the last attempt's error is the start's
                if attempt == 2:
                    raise
                time.sleep(0.5 * (attempt + 1))

    def attach(self, run_id: str) -> None:
        """Log into an existing run (finished or not) without changing its status."""
        def attach():
            self.client = connect(self.uri)
            self.client.get_run(run_id)
            self.run_id = run_id
        if unreachable(self.uri):
            self._fail("attach", unreachable(self.uri))
            return
        self._guard("attach", attach)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        def log():
            import time
            from mlflow.entities import Metric
            now = int(time.time() * 1000)
            self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step or 0)
                                                        for k, v in metrics.items()])
        if self.run_id is not None:
            self._guard("log_metrics", log)

    def log_missing_epochs(self, history: list[dict]) -> None:
        """Log the epochs of a run's curves that the store lacks (it was away or restarted while they ran)."""
        def log():
            from mlflow.entities import Metric
            now, missing = int(time.time() * 1000), []
            for name in sorted({k for step in history for k in step if k != "epoch"}):
                have = {m.step for m in self.client.get_metric_history(self.run_id, name)}
                missing += [Metric(name, float(step[name]), now, step["epoch"]) for step in history
                            if isinstance(step.get(name), (int, float)) and step["epoch"] not in have]
            for i in range(0, len(missing), 500):
                self.client.log_batch(self.run_id, metrics=missing[i:i + 500])
        if self.run_id is not None and history:
            self._guard("log_missing_epochs", log)

    def set_tags(self, tags: dict[str, Any]) -> None:
        if self.run_id is not None:
            for k, v in tags.items():
                self._guard("set_tag", self.client.set_tag, self.run_id, k, str(v))

    def log_artifact(self, path: Path, folder: str | None = None, link: bool = False) -> None:
        """Log a file; with `link`, a store whose artifacts are local files gets a hard link to it instead of a
        second copy (a checkpoint is tens of MB), and a remote store gets the upload."""
        if self.run_id is None or not Path(path).exists():
            return
        if link and self._guard("link_artifact", self._link, Path(path), folder):
            return
        self._guard("log_artifact", self.client.log_artifact, self.run_id, str(path), folder)

    def _link(self, path: Path, folder: str | None) -> bool:
        from urllib.parse import unquote, urlparse
        uri = self.client.get_run(self.run_id).info.artifact_uri
        if not uri.startswith("file:") and not uri.startswith("/"):
            return False
        target = Path(unquote(urlparse(uri).path) if uri.startswith("file:") else uri) / (folder or "") / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        try:
            os.link(path, target)
        except OSError:  # another file system: a copy after all
            return False
        return True

    def end(self, status: str) -> bool:
        """Close the run with `status`; True when the store now holds the whole run. False after any earlier
        failure: what the store missed is not known, so the run is left to `sync` (the whole record again)."""
        assert status in RUN_STATUSES
        if self.run_id is None or self.error is not None:
            return self.error is None
        self._guard("end", self.client.set_terminated, self.run_id, status)
        return self.error is None


def send_record(tracker: MLflowTracker, folder: Path, record: dict, artifacts: list[Path]) -> None:
    """A run's final record as MLflow holds it: metric values, which metrics do not apply and which probes did not
    converge, the settings each was measured with, and the files (checkpoints linked where the store allows,
    metrics.json and run.json last)."""
    from .record import unconverged
    tracker.log_metrics({k: v for k, v in record["metrics"].items() if v is not None})
    tracker.set_tags({"not_applicable": ",".join(k for k, v in record["metrics"].items() if v is None),
                      "unconverged": ",".join(sorted(unconverged(record))),
                      **{f"measured_with.{m}": json.dumps(s, sort_keys=True)
                         for m, s in record.get("measured_with", {}).items()}})
    for path in artifacts + [Path(folder) / "metrics.json", Path(folder) / "run.json"]:
        tracker.log_artifact(path, link=path.suffix == ".pt")


def reconcile(results_dir: Path, uri: str) -> int:
    """Bring MLflow runs that fell behind their run folders (`mlflow_sync: pending`: a lost server, a full disk)
    in line; return how many were fixed. A store still unwell is left for a later call, quietly (one health
    check for all the runs, as a hung server costs its whole timeout)."""
    waiting = [p for p in sorted(Path(results_dir).glob("runs/*/run.json")) if _waits_on(_state(p), uri)]
    if not waiting or unreachable(uri, attempts=1):
        return 0
    return sum(sync(path, uri) for path in waiting)


def _waits_on(state: dict, uri: str) -> bool:
    """Whether a run's MLflow run at `uri` fell behind its folder (or was never started there)."""
    return state.get("mlflow_sync") == "pending" and state.get("tracking_uri", uri) == uri and \
        bool(state.get("mlflow_run_id") or state.get("mlflow_start"))


def _state(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def sync(path: Path, uri: str) -> bool:
    """Bring one pending run in line with its folder: a FINISHED run's record is sent again (what the store
    missed is not known) and the final status set; True when this call fixed it."""
    state = _state(path)
    if not _waits_on(state, uri) or not _bring_in_line(uri, path.parent, state):
        return False
    state["mlflow_sync"] = "done"
    state.pop("mlflow_start", None)
    write_json(path, state)
    return True


def _bring_in_line(uri: str, folder: Path, state: dict) -> bool:
    if unreachable(uri, attempts=1):
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = state.get("mlflow_start")
        tracker = MLflowTracker(uri, start["experiment"] if start else "", folder.parent.parent)
        if state.get("mlflow_run_id"):
            tracker.attach(state["mlflow_run_id"])
        elif not tracker.start(start["run_name"], start["params"], start["tags"], None, start.get("dataset")):
            return False
        state["mlflow_run_id"] = tracker.run_id  # a run the store never had is started now, then sent whole
        metrics = folder / "metrics.json"
        if state["status"] == "FINISHED" and metrics.exists():
            files = [p for p in [folder / "checkpoint.pt"] if p.exists()] + sorted(folder.glob("*.png"))
            record = json.loads(metrics.read_text())
            tracker.log_missing_epochs(record.get("history") or [])
            send_record(tracker, folder, record, files)
        if state.get("error"):
            tracker.set_tags({"error": state["error"]})
        return tracker.error is None and tracker.end(state["status"])


# ------------------------------------------------------------------------------------------ the shared record
def cell_runs(client, experiment: str, key: str, status: str | None = None) -> list:
    """The runs of one configuration (tag `config_key`, the run folder prefix) in an experiment, newest first,
    optionally only those with `status`; none where the experiment does not exist."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None or "'" in key:
        return []
    where = f"tags.config_key = '{key}'" + (f" and attributes.status = '{status}'" if status else "")
    return client.search_runs([exp.experiment_id], filter_string=where, order_by=["attributes.start_time DESC"],
                              max_results=1000)


def download(client, run_id: str, names: tuple[str, ...], folder: Path) -> list[str]:
    """Fetch top-level artifacts of a run into `folder` (through the server); return the names it had."""
    have = {a.path for a in client.list_artifacts(run_id)}
    folder.mkdir(parents=True, exist_ok=True)
    got = [n for n in names if n in have]
    for name in got:
        client.download_artifacts(run_id, name, str(folder))
    return got

"""Suites on a Ray cluster, with an MLflow tracking server as the shared record (`repbench suite FILE --ray ADDR`).

The head submits each cell as a Ray task with the resources it asks for; the task runs exactly what a local cell
runs (`cell.run_cell` on `cell.cell_spec`'s RunSpec), on the device Ray gave it. Workers share no disk with the
head, so the server is the source of truth and a task's results folder is scratch on its node:

- before training, the task looks the cell up in the server by its configuration key (tag `config_key`: the run
  folder prefix that decides reuse on one machine). A FINISHED run is reused: its record is fetched and only the
  metrics it lacks, or measured with other settings, are measured (from its checkpoint). An unfinished run is
  continued in the same MLflow run, from its last uploaded checkpoint if it has one.
- while training, the checkpoint goes to the server every N epochs (RunSpec.checkpoint_every), so Ray's retry of
  a task whose node died resumes where the last upload left it: one FINISHED run per cell in the end.
- Ctrl-C on the head cancels the tasks; each uploads its last checkpoint and marks its run KILLED (resumable).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import RepbenchError, first_line

INSTALL = "pip install 'repbench[ray]'"
CHECKPOINT_EVERY = {"paper": 10}  # epochs between uploads; 1 for other presets (a paper checkpoint is large)
RETRIES = 3  # Ray's retries of a cell whose node or worker process died
CANCEL_WAIT_S = 60  # after Ctrl-C, how long the head waits for cancelled cells to record that they were stopped
SYNC_WAIT_S, SYNC_PAUSE_S = 120, 5  # how long a cell tries to send the record a slow or lost server missed
LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
PROXIED = ("mlflow-artifacts:", "s3:", "gs:", "wasbs:", "abfss:", "hdfs:", "http:", "https:")


@dataclass(frozen=True)
class RayOptions:
    address: str                          # as Ray takes it: auto, HOST:PORT, ray://HOST:10001
    cpus_per_cell: float | None = None    # None: the suite file's `ray:` key, else 1
    gpus_per_cell: float | None = None    # None: the suite file's, else 1 where the cluster has GPUs, else 0
    checkpoint_every: int | None = None   # None: the suite file's, else by preset (CHECKPOINT_EVERY)


# ------------------------------------------------------------------------------------------ on the head
@dataclass(frozen=True)
class Session:
    """A connected cluster and what each cell asks of it; made before any cell starts, so that a wrong address,
    store or resource request is one line and no work."""
    ray: object
    cpus: float
    gpus: float
    checkpoint_every: int | None
    tracking_uri: str


def connect(options: RayOptions, suite, tracking_uri: str | None, experiment: str) -> Session:
    ray = import_ray(options.address)
    check_store(tracking_uri, experiment)
    problem = no_cluster_at(options.address)
    if problem:
        raise RepbenchError(problem)
    try:
        ray.init(address=options.address, logging_level="ERROR", log_to_driver=False)
    except Exception as exc:  # an address with no cluster, a Ray Client without its extra, ...
        raise RepbenchError(f"cannot connect to the Ray cluster at {options.address}: {first_line(exc, 300)}") from None
    cpus, gpus = resources(ray, options, suite.ray)
    return Session(ray, cpus, gpus, options.checkpoint_every or suite.ray.get("checkpoint_every"), tracking_uri)


def run_on_ray(session: Session, items, done) -> None:
    """Run the (cell, spec) pairs as Ray tasks; call `done(i, outcome)` as each ends, in the order they end."""
    ray = session.ray
    try:
        task = ray.remote(run_remote).options(num_cpus=session.cpus, num_gpus=session.gpus, max_retries=RETRIES,
                                              retry_exceptions=False)
        refs = {task.remote(cell, replace(spec, tracking_uri=session.tracking_uri, checkpoint_every=(
            session.checkpoint_every or CHECKPOINT_EVERY.get(cell.preset, 1)))): i
            for i, (cell, spec) in enumerate(items)}
        wait_all(ray, refs, items, done)
    finally:
        ray.shutdown()


def import_ray(address: str = "auto"):
    if address.split("://")[-1].rsplit(":", 1)[0] in LOOPBACK:
        # Ray swaps a loopback address for this machine's network address before connecting, so a cluster that
        # listens on 127.0.0.1 only (one started for a test, or kept off the network) would never answer;
        # this setting, read when Ray is imported, makes Ray keep the loopback address.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise RepbenchError(f"--ray needs Ray, which is not installed here: {INSTALL}") from None
    return ray


def no_cluster_at(address: str) -> str | None:
    """Why nothing can answer at a HOST:PORT or ray://HOST:PORT address, or None. Ray itself retries an address
    with no cluster for many minutes, printing a warning every few seconds; a refused connection is known at once."""
    import socket
    host, sep, port = address.split("://")[-1].rpartition(":")
    if not sep or not port.isdigit():
        return None  # auto, or a form Ray resolves itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        return f"no Ray cluster answers at {address} ({exc.strerror or exc}); start one with `ray start --head` " \
               f"or pass the address it printed"
    return None


def check_store(uri: str | None, experiment: str) -> None:
    """The shared record must be a tracking server every node reaches: a SQLite file or a folder on the head is
    invisible to the workers. The experiment is created here, once, rather than raced by the first cells."""
    from ..runs import MLflowTracker, connect, is_remote, unreachable
    if not uri or not is_remote(uri):
        raise RepbenchError(f"--ray needs an MLflow tracking server as the shared record (the cluster's nodes do not "
                            f"share this disk), not {uri or 'a local store'}: start `mlflow server --host 0.0.0.0 "
                            f"--artifacts-destination DIR` and pass --tracking-uri http://HOST:5000")
    problem = unreachable(uri)
    if problem:
        raise RepbenchError(f"{problem}; --ray needs it as the shared record")
    tracker = MLflowTracker(uri, experiment, Path("."))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tracker.prepare()
    if tracker.error:
        raise RepbenchError(f"cannot prepare the experiment '{experiment}' at {uri} ({tracker.error})")
    location = connect(uri).get_experiment_by_name(experiment).artifact_location
    if not location.startswith(PROXIED):
        warnings.warn(f"experiment '{experiment}' keeps its artifacts at {location}, a path each node writes on its "
                      f"own disk unless it is shared: checkpoints travel between nodes only through a server "
                      f"started with --artifacts-destination", RuntimeWarning, stacklevel=2)


def resources(ray, options: RayOptions, from_suite: dict) -> tuple[float, float]:
    """CPUs and GPUs per cell: the command line's, else the suite file's, else 1 CPU (and 1 GPU where the cluster
    has GPUs). Warns when no node could hold a cell now (an autoscaler may still add one)."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    cpus = _first(options.cpus_per_cell, from_suite.get("cpus_per_cell"), 1)
    gpus = _first(options.gpus_per_cell, from_suite.get("gpus_per_cell"), 1 if any(n.get("GPU") for n in nodes)
                  else 0)
    if not any(n.get("CPU", 0) >= cpus and n.get("GPU", 0) >= gpus for n in nodes):
        have = "; ".join(f"{n.get('CPU', 0):g} CPU, {n.get('GPU', 0):g} GPU" for n in nodes) or "none"
        warnings.warn(f"no node of the Ray cluster has {cpus:g} CPU and {gpus:g} GPU for a cell (its nodes: {have}); "
                      f"the cells wait for one (see --cpus-per-cell, --gpus-per-cell)", RuntimeWarning, stacklevel=2)
    return cpus, gpus


def wait_all(ray, refs: dict, items, done) -> None:
    pending = list(refs)
    # A scheduler's or `timeout`'s SIGTERM stops the cells as Ctrl-C does, instead of Ray's fatal-signal dump.
    from ..runs import interrupt_on_sigterm
    interrupt_on_sigterm()
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                done(refs[ref], outcome(ray, ref, items[refs[ref]][0]))
    except KeyboardInterrupt:
        for ref in pending:  # a running cell gets a KeyboardInterrupt: its run ends KILLED, resumable
            ray.cancel(ref)
        ray.wait(pending, num_returns=len(pending), timeout=CANCEL_WAIT_S)
        raise


def outcome(ray, ref, cell) -> dict:
    try:
        return ray.get(ref)
    except Exception as exc:  # its retries spent (every node it ran on died), or cancelled
        return {"cell": cell, "status": "FAILED", "error": f"{type(exc).__name__}: {first_line(exc, 300)}"}


# ------------------------------------------------------------------------------------------ on a worker
def run_remote(cell, spec) -> dict:
    """A cell as a Ray task: run in a scratch folder on this node, its record fetched from and sent to the server."""
    import ray
    import torch
    node = node_name(ray)
    scratch = Path(tempfile.mkdtemp(prefix="repbench-cell-"))
    try:
        torch.set_num_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
        spec = replace(spec, results_dir=scratch, device="cuda" if ray.get_gpu_ids() else "cpu", progress=False)
        try:
            spec = from_server(cell, spec, node)
        except Exception as exc:  # the server failed us: this cell's failure, reported at the end
            return {"cell": cell, "status": "FAILED", "node": node,
                    "error": f"cannot read the cell's runs from {spec.tracking_uri}: {first_line(exc, 300)}"}
        return {**run_in_scratch(cell, spec, scratch), "node": node}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run_in_scratch(cell, spec, scratch: Path) -> dict:
    """run_cell, then its record sent to the server before the scratch folder goes. A cell cancelled by Ctrl-C on
    the head (while training or while sending) sends what it has too, briefly: the head waits CANCEL_WAIT_S for
    all cells, and a server that missed the stop would show the run RUNNING for good."""
    from .cell import run_cell
    try:
        return sent_to_server(run_cell(cell, spec), scratch, spec.tracking_uri)
    except KeyboardInterrupt:
        try:
            sent_to_server({"cell": cell, "status": "KILLED"}, scratch, spec.tracking_uri, wait_s=CANCEL_WAIT_S / 2)
        except Exception:  # noqa: BLE001 - the head must still see a cancel; the next suite continues the cell
            pass
        raise


def sent_to_server(outcome: dict, scratch: Path, uri: str, wait_s: float = SYNC_WAIT_S) -> dict:
    """The cell's outcome once the server holds its whole record. A run the server fell behind on (a slow or
    lost server: `mlflow_sync: pending` in its run.json) is sent again until `wait_s` runs out, since the scratch
    folder, the only other copy, goes when the task ends; then the cell failed, and says so."""
    from ..runs import reconcile
    deadline = time.monotonic() + wait_s
    while _pending(scratch) and time.monotonic() < deadline:
        time.sleep(min(SYNC_PAUSE_S, max(0.0, deadline - time.monotonic())))
        reconcile(scratch, uri)
    record = outcome.get("record")
    if not _pending(scratch):
        return {**outcome, "record": {**record, "tracking_error": None}} if record else outcome
    lost = (f"the tracking server at {uri} did not take the cell's record ({(record or {}).get('tracking_error')}); "
            f"run the suite again to finish it from its last uploaded checkpoint")
    return {**outcome, "status": "FAILED", "error": "; ".join(filter(None, [outcome.get("error"), lost]))}


def _pending(scratch: Path) -> list[Path]:
    from ..files import read_json
    return [p for p in scratch.glob("runs/*/run.json") if read_json(p).get("mlflow_sync") == "pending"]


def node_name(ray) -> str:
    """This task's node as people know it: its name (`ray start --node-name`; by default its IP address)."""
    me = ray.get_runtime_context().get_node_id()
    return next((n.get("NodeName") or n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == me), me[:8])


def from_server(cell, spec, node: str):
    """The spec this task runs, from what the server holds of the cell: its FINISHED run reused (the record put in
    the scratch folder, where `runner.run` finds it), else its unfinished run continued (from the last uploaded
    checkpoint, if any), else a new run."""
    from ..files import read_json, write_json
    from ..runs import cell_runs, connect, download
    try:
        key = cell.prefix()
    except RepbenchError:
        return spec  # bad options: `run` reports them as this cell's failure
    training = {**spec.tags, "ray_node": node}
    if not spec.reuse:  # --rerun
        return replace(spec, resume=False, tags=training)
    client = connect(spec.tracking_uri)
    runs = cell_runs(client, spec.experiment, key)
    folder = Path(spec.results_dir) / "runs" / f"{key}-server"
    finished = [r for r in runs if r.info.status == "FINISHED"]
    if finished:
        run_id = finished[0].info.run_id
        download(client, run_id, ("metrics.json", "run.json"), folder)
        # the server's status is the truth: the run.json artifact was sent before the run's end was written
        write_json(folder / "run.json", {**read_json(folder / "run.json"), "status": "FINISHED",
                                         "mlflow_run_id": run_id})
        if _lacks_metrics(folder, spec):
            download(client, run_id, ("checkpoint.pt",), folder)
        return replace(spec, resume=False)
    if not runs:
        return replace(spec, resume=False, tags=training)
    run_id = runs[0].info.run_id  # interrupted: a lost node, Ctrl-C, a failure; continued in the same run
    if not download(client, run_id, ("checkpoint.pt",), folder):
        return replace(spec, resume=False, mlflow_run_id=run_id, tags=training)
    from ..learners import load_checkpoint
    epoch = load_checkpoint(folder / "checkpoint.pt").get("epoch", 0)
    return replace(spec, resume=True, mlflow_run_id=run_id, tags={**training, "resumed_from_epoch": epoch})


def _lacks_metrics(folder: Path, spec) -> bool:
    from ..files import read_json
    from ..runs import RunRecord
    return bool(RunRecord.from_json(read_json(folder / "metrics.json")).missing(spec.battery))


def _first(*values):
    return next(v for v in values if v is not None)

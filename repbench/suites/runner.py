"""Running a suite's cells (one process, --jobs processes, or a Ray cluster) and reading their results back
(from the run folders, or from a tracking server alone). The suite file itself is read in suite.py."""
from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import queue
import signal
from pathlib import Path

from ..errors import RepbenchError
from .cell import cell_spec, run_cell
from .schema import Cell, FeatureCell, Suite, battery_of


def run_suite(suite: Suite, *, results_dir: Path, rerun: bool = False, device: str = "auto",
              tracking_uri: str | None = None, progress: bool = True, data_root: str | None = None,
              jobs: int = 1, ray=None) -> list[dict]:
    """Run every cell; finished cells with the same configuration are reused unless `rerun`. A failing cell is
    recorded and the others still run. `jobs` > 1 runs cells in that many processes, splitting the cores
    between them: on a small CPU, one process per core trains more images per second in all than one
    process using every core, because the head's small matrix multiplies do not scale across threads.
    `ray` (cluster.RayOptions) runs each cell as a task on a Ray cluster instead, with a tracking server as
    the shared record."""
    from tqdm.auto import tqdm
    if jobs < 1:
        raise RepbenchError(f"--jobs must be >= 1, got {jobs}")
    check_features(suite, data_root)
    specs = [(cell, cell_spec(suite, cell, results_dir, rerun, device, tracking_uri, data_root))
             for cell in suite.cells]
    session = None
    if ray is not None and specs:  # connected before the bar: a wrong address or store is one line, no work
        from .cluster import connect
        from ..runs import default_tracking_uri
        session = connect(ray, suite, tracking_uri or default_tracking_uri(results_dir), specs[0][1].experiment)
    bar = tqdm(total=len(specs), desc=f"suite {suite.name}", unit="cell", disable=not progress, position=0)
    outcomes: list[dict | None] = [None] * len(specs)

    def done(i: int, outcome: dict) -> None:
        outcomes[i] = outcome
        bar.update()
        bar.write(f"{outcome['status']:<8} {outcome['cell']}" + (f"  on {outcome['node']}" if "node" in outcome
                                                                   else ""))
        lost = (outcome.get("record") or {}).get("tracking_error")
        if lost:
            bar.write(f"warning: MLflow tracking of {outcome['cell']} failed ({lost}); its results are in its run "
                      f"folder")
    lines = bar.write if progress else None
    if session is not None:
        from .cluster import run_on_ray
        run_on_ray(session, specs, done)
    elif jobs == 1 or len(specs) == 1:
        with epoch_lines(lines):
            for i, (cell, spec) in enumerate(specs):
                bar.set_postfix_str(str(cell))
                done(i, run_cell(cell, spec))
    else:
        _run_parallel(specs, jobs, tracking_uri, results_dir, done, lines)
    bar.close()
    return outcomes + [_score_features(suite, f, results_dir, tracking_uri, data_root) for f in suite.features]


@contextlib.contextmanager
def epoch_lines(write):
    """Show the cells' progress lines (recording.PROGRESS) with `write` while the block runs; None: not at all."""
    if write is None:
        yield
        return
    handler = logging.Handler()
    handler.emit = lambda record: write(record.getMessage())
    from ..runs import PROGRESS
    _attach(handler)
    try:
        yield
    finally:
        PROGRESS.removeHandler(handler)


def _attach(handler: logging.Handler) -> None:
    from ..runs import PROGRESS
    PROGRESS.addHandler(handler)
    PROGRESS.setLevel(logging.INFO)


def check_features(suite: Suite, data_root: str | None) -> None:
    """Every `features:` file read and checked against its dataset before any cell trains: a bad file found
    after an hour of training is an hour lost."""
    from ..runs.outside import check_dataset, read_features
    for cell in suite.features:
        check_dataset(read_features(cell.file), cell.dataset, str(cell.file), data_root)


def _score_features(suite: Suite, cell: FeatureCell, results_dir: Path, tracking_uri: str | None,
                    data_root: str | None) -> dict:
    from ..runs import evaluate_features
    try:
        record = evaluate_features(cell.file, name=cell.display, dataset=cell.dataset, battery=suite.battery,
                                   results_dir=results_dir, tracking_uri=tracking_uri, tags={"suite": suite.name},
                                   data_root=data_root)
        return {"cell": cell, "status": record["status"], "record": record}
    except RepbenchError as exc:
        return {"cell": cell, "status": "FAILED", "error": str(exc)}


STOP_WAIT_S = 120  # after Ctrl-C or SIGTERM, how long the suite waits for its running cells to record the stop
_stopping = False  # in a worker: the suite was stopped, so a queued cell is not started
_busy = False      # in a worker: a cell is running


def _set_threads(n: int, lines: "queue.Queue | None" = None) -> None:
    import torch
    torch.set_num_threads(n)
    if lines is not None:  # the worker's progress lines go to the suite, which shows them above its bar
        _attach(logging.handlers.QueueHandler(lines))
    # A suite started in the background by a shell inherits an ignored SIGINT; the parent stops its workers with
    # SIGINT (see _run_parallel), so they must hear it.
    signal.signal(signal.SIGINT, _stop_worker)


def _stop_worker(signum, frame):
    global _stopping
    _stopping = True
    if _busy:  # the running cell ends KILLED and resumable; an idle worker just stops taking cells
        raise KeyboardInterrupt


def _run_in_worker(cell: Cell, spec) -> dict:
    """run_cell in a --jobs worker. A worker outlives a stopped cell and the pool hands it the cells it had
    queued already: once the suite is stopped they are refused, never started."""
    global _busy
    if _stopping:
        return {"cell": cell, "status": "NOT RUN", "error": "the suite was stopped first"}
    _busy = True
    try:
        return run_cell(cell, spec)
    finally:
        _busy = False


def _run_parallel(specs, jobs: int, tracking_uri, results_dir, done, write=None) -> None:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    import torch
    from ..runs import MLflowTracker, default_tracking_uri
    # Create the store and experiment once, so that workers do not race to migrate a new SQLite file.
    MLflowTracker(tracking_uri or default_tracking_uri(results_dir), specs[0][1].experiment, results_dir).prepare()
    threads = max(1, torch.get_num_threads() // jobs)
    context = multiprocessing.get_context("spawn")
    lines = context.Queue() if write is not None else None
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_set_threads, initargs=(threads, lines)) as pool:
        futures = {pool.submit(_run_in_worker, cell, spec): i for i, (cell, spec) in enumerate(specs)}
        try:
            pending = set(futures)
            while pending:
                finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                _show(lines, write)
                for future in finished:
                    done(futures[future], future.result())
            _show(lines, write)
        except BaseException:
            workers = list((getattr(pool, "_processes", None) or {}).values())
            started = [f for f in futures if f.running()]  # running or already handed to a worker
            pool.shutdown(wait=False, cancel_futures=True)
            for proc in workers:  # what Ctrl-C in a terminal does; a SIGTERM reaches this process alone
                if proc.is_alive():
                    os.kill(proc.pid, signal.SIGINT)
            wait(started, timeout=STOP_WAIT_S)  # each running cell records its stop
            for proc in workers:  # idle now; left alive, a worker would outlive the suite
                proc.terminate()
            raise


def latest_results(suite: Suite, results_dir: Path, tracking_uri: str | None = None) -> list[tuple[Cell, dict]]:
    """Each cell's values as the suite measures them (cells never finished are absent): every metric of the suite
    from the newest finished run of the cell's configuration that measured it with the suite's battery settings,
    so an ad-hoc `repbench run` or `eval` with other settings never stands in for the suite's value. The record
    is the newest such run's, with only those values; `left_out` names the suite's metrics no run measured so.
    From the run folders under `results_dir`, or with `tracking_uri` from that store alone (a cluster's record)."""
    found = server_records(suite, tracking_uri) if tracking_uri is not None else local_records(suite, results_dir)
    return [(cell, suite_values(records, battery_of(suite.battery, cell))) for cell, records in found if records]


def suite_values(records: list[dict], cfg) -> dict:
    """Of a cell's finished records (newest first), each metric of `cfg` from the newest that measured it with
    `cfg`'s settings and its metric's code version (RunRecord.missing decides, as reuse does); the values of a
    metric measured otherwise, or of metrics the suite does not run, are left out, and with them how they ended."""
    from ..metrics import METRICS
    from ..runs import RunRecord
    from ..runs.record import measured_with
    matched = [set(cfg.metrics) - set(RunRecord.from_json(r).missing(cfg)) for r in records]
    values, settings, left_out, used = {}, {}, [], []
    for metric in cfg.metrics:
        i = next((i for i, ok in enumerate(matched) if metric in ok), None)
        if i is None:
            left_out.append(metric)
            continue
        used.append(i)
        settings[metric] = measured_with(records[i]).get(metric, {})  # its fits: whether its probes converged
        for name, value in records[i]["metrics"].items():
            if METRICS.get(metric).owns(name):
                values.setdefault(name, value)
    return {**records[min(used, default=0)], "metrics": values, "measured_with": settings, "left_out": left_out}


def local_records(suite: Suite, results_dir: Path) -> list[tuple[Cell, list[dict]]]:
    """Every finished run's record of each cell under `results_dir`, newest first."""
    from ..runs import finished_folders, read_record
    out = []
    for cell in suite.cells + suite.features:
        try:
            folders = finished_folders(Path(results_dir) / "runs", cell.prefix())
        except RepbenchError:
            continue  # a cell whose options are invalid has no runs
        out.append((cell, [{**read_record(f / "metrics.json"), "_folder": str(f)} for f in folders]))
    return out


def server_records(suite: Suite, tracking_uri: str, experiment: str = "repbench") -> list[tuple[Cell, list[dict]]]:
    """Every FINISHED run of each cell in a tracking store, newest first, found by its configuration key (tag
    `config_key`), with its record (metrics.json) fetched from the store: no run folder is needed."""
    import tempfile
    from ..runs import read_record, cell_runs, connect, download, unreachable
    problem = unreachable(tracking_uri)
    if problem:
        raise RepbenchError(problem)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            client = connect(tracking_uri)
            for i, cell in enumerate(suite.cells + suite.features):
                try:
                    key = cell.prefix()
                except RepbenchError:
                    continue  # a cell whose options are invalid has no runs
                records = []
                for j, run in enumerate(cell_runs(client, experiment, key, "FINISHED")):
                    folder, run_id = Path(tmp) / f"{i}-{j}", run.info.run_id
                    if download(client, run_id, ("metrics.json",), folder):
                        where = f"metrics.json of MLflow run {run_id}"
                        records.append({**read_record(folder / "metrics.json", where, run_id), "mlflow_run_id": run_id})
                out.append((cell, records))
        except RepbenchError:
            raise
        except Exception as exc:  # a store that fails mid-way: one line, not MLflow's traceback
            raise RepbenchError(f"cannot read runs from {tracking_uri}: {type(exc).__name__}: "
                                f"{(str(exc).splitlines() or [''])[0][:200]}") from None
    return out


def _show(lines: "queue.Queue | None", write) -> None:
    """Write the progress lines the workers have sent so far."""
    while lines is not None:
        try:
            write(lines.get_nowait().getMessage())
        except queue.Empty:
            return

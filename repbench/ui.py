"""`repbench ui`: the MLflow UI on 127.0.0.1, announced only once it answers, and stopped with all it started."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.request

from .errors import RepbenchError


def runs_page(base: str, experiment_id: str | None) -> str:
    """The address of an experiment's runs list; MLflow 3 opens on its GenAI views unless asked for training."""
    if experiment_id is None:
        return f"{base}/#/experiments?workflowType=machine_learning"
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def run_page(base: str, experiment_id: str, run_id: str) -> str:
    """The address of one run, in the model-training views (without the parameter MLflow 3 opens its GenAI ones)."""
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"


def columns_hint() -> str:
    """How to see the key metrics in the runs list: MLflow keeps a table's columns in the browser, and no address
    can choose them."""
    from .metrics import summary_metrics
    return (f"to see the key metrics as columns: Columns (above the runs table) -> Metrics -> "
            f"{', '.join(summary_metrics())}; the browser keeps the choice")


def prepare_store(uri: str, experiment: str) -> str | None:
    """Tag the store's repbench experiment as a model-development one (units too); return its id, if any."""
    from .runs import MLflowTracker, connect
    exp = connect(uri).get_experiment_by_name(experiment)
    if exp is None:
        return None
    MLflowTracker(uri, experiment, ".").prepare()
    return exp.experiment_id


def serve(uri: str, port: int, echo=print, timeout_s: float = 120.0, experiment: str = "repbench") -> None:
    """Run the UI until Ctrl-C or SIGTERM; the MLflow server and its helper processes go with it."""
    from .runs import is_remote, unreachable
    if is_remote(uri):  # a server has its own UI already
        problem = unreachable(uri)
        if problem:
            raise RepbenchError(problem)
        echo(f"the runs are on the MLflow server itself: {runs_page(uri.rstrip('/'), prepare_store(uri, experiment))}")
        echo(columns_hint())
        return
    exe = shutil.which("mlflow")
    if exe is None:
        raise RepbenchError("the `mlflow` command is not on PATH; reinstall repbench (pip install -e .)")
    experiment_id = prepare_store(uri, experiment)
    echo(f"starting the MLflow UI on port {port} (store {uri}) ...")
    # its own process group: `mlflow ui` starts a web server and a job runner, and all must stop together
    proc = subprocess.Popen([exe, "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port)],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    signal.signal(signal.SIGTERM, _terminated)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_answers(proc, url, timeout_s)
        echo(f"MLflow UI at {runs_page(url, experiment_id)} (select runs to compare them; Ctrl-C stops it)")
        echo(columns_hint())
        proc.wait()
        raise RepbenchError(f"the MLflow UI stopped (exit {proc.returncode})")
    except KeyboardInterrupt:
        pass
    finally:
        stop_group(proc)


def wait_until_answers(proc: subprocess.Popen, url: str, timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            tail = (proc.stderr.read() or b"").decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise RepbenchError(f"the MLflow UI did not start (exit {proc.returncode}): {tail[0][:200]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.25)
    raise RepbenchError(f"the MLflow UI did not answer at {url} within {timeout_s:.0f} s")


def stop_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM to the server's whole process group, SIGKILL to whatever is left of it after `grace_s`."""
    _signal_group(proc, signal.SIGTERM)
    deadline = time.time() + grace_s
    while time.time() < deadline and _signal_group(proc, 0):
        proc.poll()  # reap the server itself, so only live helpers keep the group
        time.sleep(0.1)
    _signal_group(proc, signal.SIGKILL)
    proc.wait()


def _signal_group(proc: subprocess.Popen, sig: int) -> bool:
    """Send `sig` to the group; False if the group is gone."""
    try:
        os.killpg(proc.pid, sig)
        return True
    except ProcessLookupError:
        return False


def _terminated(*_) -> None:
    raise KeyboardInterrupt  # a terminated `repbench ui` stops its server the way Ctrl-C does

"""Suites on a real Ray cluster (a head and a worker node, both on 127.0.0.1) with a real `mlflow server` as the
shared record: a worker node killed mid-cell, Ctrl-C on the head, reuse and resume looked up in the server, and a
report written from the server alone."""
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from repbench.cli import cli
from mlflow_server import free_port, start_server

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'repbench[ray]'")
pytestmark = pytest.mark.slow

EPOCHS = 20  # a smoke epoch takes a fraction of a second: long enough to be stopped mid-cell
SUITE = """name: {name}
learners: [{{name: vae, options: {{epochs: {epochs}}}}}, {{name: lpvae, options: {{h: 1, epochs: {epochs}}}}}]
datasets: [synthetic]
presets: [smoke]
seeds: [{seed}]
metrics: [bpd, linear_probe]
battery: {{probe_seeds: 1}}
thresholds: [{{metric: bpd, max: 10.0}}]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc = start_server(tmp_path_factory.mktemp("server"), port := free_port())
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster
    local = dict(node_ip_address="127.0.0.1", include_dashboard=False)
    with python_sigint():
        c = Cluster(initialize_head=True, head_node_args=dict(num_cpus=1, node_name="head", **local))
        c.add_node(num_cpus=1, node_name="worker", **local)
    yield c
    c.shutdown()


def write_suite(tmp_path: Path, name: str, seed: int) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(SUITE.format(name=name, epochs=EPOCHS, seed=seed))
    return path


def suite_args(path: Path, cluster, server: str, results: Path) -> list[str]:
    return [sys.executable, "-m", "repbench.cli", "suite", str(path), "--ray", cluster.address, "--tracking-uri",
            server, "--results-dir", str(results), "--checkpoint-every", "1"]


def start_suite(path: Path, cluster, server: str, results: Path) -> subprocess.Popen:
    return subprocess.Popen(suite_args(path, cluster, server, results), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            preexec_fn=_default_sigint)


def run_suite_again(path: Path, cluster, server: str, results: Path) -> subprocess.CompletedProcess:
    return subprocess.run(suite_args(path, cluster, server, results), capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@contextlib.contextmanager
def python_sigint():
    """Ray's processes inherit this process's SIGINT: ignored (a background CI job, an earlier test), their
    workers would ignore the cancel that Ctrl-C on the head sends them, which Ray delivers as SIGINT."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _default_sigint():  # under a background CI job SIGINT may be inherited as ignored
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def runs_of(server: str, suite: str) -> list:
    client = MlflowClient(server)
    exp = client.get_experiment_by_name("repbench")
    return [] if exp is None else client.search_runs([exp.experiment_id], f"tags.suite = '{suite}'")


def has_checkpoint(server: str, run) -> bool:
    return any(a.path == "checkpoint.pt" for a in MlflowClient(server).list_artifacts(run.info.run_id))


def wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 300):  # Ray workers start slowly under load
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"the suite ended before {what}:\n{proc.stdout.read()}")
        time.sleep(0.3)
    proc.kill()
    pytest.fail(f"no {what} within {timeout} s")


def one_finished_run_per_cell(server: str, suite: str) -> dict:
    runs = runs_of(server, suite)
    by_key = {}
    for r in runs:
        by_key.setdefault(r.data.tags["config_key"], []).append(r)
    assert len(by_key) == 2 and all(len(v) == 1 for v in by_key.values()), [(k, len(v)) for k, v in by_key.items()]
    assert all(v[0].info.status == "FINISHED" for v in by_key.values()), \
        [(k, v[0].info.status, v[0].data.tags.get("error")) for k, v in by_key.items()]
    return {k: v[0] for k, v in by_key.items()}


def test_a_worker_killed_mid_cell_loses_nothing_and_the_server_alone_reports(cluster, server, tmp_path):
    suite = write_suite(tmp_path, "cluster-kill", seed=0)
    proc = start_suite(suite, cluster, server, tmp_path / "head")
    on_worker = wait_for(lambda: next((r for r in runs_of(server, "cluster-kill")
                                       if r.data.tags.get("ray_node") == "worker" and has_checkpoint(server, r)),
                                      None), proc, "checkpoint uploaded from the worker node")
    worker = next(iter(cluster.worker_nodes))
    cluster.remove_node(worker, allow_graceful=False)  # the node is gone, with its processes and scratch folder
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    runs = one_finished_run_per_cell(server, "cluster-kill")
    retried = runs[on_worker.data.tags["config_key"]]
    assert retried.info.run_id == on_worker.info.run_id  # the retry continued the same MLflow run ...
    assert int(retried.data.tags["resumed_from_epoch"]) >= 1  # ... from the checkpoint the dead node uploaded
    assert retried.data.tags["ray_node"] == "head"
    assert retried.data.metrics["bpd"] < 10 and not (tmp_path / "head" / "runs").exists()  # nothing on the head

    again = run_suite_again(suite, cluster, server, tmp_path / "head")
    assert again.returncode == 0 and again.stdout.count("REUSED") >= 2, again.stdout + again.stderr
    assert one_finished_run_per_cell(server, "cluster-kill")  # reuse made no new run

    elsewhere = tmp_path / "a-machine-that-ran-nothing"
    report = CliRunner().invoke(cli, ["report", "--suite", str(suite), "--tracking-uri", server, "--format", "csv",
                                      "--results-dir", str(elsewhere)])
    assert report.exit_code == 0, report.output
    rows = [line for line in report.output.splitlines() if "synthetic" in line]
    assert {row.split(",")[0] for row in rows} == {"vae", "lpvae-h1"}, report.output
    check = CliRunner().invoke(cli, ["check", str(suite), "--tracking-uri", server, "--results-dir", str(elsewhere)])
    assert check.exit_code == 0 and check.output.count("ok ") == 2, check.output


def test_ctrl_c_on_the_head_stops_the_cells_and_a_second_suite_resumes_them(cluster, server, tmp_path):
    if not cluster.worker_nodes:
        with python_sigint():
            cluster.add_node(num_cpus=1, node_name="worker2", node_ip_address="127.0.0.1")
    suite = write_suite(tmp_path, "cluster-stop", seed=1)
    proc = start_suite(suite, cluster, server, tmp_path / "head")
    def every_cell_has_a_checkpoint():  # a cell stopped before its first epoch would rightly start afresh
        runs = runs_of(server, "cluster-stop")
        return len(runs) == 2 and any(r.info.status == "RUNNING" for r in runs) and \
            all(r.info.status == "FINISHED" or has_checkpoint(server, r) for r in runs)
    wait_for(every_cell_has_a_checkpoint, proc, "a checkpoint uploaded by every running cell")
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "Traceback" not in out and "run the same `repbench suite`" in out, out
    stopped = [r for r in runs_of(server, "cluster-stop") if r.info.status != "FINISHED"]
    assert stopped and all(r.info.status == "KILLED" for r in stopped), out  # none left RUNNING

    again = run_suite_again(suite, cluster, server, tmp_path / "head")
    assert again.returncode == 0, again.stdout + again.stderr
    runs = {r.info.run_id: r for r in one_finished_run_per_cell(server, "cluster-stop").values()}
    for r in stopped:  # continued in the same MLflow run, from the checkpoint sent when Ctrl-C stopped it
        assert int(runs[r.info.run_id].data.tags["resumed_from_epoch"]) >= 1
        assert len({m.step for m in MlflowClient(server).get_metric_history(r.info.run_id, "train_loss")}) == EPOCHS


def test_an_address_where_no_cluster_listens_is_one_line_at_once(server, tmp_path):
    started = time.time()
    smoke = Path(__file__).resolve().parents[2] / "benchmarks" / "smoke.yaml"
    out = CliRunner().invoke(cli, ["suite", str(smoke), "--ray", f"127.0.0.1:{free_port()}",
                                   "--tracking-uri", server, "--results-dir", str(tmp_path)])
    assert out.exit_code == 2 and out.stderr.startswith("error: no Ray cluster answers at 127.0.0.1:"), out.output
    assert time.time() - started < 30 and not (tmp_path / "runs").exists()


def test_a_cell_sends_what_the_server_missed_before_its_scratch_folder_goes(server, tmp_path):
    """A cluster cell's folder is scratch: a record the server fell behind on is sent again before the task ends,
    and a cell whose server never takes it is FAILED, never FINISHED with the record gone."""
    import json
    from repbench.suites.cluster import sent_to_server
    scratch = tmp_path / "scratch"
    out = CliRunner().invoke(cli, ["run", "--model", "vae", "--preset", "smoke", "--dataset", "synthetic", "-q",
                                   "--grid", "0", "--metrics", "bpd", "--iw-samples", "2", "--results-dir",
                                   str(scratch), "--tracking-uri", server, "--experiment", "scratch-sync"])
    assert out.exit_code == 0, out.output
    (path,) = scratch.glob("runs/*/run.json")
    state = json.loads(path.read_text())
    MlflowClient(server).update_run(state["mlflow_run_id"], status="RUNNING")  # the end the server missed
    finished = {"cell": "vae", "status": "FINISHED", "record": {"tracking_error": "end: ReadTimeout"}}

    gone = f"http://127.0.0.1:{free_port()}"
    path.write_text(json.dumps({**state, "mlflow_sync": "pending", "tracking_uri": gone}))
    lost = sent_to_server(finished, scratch, gone, wait_s=0.5)
    assert lost["status"] == "FAILED" and "did not take the cell's record (end: ReadTimeout)" in lost["error"]

    path.write_text(json.dumps({**state, "mlflow_sync": "pending"}))
    sent = sent_to_server(finished, scratch, server, wait_s=30)
    assert sent["status"] == "FINISHED" and sent["record"]["tracking_error"] is None, sent
    assert MlflowClient(server).get_run(state["mlflow_run_id"]).info.status == "FINISHED"
    assert json.loads(path.read_text())["mlflow_sync"] == "done"


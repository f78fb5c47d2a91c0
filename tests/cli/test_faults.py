"""Faults leave the run folder, run.json and the MLflow run agreeing: a full disk, a read-only folder, a lost or
unreachable tracking server, two runs started at once, a killed process."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from repbench.cli import cli
from repbench.runs.records import new_run_folder

SMOKE = ["run", "--model", "vae", "--preset", "smoke", "--dataset", "synthetic", "-q", "--grid", "0",
         "--metrics", "bpd", "--iw-samples", "2"]


def mounted(tmp_path, name: str, options: str):
    mnt = tmp_path / name
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    return mnt


@pytest.fixture
def small_disk(tmp_path):
    mnt = mounted(tmp_path, "disk", "size=2m")
    yield mnt
    subprocess.run(["umount", "--lazy", str(mnt)], check=True)  # lazy: this process may hold the store open


@pytest.fixture
def read_only(tmp_path):
    mnt = mounted(tmp_path, "ro", "size=1m,ro")
    yield mnt
    subprocess.run(["umount", "--lazy", str(mnt)], check=True)


def one_line(out) -> str:
    lines = [line for line in out.stderr.splitlines() if line.strip() and not line.startswith("warning:")]
    assert len(lines) == 1 and "Traceback" not in out.output, out.output
    return lines[0]


def test_a_full_disk_fails_the_run_in_one_line_and_every_record_says_so(small_disk):
    out = subprocess.run([sys.executable, "-m", "repbench.cli", *SMOKE, "-o", "hidden=400", "--results-dir",
                          str(small_disk)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "No space left on device" in out.stderr
    (folder,) = (small_disk / "runs").iterdir()
    state = json.loads((folder / "run.json").read_text())
    assert state["status"] == "FAILED" and "No space left" in state["error"]
    assert not list(folder.glob("*.tmp"))  # no half-written checkpoint keeps the disk full
    run = MlflowClient(f"sqlite:///{small_disk / 'mlflow.db'}").get_run(state["mlflow_run_id"])
    assert run.info.status == "FAILED" and state["mlflow_sync"] == "done"


def test_a_read_only_results_folder_is_one_line_before_any_work(read_only):
    out = CliRunner().invoke(cli, SMOKE + ["--results-dir", str(read_only / "results")])
    assert out.exit_code == 2 and "cannot create the results folder" in one_line(out)


def test_two_runs_started_at_once_get_their_own_folders(tmp_path):
    folders = []
    threads = [threading.Thread(target=lambda: folders.append(new_run_folder(tmp_path, "same-prefix")))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(folders)) == 8 and all(f.is_dir() for f in folders)
    assert sorted(folders) == sorted(tmp_path.glob("same-prefix-*"))


def test_a_killed_run_is_marked_killed_by_the_next_run_of_its_configuration(tmp_path):
    results = tmp_path / "r"
    args = SMOKE + ["--epochs", "50", "--results-dir", str(results)]
    proc = subprocess.Popen([sys.executable, "-m", "repbench.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(results.glob("runs/*/run.json")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.kill()  # SIGKILL: the run cannot close its records
    proc.wait()
    (orphan,) = [p.parent for p in results.glob("runs/*/run.json")]
    assert json.loads((orphan / "run.json").read_text())["status"] == "RUNNING"
    out = CliRunner().invoke(cli, args)  # the same configuration again, not resuming
    assert out.exit_code == 0, out.output
    state = json.loads((orphan / "run.json").read_text())
    assert state["status"] == "KILLED" and "ended without closing" in state["error"]
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    assert client.get_run(state["mlflow_run_id"]).info.status == "KILLED"
    assert state["mlflow_sync"] == "done" and len(list(results.glob("runs/*"))) == 2  # the new run, finished


def test_resume_never_takes_over_a_live_run_nor_revives_one_a_newer_run_finished(tmp_path):
    results = tmp_path / "r"
    args = SMOKE + ["--epochs", "40", "--results-dir", str(results)]  # long enough to be caught running
    proc = subprocess.Popen([sys.executable, "-m", "repbench.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not list(results.glob("runs/*/checkpoint.pt")) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        live = CliRunner().invoke(cli, args + ["--resume"])  # a second terminal, the same command
        assert live.exit_code == 2 and f"is still running (process {proc.pid} " in one_line(live), live.output
        (tmp_path / "s.yaml").write_text("name: same\nlearners: [{name: vae, options: {epochs: 40}}]\n"
                                         "datasets: [synthetic]\npresets: [smoke]\nmetrics: [bpd]\n")
        suite = CliRunner().invoke(cli, ["suite", str(tmp_path / "s.yaml"), "-q", "--results-dir", str(results)])
        assert suite.exit_code == 1 and "| vae / synthetic / smoke / seed 0 | BUSY " in suite.output, suite.output
        assert "1 of 1 cells are being trained by another process" in suite.stderr
        assert len(list(results.glob("runs/*"))) == 1  # neither repeated the live run's work
    finally:
        proc.terminate()
        proc.wait(timeout=120)
    (stopped,) = [p.parent for p in results.glob("runs/*/run.json")]
    assert json.loads((stopped / "run.json").read_text())["status"] == "KILLED"
    assert CliRunner().invoke(cli, args).exit_code == 0  # the same configuration, run to the end anew
    stale = CliRunner().invoke(cli, args + ["--resume"])
    assert stale.exit_code == 2 and "its newest run finished" in one_line(stale), stale.output


@pytest.mark.parametrize("command", [SMOKE + ["--epochs", "200"], ["suite", "{suite}", "--jobs", "2", "-q"]],
                         ids=["run", "suite-jobs-2"])
def test_sigterm_stops_runs_as_ctrl_c_does(tmp_path, command):
    """kill, pkill, `timeout` and schedulers send SIGTERM: every run ends KILLED in run.json and MLflow."""
    results = tmp_path / "r"
    (tmp_path / "s.yaml").write_text("name: three\nlearners: [{name: vae, options: {epochs: 200}}, "
                                     "{name: lpvae, options: {h: 1, epochs: 200}}, "
                                     "{name: lpvae, options: {h: 2, epochs: 200}}]\n"  # queued behind two jobs
                                     "datasets: [synthetic]\npresets: [smoke]\nmetrics: [bpd]\n")
    args = [a.replace("{suite}", str(tmp_path / "s.yaml")) for a in command] + ["--results-dir", str(results)]
    proc = subprocess.Popen([sys.executable, "-m", "repbench.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    want = 2 if command[0] == "suite" else 1
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and \
            sum((p.parent / "checkpoint.pt").exists() for p in results.glob("runs/*/run.json")) < want:
        time.sleep(0.1)
    proc.terminate()
    assert proc.wait(timeout=120) == 130, proc.stderr.read()[-2000:]
    states = [json.loads(p.read_text()) for p in results.glob("runs/*/run.json")]
    assert len(states) == want and all(s["status"] == "KILLED" for s in states), \
        [(s["name"], s["status"], s.get("error")) for s in states]  # short enough for pytest to show whole
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    assert all(client.get_run(s["mlflow_run_id"]).info.status == "KILLED" for s in states)
    time.sleep(3)  # a worker that outlived the suite would start the queued cell now
    assert len(list(results.glob("runs/*"))) == want and not any(alive(int(s["process"]["pid"])) for s in states)


def test_a_stop_held_through_a_store_write_still_tells_the_worker_the_suite_is_stopping(monkeypatch):
    """A --jobs worker learns from its SIGINT handler that the suite is stopping. A SIGINT that arrives while
    a store write holds it back must still reach that handler, or the worker goes on to start a queued cell
    (the suite test above then finds a third run folder)."""
    from repbench.suites import runner as suite_run
    from repbench.runs.tracking import deferred_interrupt
    monkeypatch.setattr(suite_run, "_stopping", False)
    monkeypatch.setattr(suite_run, "_busy", True)
    previous = signal.signal(signal.SIGINT, suite_run._stop_worker)
    try:
        with pytest.raises(KeyboardInterrupt):
            with deferred_interrupt():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.2)  # the held handler has run by now
        monkeypatch.setattr(suite_run, "_busy", False)
        assert suite_run._stopping
        assert suite_run._run_in_worker("queued cell", None)["status"] == "NOT RUN"
    finally:
        signal.signal(signal.SIGINT, previous)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"  # a zombie has ended


def test_an_unreachable_server_costs_seconds_not_minutes(tmp_path):
    start = time.perf_counter()
    normal = CliRunner().invoke(cli, SMOKE + ["--results-dir", str(tmp_path / "a")])
    normal_s = time.perf_counter() - start
    start = time.perf_counter()
    with pytest.warns(RuntimeWarning, match=r"no MLflow server answers at http://127.0.0.1:9") as caught:
        lost = CliRunner().invoke(cli, SMOKE + ["--results-dir", str(tmp_path / "b"), "--tracking-uri",
                                                "http://127.0.0.1:9"])
    lost_s = time.perf_counter() - start
    assert normal.exit_code == 0 and lost.exit_code == 0, lost.output
    assert lost_s < normal_s + 30, (normal_s, lost_s)
    assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == 1  # one warning, then quiet
    assert "warning: MLflow tracking failed" in lost.stdout
    (folder,) = (tmp_path / "b" / "runs").iterdir()
    state = json.loads((folder / "run.json").read_text())
    assert state["status"] == "FINISHED" and state["mlflow_run_id"] is None
    assert json.loads((folder / "metrics.json").read_text())["metrics"]["bpd"] > 0


def test_runs_waiting_for_a_sick_server_cost_one_health_check_per_command(tmp_path):
    """Every command starts by bringing pending runs in line; with many of them and a server that is down (or
    hangs for the health check's whole timeout), it asks once, not once per run."""
    import http.server
    from repbench.runs.tracking import reconcile
    asked = []

    class Sick(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            asked.append(self.path)
            self.send_error(503)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Sick)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_port}"
    try:
        for i in range(3):
            folder = tmp_path / "runs" / f"vae-{i}"
            folder.mkdir(parents=True)
            (folder / "run.json").write_text(json.dumps({"status": "KILLED", "mlflow_sync": "pending",
                                                         "tracking_uri": uri, "mlflow_run_id": f"run{i}"}))
        assert reconcile(tmp_path, uri) == 0
        assert asked == ["/health"]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_a_server_lost_mid_run_is_brought_in_line_when_it_returns(tmp_path):
    from mlflow_server import free_port, start_server
    port = free_port()
    server = start_server(tmp_path, port)
    uri = f"http://127.0.0.1:{port}"
    args = [sys.executable, "-m", "repbench.cli", *SMOKE, "--epochs", "6", "-o", "train_limit=600",
            "--results-dir", str(tmp_path / "results"), "--tracking-uri", uri]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not list(tmp_path.glob("results/runs/*/checkpoint.pt")) and time.time() < deadline:
            time.sleep(0.05)
    finally:
        server.terminate()
        server.wait(timeout=30)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    (folder,) = (tmp_path / "results" / "runs").iterdir()
    state = json.loads((folder / "run.json").read_text())
    assert state["status"] == "FINISHED" and state["mlflow_sync"] == "pending" and "warning: MLflow" in err
    server = start_server(tmp_path, port)  # the same store comes back
    try:
        assert MlflowClient(uri).get_run(state["mlflow_run_id"]).info.status == "RUNNING"
        again = CliRunner().invoke(cli, SMOKE + ["--results-dir", str(tmp_path / "results"), "--tracking-uri", uri,
                                                 "--seed", "1"])
        assert again.exit_code == 0, again.output
        assert json.loads((folder / "run.json").read_text())["mlflow_sync"] == "done"
        assert_in_line(uri, folder)
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_tracking_picks_up_again_when_the_server_returns_mid_run(tmp_path):
    """A restart of the server costs the epochs logged while it was away, not the rest of the run (a cluster cell
    needs its later checkpoints there), and the run is still marked for a full resend at its end."""
    from repbench.runs.tracking import MLflowTracker
    from mlflow_server import free_port, start_server
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    tracker = MLflowTracker(uri, "restart", tmp_path, retry_s=0.5)
    server = start_server(tmp_path, port)  # nothing between this and `try` may raise: the server would be left
    try:
        run_id = tracker.start("r", {"a": 1}, {})
        tracker.log_metrics({"loss": 3.0}, step=1)
    finally:
        server.terminate()
        server.wait(timeout=30)
    with pytest.warns(RuntimeWarning, match="failed"):
        tracker.log_metrics({"loss": 2.0}, step=2)
    tracker.log_metrics({"loss": 1.5}, step=3)  # within retry_s: skipped, not waited for
    server = start_server(tmp_path, port)  # the same store comes back
    try:
        time.sleep(0.6)
        tracker.log_metrics({"loss": 1.0}, step=4)
        steps = {m.step: m.value for m in MlflowClient(uri).get_metric_history(run_id, "loss")}
        assert steps == {1: 3.0, 4: 1.0}
        assert tracker.end("FINISHED") is False and MlflowClient(uri).get_run(run_id).info.status == "RUNNING"
    finally:
        server.terminate()
        server.wait(timeout=30)


class Gate:
    """A reverse proxy to a real MLflow server that can turn sick (every request answered 503), as a server does
    while it restarts or is overloaded."""

    def __init__(self, target: str):
        import http.server
        import threading
        import urllib.error
        import urllib.request
        gate, self.sick = self, False

        class Forward(http.server.BaseHTTPRequestHandler):
            def forward(self):
                if gate.sick:
                    return self.send_error(503)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                ask = urllib.request.Request(target + self.path, method=self.command, headers={
                    "Content-Type": self.headers.get("Content-Type", "application/json")},
                    data=body if self.command in ("POST", "PUT", "PATCH") else None)
                try:
                    with urllib.request.urlopen(ask, timeout=60) as answer:
                        status, kind, data = answer.status, answer.headers.get("Content-Type"), answer.read()
                except urllib.error.HTTPError as exc:
                    status, kind, data = exc.code, exc.headers.get("Content-Type"), exc.read()
                self.send_response(status)
                self.send_header("Content-Type", kind or "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = forward

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forward)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.slow
def test_a_cancelled_cluster_cell_tells_the_server_it_stopped_before_its_scratch_folder_goes(tmp_path):
    """ray.cancel (Ctrl-C on the head) raises KeyboardInterrupt in a running cell. A server that misses the run's
    KILLED end at that moment is sent it again while the cell's scratch folder, the only other copy, is still
    there; else the server would show the run RUNNING for good."""
    from repbench.suites.cluster import run_in_scratch
    from repbench.runs.runner import RunSpec
    from repbench.suites.schema import Cell
    from mlflow_server import free_port, start_server
    port = free_port()
    server = f"http://127.0.0.1:{port}"
    scratch, seen = tmp_path / "scratch", []
    cell = Cell("vae", {"epochs": 200}, "synthetic", "smoke", 0)

    def cancel_while_the_server_is_sick(gate: Gate):
        deadline = time.time() + 180
        while not list(scratch.glob("runs/*/checkpoint.pt")) and time.time() < deadline:
            time.sleep(0.05)
        gate.sick = True
        os.kill(os.getpid(), signal.SIGINT)  # what ray.cancel does to a running task
        deadline = time.time() + 180
        while time.time() < deadline and not seen:
            seen.extend(p for p in scratch.glob("runs/*/run.json")
                        if json.loads(p.read_text()).get("mlflow_sync") == "pending")
            time.sleep(0.05)
        time.sleep(2.5)  # the run's own last try (at once) has failed; the cell's next is SYNC_PAUSE_S after it
        gate.sick = False

    with Gate(server) as gate:
        spec = RunSpec(learner="vae", options={"epochs": 200}, dataset="synthetic", preset="smoke",
                       results_dir=scratch, tracking_uri=gate.url, experiment="scratch-cancel", progress=False, grid=0)
        stopper = threading.Thread(target=cancel_while_the_server_is_sick, args=(gate,))
        proc = start_server(tmp_path, port)  # nothing between this and `try` may raise: the server would be left
        try:
            previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # CI's background job may ignore it
            stopper.start()
            with pytest.warns(RuntimeWarning, match="MLflow tracking at .* failed"), pytest.raises(KeyboardInterrupt):
                run_in_scratch(cell, spec, scratch)
            stopper.join(timeout=400)
            (path,) = scratch.glob("runs/*/run.json")
            state = json.loads(path.read_text())
            assert seen, "the server never missed the stop: nothing was left to send again"
            assert state["status"] == "KILLED" and state["mlflow_sync"] == "done", state
            assert MlflowClient(server).get_run(state["mlflow_run_id"]).info.status == "KILLED"
        finally:
            if stopper.is_alive():
                stopper.join(timeout=400)
            signal.signal(signal.SIGINT, previous)
            proc.terminate()
            proc.wait(timeout=30)

def assert_in_line(uri: str, folder: Path) -> None:
    """The MLflow run holds what the folder holds: its status, final metric values, every epoch of its curves
    (also those run while the server was away) and record files."""
    state = json.loads((folder / "run.json").read_text())
    run = MlflowClient(uri).get_run(state["mlflow_run_id"])
    assert run.info.status == state["status"] == "FINISHED"
    record = json.loads((folder / "metrics.json").read_text())
    assert run.data.metrics["bpd"] == pytest.approx(record["metrics"]["bpd"]), (run.data.metrics, record["metrics"])
    logged = {m.step: m.value for m in MlflowClient(uri).get_metric_history(run.info.run_id, "test_loss")}
    assert logged == pytest.approx({e["epoch"]: e["test_loss"] for e in record["history"]}), logged
    assert {"metrics.json", "run.json"} <= {a.path for a in MlflowClient(uri).list_artifacts(run.info.run_id)}


@pytest.mark.slow
def test_a_run_made_while_its_server_was_down_is_started_there_when_it_returns(tmp_path):
    """Class 5 of issue 29: the warning says the MLflow run is brought in line once the server answers; a run
    the server never started is started there then, with its whole record, and only then says `done`."""
    from mlflow_server import free_port, start_server
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    args = [*SMOKE, "--epochs", "2", "--results-dir", str(tmp_path / "results"), "--tracking-uri", uri]
    with pytest.warns(RuntimeWarning, match="no MLflow server answers"):
        made = CliRunner().invoke(cli, args)
    assert made.exit_code == 0, made.output
    (folder,) = (tmp_path / "results" / "runs").iterdir()
    state = json.loads((folder / "run.json").read_text())
    assert state["mlflow_run_id"] is None and state["mlflow_sync"] == "pending", state  # no promise of `done`
    server = start_server(tmp_path, port)
    try:
        again = CliRunner().invoke(cli, args + ["--seed", "1"])  # any run against the server brings it in line
        assert again.exit_code == 0, again.output
        state = json.loads((folder / "run.json").read_text())
        assert state["mlflow_sync"] == "done" and state["mlflow_run_id"], state
        assert_in_line(uri, folder)
        assert MlflowClient(uri).get_run(state["mlflow_run_id"]).data.tags["config_key"] in folder.name
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_a_run_resumed_while_its_server_is_away_keeps_its_mlflow_run(tmp_path):
    from mlflow_server import free_port, start_server
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    results = tmp_path / "results"
    args = [*SMOKE, "--epochs", "6", "-o", "train_limit=600", "--results-dir", str(results), "--tracking-uri", uri]
    server = start_server(tmp_path, port)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "repbench.cli", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while not list(results.glob("runs/*/checkpoint.pt")) and time.time() < deadline:
            time.sleep(0.05)
        proc.terminate()  # stopped mid-run: KILLED in both records
        proc.communicate(timeout=60)
        (folder,) = (results / "runs").iterdir()
        run_id = json.loads((folder / "run.json").read_text())["mlflow_run_id"]
        assert MlflowClient(uri).get_run(run_id).info.status == "KILLED"
    finally:
        server.terminate()
        server.wait(timeout=30)
    with pytest.warns(RuntimeWarning, match="no MLflow server answers"):  # away for the whole rest of the run
        resumed = CliRunner().invoke(cli, args + ["--resume"])
    assert resumed.exit_code == 0 and "warning: MLflow tracking failed" in resumed.stdout, resumed.output
    state = json.loads((folder / "run.json").read_text())
    assert state["mlflow_run_id"] == run_id and state["mlflow_sync"] == "pending", state
    server = start_server(tmp_path, port)
    try:
        again = CliRunner().invoke(cli, args + ["--seed", "1"])  # any run here brings the store in line
        assert again.exit_code == 0, again.output
        assert json.loads((folder / "run.json").read_text())["mlflow_sync"] == "done"
        assert_in_line(uri, folder)
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.parametrize("resume", ["auto ", "yes", 1, None])
def test_run_refuses_a_resume_that_is_not_true_false_or_auto(resume, tmp_path):
    from repbench.errors import RepbenchError
    from repbench.runs.runner import RunSpec, run
    with pytest.raises(RepbenchError, match="resume must be True, False or 'auto'"):
        run(RunSpec(learner="vae", dataset="synthetic", preset="smoke", resume=resume, results_dir=tmp_path))
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------------------------ issue 29
# Class 1: a cell's number is the suite's number or nothing. One suite of two seeds is run once; each case copies
# its results, runs what a user might run beside it, and reads what `check` or `report` says of the suite.
GATE_SUITE = """name: gate
learners: [vae]
datasets: [synthetic]
presets: [smoke]
seeds: [0, 1]
metrics: [bpd, bpd_iw, intrinsic_dim, linear_probe]
battery: {iw_samples: 2}
thresholds: [{metric: bpd_iw, max: 20}, {metric: linear_probe, min: 20}%s]
"""
RUN = ["run", "--model", "vae", "--preset", "smoke", "--dataset", "synthetic", "-q", "--grid", "0"]
BAD_FEATURES = "features: [{name: mine, file: nan.npz}]\n"  # scoring it fails: a NaN in the representations

# (id, thresholds and lines added to the suite, commands run after it, the command judged, its exit code, patterns
# of its output with {metric} the suite's own mean over its seeds, formatted as the line prints it)
SELECTION_CASES = [
    # the suite's intrinsic dimension (8 on these bars) fails max 6; one with id_threshold 0.5 (3) would pass it
    ("check-after-a-run-with-another-id-threshold", (", {metric: intrinsic_dim, max: 6}", ""),
     [RUN + ["--metrics", "intrinsic_dim", "--id-threshold", "0.5"]], ["check"], 1,
     [r"REGRESSION intrinsic_dim vae \(synthetic/smoke\): {intrinsic_dim} \(mean of seeds 0, 1\), threshold <= 6"]),
    ("check-after-an-eval-with-other-probe-seeds", ("", ""),
     [["eval", "--run", "{seed0}", "--metrics", "linear_probe", "--probe-seeds", "2"]], ["check"], 1,
     [r"MISSING  linear_probe of vae / synthetic / smoke / seed 0: no run of its configuration measured it with the "
      r"suite's settings \(probe_seeds=1, linear_method=linearsvc, probe_protocol=fixed, version 2 of its code\)"]),
    ("check-after-a-seed-1-run-of-bpd-alone", ("", ""), [RUN + ["--seed", "1", "--metrics", "bpd"]], ["check"], 0,
     [r"ok  linear_probe vae \(synthetic/smoke\): {linear_probe} \(mean of seeds 0, 1\), threshold >= 20",
      r"ok  bpd_iw vae \(synthetic/smoke\): {bpd_iw} \(mean of seeds 0, 1\)"]),
    ("report-after-a-run-with-other-settings", ("", ""), [RUN + ["--metrics", "bpd,mutual_info"]],
     ["report", "--suite", "{suite}"], 0,  # bpd from the suite's runs; mutual_info the suite does not measure
     [r"\| vae +\| synthetic +\| smoke +\| 2 +\| {bpd} ± [0-9.]+ +\| — +\|"]),
    ("report-after-an-eval-with-other-probe-seeds", ("", ""),  # linear_probe of seed 1 alone is no mean of 2 seeds
     [["eval", "--run", "{seed0}", "--metrics", "linear_probe", "--probe-seeds", "2"]],
     ["report", "--suite", "{suite}"], 0,  # Table 2: bpd, mutual_info, intrinsic_dim, nonlinear, linear, k-NN
     [r"(?m)^\| vae +\| synthetic +\| smoke +\| 2 +\| {bpd} ± [0-9.]+ +\| — +\| [0-9.]+ ± [0-9.]+ +\| — +\| — +\| — +\|$"]),
    # the issue's own example: an ad-hoc run with another --iw-samples never stands in for the suite's bpd_iw
    ("check-after-a-run-with-other-iw-samples", ("", ""), [RUN + ["--metrics", "bpd_iw", "--iw-samples", "5"]],
     ["check"], 0, [r"ok  bpd_iw vae \(synthetic/smoke\): {bpd_iw} \(mean of seeds 0, 1\), threshold <= 20",
                    r"ok  linear_probe vae \(synthetic/smoke\): {linear_probe} \(mean of seeds 0, 1\)"]),
    # a value measured by an older version of its metric's code is no more the suite's than one of other settings
    ("check-after-a-metric-version-bump", ("", ""), [lambda results, seed0: old_version(results / "runs" / seed0)],
     ["check"], 1, [r"MISSING  linear_probe of vae / synthetic / smoke / seed 0: .*version 2 of its code\)"]),
    # class 2: a failed features cell is a failing check, not a silent pass
    ("check-names-a-failed-features-cell", ("", BAD_FEATURES), [["suite", "{suite}", "-q"]], ["check"], 1,
     [r"MISSING  mine / external / features from nan.npz: no finished run"]),
]


def old_version(folder: Path) -> None:
    """A record as the linear probe's version 1 left it (the registry holds version 2)."""
    record = json.loads((folder / "metrics.json").read_text())
    record["measured_with"]["linear_probe"]["version"] = 1
    (folder / "metrics.json").write_text(json.dumps(record))


@pytest.fixture(scope="module")
def gate_suite(tmp_path_factory):
    import numpy as np
    tmp = tmp_path_factory.mktemp("gate")
    (tmp / "gate.yaml").write_text(GATE_SUITE % "")
    out = CliRunner().invoke(cli, ["suite", str(tmp / "gate.yaml"), "-q", "--results-dir", str(tmp / "results")])
    assert out.exit_code == 0, out.output
    records = [json.loads(p.read_text()) for p in sorted((tmp / "results").glob("runs/*/metrics.json"))]
    means = {m: np.mean([r["metrics"][m] for r in records])
             for m in ("bpd", "bpd_iw", "intrinsic_dim", "linear_probe")}
    return tmp, {"bpd": f"{means['bpd']:.3f}", "bpd_iw": f"{means['bpd_iw']:.3f}",
                 "intrinsic_dim": f"{means['intrinsic_dim']:.2f}", "linear_probe": f"{means['linear_probe']:.2f}"}


@pytest.mark.parametrize("case", SELECTION_CASES, ids=[c[0] for c in SELECTION_CASES])
def test_check_and_report_take_only_what_the_suite_measured(case, gate_suite, tmp_path):
    import re
    import shutil
    import numpy as np
    name, extra, steps, judged, code, patterns = case
    made, means = gate_suite
    results = tmp_path / "results"
    shutil.copytree(made / "results", results)
    suite = tmp_path / "gate.yaml"
    suite.write_text(GATE_SUITE % extra[0] + extra[1])
    np.savez(tmp_path / "nan.npz", train=np.full((8, 2), np.nan), train_y=np.arange(8) % 2, test=np.ones((4, 2)),
             test_y=np.arange(4) % 2)
    seed0 = next(p.name for p in (results / "runs").iterdir() if "-s0-" in p.name)
    fill = {"suite": str(suite), "seed0": seed0}
    for step in steps:
        if callable(step):
            step(results, seed0)
        else:
            CliRunner().invoke(cli, [a.format(**fill) for a in step] + ["--results-dir", str(results)])
    args = [a.format(**fill) for a in judged] + ([str(suite)] if judged == ["check"] else [])
    out = CliRunner().invoke(cli, args + ["--results-dir", str(results)])
    assert out.exit_code == code, out.output
    for pattern in patterns:
        assert re.search(pattern.format(**{k: re.escape(v) for k, v in means.items()}), out.stdout), out.output


# Class 3: the local store survives two processes. (id, command lines started together, how far apart in seconds)
TOGETHER_CASES = [
    ("three-runs-on-a-fresh-store", [SMOKE + ["--seed", str(s)] for s in range(3)], 0.0),
    ("two-suites-a-second-apart", [["suite", "{suite}", "-q"]] * 2, 1.0),
]


@pytest.mark.parametrize("case", TOGETHER_CASES, ids=[c[0] for c in TOGETHER_CASES])
def test_processes_started_together_share_the_store_and_train_each_cell_once(case, tmp_path):
    """Every run is in the store with `mlflow_sync: done` said only of runs it has, and a cell is trained once."""
    name, commands, apart = case
    (tmp_path / "s.yaml").write_text("name: two\nlearners: [vae]\ndatasets: [synthetic]\npresets: [smoke]\n"
                                     "metrics: [bpd]\nthresholds: [{metric: bpd, max: 20}]\n")
    results = tmp_path / "r"
    procs = []
    for command in commands:
        args = [a.replace("{suite}", str(tmp_path / "s.yaml")) for a in command] + ["--results-dir", str(results)]
        procs.append(subprocess.Popen([sys.executable, "-m", "repbench.cli", *args], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
        time.sleep(apart)
    outs = [p.communicate(timeout=600) for p in procs]
    assert all("Traceback" not in err for _, err in outs), outs
    states = [json.loads(p.read_text()) for p in results.glob("runs/*/run.json")]
    cells = {s["name"] for s in states}
    suites = commands[0][0] == "suite"
    assert len(states) == len(cells) == (1 if suites else len(commands)), [s["name"] for s in states]
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    for state in states:
        assert state["status"] == "FINISHED" and state["mlflow_sync"] == "done", state
        assert client.get_run(state["mlflow_run_id"]).info.status == "FINISHED"
    if suites:  # the later suite found the cell trained or training: BUSY or REUSED, never twice
        assert sorted(p.returncode for p in procs) in ([0, 0], [0, 1]), outs


# Class 4: a full disk at any moment is one error line (and at most the one warning that MLflow missed the run),
# and run.json and MLflow agree. test_a_full_disk_fails_the_run_in_one_line_and_every_record_says_so fills the disk
# at the first checkpoint; these sizes fill it while the store is being created (an empty one is about 1 MB).
@pytest.mark.parametrize("size", ["40k"])
def test_a_disk_full_at_any_moment_is_one_line(tmp_path, size):
    disk = mounted(tmp_path, "disk", f"size={size}")
    try:
        out = subprocess.run([sys.executable, "-m", "repbench.cli", *SMOKE, "-o", "hidden=400", "--results-dir",
                              str(disk)], capture_output=True, text=True, timeout=300)
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error: ")]
        assert out.returncode == 2 and len(errors) == 1 and "No space left on device" in errors[0], out.stderr[-3000:]
        assert len(lines) <= 2 and all(line.startswith(("error: ", "warning: MLflow")) for line in lines), lines
        for path in disk.glob("runs/*/run.json"):
            state = json.loads(path.read_text())
            assert state["status"] == "FAILED" and "No space left" in state["error"], state
            if state.get("mlflow_run_id"):
                run = MlflowClient(f"sqlite:///{disk / 'mlflow.db'}").get_run(state["mlflow_run_id"])
                assert run.info.status == "FAILED" or state["mlflow_sync"] == "pending", state
            else:
                assert state["mlflow_sync"] == "pending", state
    finally:
        subprocess.run(["umount", "--lazy", str(disk)], check=True)


# Class 6: a SIGTERM that lands once the command has printed its output exits 130 like one before it.
# (id, Python run after the command returns: as the command's SystemExit unwinds, or at interpreter exit)
LATE_STOPS = [
    ("while-exiting", "try:\n    main()\nfinally:\n    os.kill(os.getpid(), signal.SIGTERM); time.sleep(1)\n"),
    ("at-interpreter-exit", "atexit.register(lambda: (os.kill(os.getpid(), signal.SIGTERM), time.sleep(1)))\n"
                            "main()\n"),
]


@pytest.mark.parametrize("case", LATE_STOPS, ids=[c[0] for c in LATE_STOPS])
def test_a_sigterm_after_the_final_output_exits_130(case):
    name, code = case
    script = "import atexit, os, signal, sys, time\nfrom repbench.cli import main\nsys.argv = ['repbench', 'ls']\n" + code
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 130 and "Traceback" not in out.stderr, (out.returncode, out.stderr[-2000:])
    assert "Learners" in out.stdout  # the output came first, whole

"""Runs land in a real MLflow store: a SQLite file, or a real `mlflow server` over HTTP on 127.0.0.1."""
import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from repbench.measure.battery import BatteryConfig
from repbench.runs.runner import RunSpec, run

from mlflow_server import free_port, start_server


def smoke_spec(results_dir, **kw):
    base = dict(learner="lpvae", options={"h": 1, "epochs": 2}, dataset="synthetic", preset="smoke",
                results_dir=results_dir, progress=False, grid=4,
                battery=BatteryConfig(probe_seeds=1, iw_samples=3, test_samples=5, nonlinear_epochs=2))
    return RunSpec(**{**base, **kw})


def check_logged_run(client: MlflowClient, record: dict):
    r = client.get_run(record["mlflow_run_id"])
    assert r.info.status == "FINISHED" and r.info.run_name == record["name"]
    p = r.data.params
    assert p["learner"] == "lpvae" and p["options.h"] == "1" and p["preset"] == "smoke" and p["dataset"] == "synthetic"
    assert p["model_config.width"] == "16" and p["train_config.epochs"] == "2" and "env.git_commit" in p
    assert p["env.torch"] and p["seed"] == "0" and p["env.cpu_features"] and p["env.torch_build"]
    assert r.data.tags["learner"] == "lpvae" and r.data.tags["display_name"] == "lpvae-h1"
    for name in ("bpd", "mutual_info", "cond_entropy"):
        assert r.data.metrics[name] == pytest.approx(record["metrics"][name])
    history = client.get_metric_history(r.info.run_id, "test_loss")
    assert sorted(m.step for m in history) == [1, 2]
    arts = {a.path for a in client.list_artifacts(r.info.run_id)}
    assert {"checkpoint.pt", "metrics.json", "samples.png", "run.json", "spectrum.png", "probes.png"} <= arts
    check_shown_as_mlflow_shows_runs(r)


def check_shown_as_mlflow_shows_runs(r):
    """The runs list's Source / Version and Dataset columns are filled; who ran it and when are tags, so the compare
    view's plots offer configuration only; parameters read as values, not Python reprs."""
    from repbench.learners import create_learner
    from repbench.data import load_dataset
    from repbench.runs.tracking import PROCESS_KEYS
    p, t = r.data.params, r.data.tags
    assert t["mlflow.source.name"] == "repbench" and t["mlflow.source.type"] == "LOCAL"
    assert t.get("mlflow.source.git.commit", "unknown") == p["env.git_commit"]
    assert not [k for k in p if k.removeprefix("env.") in PROCESS_KEYS], sorted(p)
    assert t["env.pid"].isdigit() and t["env.started_at"] and t["env.hostname"]
    assert p["image_shape"] == "[1, 12, 12]" and not [v for v in p.values() if v.startswith("(")]
    (used,) = r.inputs.dataset_inputs
    learner = create_learner("lpvae", h=1, epochs=2, preset="smoke", image_shape=(1, 12, 12))
    data = load_dataset("synthetic").limit(*learner.data_limits())
    assert used.dataset.name == "synthetic" and used.dataset.digest == data.describe()["digest"]
    assert json.loads(used.dataset.profile)["train_images"] == len(data.train_x)
    assert [(tag.key, tag.value) for tag in used.tags] == [("mlflow.data.context", "training")]


def test_run_logs_to_local_sqlite_store(results_dir):
    record = run(smoke_spec(results_dir))
    assert (results_dir / "mlflow.db").exists()
    check_logged_run(MlflowClient(f"sqlite:///{results_dir / 'mlflow.db'}"), record)
    on_disk = json.loads((Path(record["folder"]) / "metrics.json").read_text())
    assert on_disk["metrics"] == record["metrics"] and on_disk["units"]["bpd"]["unit"] == "bits/dim"
    png = (Path(record["folder"]) / "samples.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_one_copy_of_the_checkpoint_per_store_and_the_experiment_opens_on_its_runs(results_dir):
    import torch
    record = run(smoke_spec(results_dir))
    client = MlflowClient(f"sqlite:///{results_dir / 'mlflow.db'}")
    r = client.get_run(record["mlflow_run_id"])
    ours = Path(record["folder"]) / "checkpoint.pt"
    logged = Path(r.info.artifact_uri.removeprefix("file://")) / "checkpoint.pt"
    assert logged.exists() and ours.stat().st_ino == logged.stat().st_ino  # a hard link, not a copy
    state = torch.load(ours, weights_only=True)
    assert state["finished"] and "optimizer" not in state and "model" in state  # weights only once finished
    exp = client.get_experiment(r.info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert exp.tags["repbench.unit.mutual_info"] == "nats (no better direction)"
    assert exp.tags["repbench.unit.bpd"] == "bits/dim (lower is better)"
    assert not [t for t in r.data.tags if t.startswith("unit.")]
    p = r.data.params
    assert p["battery.probe_seeds"] == "1" and p["battery.iw_samples"] == "3" and p["battery.linear_method"] == \
        "linearsvc" and p["battery.nonlinear_epochs"] == "2" and p["battery.test_samples"] == "5"
    assert json.loads(r.data.tags["measured_with.bpd"]) == {"elbo_samples": 3, "version": 1}


def test_tracking_failure_keeps_the_results(results_dir):
    with pytest.warns(RuntimeWarning, match="MLflow tracking .* failed"):
        record = run(smoke_spec(results_dir, tracking_uri="sqlite:////proc/no/such/dir/mlflow.db"))
    assert record["status"] == "FINISHED" and record["tracking_error"] and record["mlflow_run_id"] is None
    saved = json.loads((Path(record["folder"]) / "metrics.json").read_text())
    assert saved["metrics"]["bpd"] == record["metrics"]["bpd"] > 0


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    proc = start_server(tmp_path, port)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=30)


@pytest.mark.slow
def test_a_test_server_stops_with_every_process_it_started(tmp_path):
    """`mlflow server` runs uvicorn and a job runner with its consumers; stopping the parent alone (as a start
    that timed out did) left them serving for hours."""
    from mlflow_server import server_processes, stop_mlflow_server
    proc = start_server(tmp_path, free_port())
    try:
        started = server_processes(proc)
    finally:
        stop_mlflow_server(proc)
    assert len(started) > 2, started  # the parent, uvicorn, the job runner: something that could be left
    assert server_processes(proc) == [] and proc.returncode is not None


@pytest.mark.slow
def test_run_logs_to_a_real_mlflow_server(mlflow_server, results_dir):
    record = run(smoke_spec(results_dir, tracking_uri=mlflow_server))
    assert record["tracking_error"] is None
    check_logged_run(MlflowClient(mlflow_server), record)
    assert not (results_dir / "mlflow.db").exists()
    import re
    from repbench.cli import run_link  # the link `repbench run` prints opens the model-training views
    assert re.fullmatch(rf": {mlflow_server}/#/experiments/\d+/runs/{record['mlflow_run_id']}"
                        rf"\?workflowType=machine_learning", run_link(record["mlflow_run_id"], mlflow_server))


def test_a_dataset_insert_refused_once_is_tried_again(results_dir, monkeypatch):
    # two cells that log the same new dataset at once: the store refuses the second insert (a unique constraint)
    from repbench.runs.tracking import MLflowTracker
    tracker = MLflowTracker(f"sqlite:///{results_dir / 'mlflow.db'}", "race", results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    tracker._connect()
    real, calls = tracker.client.log_inputs, []

    def refused_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("UNIQUE constraint failed: datasets.experiment_id, datasets.name, datasets.digest")
        return real(*args, **kwargs)
    monkeypatch.setattr(tracker.client, "log_inputs", refused_once)
    dataset = {"name": "synthetic", "digest": "abc123", "profile": {"train": 600}}
    run_id = tracker.start("cell", {"seed": 0}, {}, dataset=dataset)
    assert run_id is not None and tracker.error is None and len(calls) == 2
    (logged,) = MlflowClient(tracker.uri).get_run(run_id).inputs.dataset_inputs
    assert (logged.dataset.name, logged.dataset.digest) == ("synthetic", "abc123")

"""Ray's overhead per cell, in one run on one machine: the same suite with the local executor and with `--ray`.

    python benchmarks/cluster.py [--suite benchmarks/smoke.yaml] [--nodes 2] [--json out.json]

Starts an `mlflow server` and a Ray cluster of `--nodes` one-CPU nodes, all on 127.0.0.1, and stops them at the
end. Both executors run every cell afresh (--rerun), two at a time (--jobs 2 locally, two one-CPU nodes on Ray),
against the same server. Reported:
- wall_s: the whole `repbench suite` command, start to exit (includes its imports and the cluster connection);
- start_s: for the first cells to start (as many as run at once), seconds from the command's start to the cell's
  MLflow run being created, which is the moment its training begins (data loaded, model built);
- the differences, Ray minus local: what a cell pays for being a Ray task on this machine.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from repbench.errors import RepbenchError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test suite's server helper
from mlflow_server import free_port, start_mlflow_server  # noqa: E402


def start_server(folder: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    try:
        return start_mlflow_server(folder, port), f"http://127.0.0.1:{port}"
    except RepbenchError as exc:
        raise SystemExit(str(exc)) from None


def timed_suite(args: list[str], server: str, tag: str) -> tuple[float, float]:
    """Run `repbench suite ...`; return (epoch time it started, wall seconds)."""
    started = time.time()
    out = subprocess.run([sys.executable, "-m", "repbench.cli", "suite", *args, "--tracking-uri", server, "--rerun",
                          "-q"], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"the suite failed ({tag}):\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    return started, time.time() - started


def start_delays(server: str, suite_name: str, since: float, first: int) -> list[float]:
    """Seconds from `since` to the creation of the first `first` runs of the suite started after it."""
    from mlflow.tracking import MlflowClient
    client = MlflowClient(server)
    exp = client.get_experiment_by_name("repbench")
    runs = client.search_runs([exp.experiment_id], f"tags.suite = '{suite_name}'")
    starts = sorted(r.info.start_time / 1000 - since for r in runs if r.info.start_time / 1000 >= since)
    return starts[:first]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default=str(Path(__file__).with_name("smoke.yaml")))
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep the loopback address (cluster.py)
    from ray.cluster_utils import Cluster
    from repbench.suites.schema import load_suite
    name = load_suite(args.suite).name
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        server_proc, server = start_server(tmp)
        local = dict(node_ip_address="127.0.0.1", include_dashboard=False)
        cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=1, node_name="node0", **local))
        try:
            for i in range(1, args.nodes):
                cluster.add_node(num_cpus=1, node_name=f"node{i}", **local)
            t_local, wall_local = timed_suite([args.suite, "--jobs", str(args.nodes), "--results-dir",
                                               str(tmp / "local")], server, "local")
            starts_local = start_delays(server, name, t_local, args.nodes)
            t_ray, wall_ray = timed_suite([args.suite, "--ray", cluster.address, "--results-dir", str(tmp / "head")],
                                          server, "ray")
            starts_ray = start_delays(server, name, t_ray, args.nodes)
        finally:
            cluster.shutdown()
            server_proc.terminate()
            server_proc.wait(timeout=60)
    result = {"suite": args.suite, "nodes": args.nodes, "cpu_count": os.cpu_count(),
              "local": {"wall_s": wall_local, "start_s": starts_local},
              "ray": {"wall_s": wall_ray, "start_s": starts_ray},
              "ray_minus_local": {"wall_s": wall_ray - wall_local,
                                  "start_s": statistics.median(starts_ray) - statistics.median(starts_local)}}
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()

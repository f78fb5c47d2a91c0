"""A real `mlflow server` for tests and benchmarks: started on 127.0.0.1 with its store in a folder, and stopped
with every process it started. Test code, kept out of the installed package."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from repbench.errors import RepbenchError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mlflow_server(folder: Path, port: int, timeout_s: float = 180) -> subprocess.Popen:
    """A real `mlflow server` on 127.0.0.1:port with artifact proxying, its store in `folder`; the caller stops
    it (terminate, wait). RepbenchError if the mlflow command is missing or the server does not come up."""
    mlflow = shutil.which("mlflow")
    if mlflow is None:
        raise RepbenchError("the mlflow command is not on PATH")
    proc = subprocess.Popen([mlflow, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                             "--backend-store-uri", f"sqlite:///{Path(folder) / 'server.db'}",
                             "--artifacts-destination", str(Path(folder) / "server-artifacts")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200:
                return proc
        except OSError:
            time.sleep(0.5)
        if proc.poll() is not None:
            stop_mlflow_server(proc)
            raise RepbenchError(f"mlflow server exited: {proc.stderr.read().decode()[-2000:]}")
    stop_mlflow_server(proc)  # killing `mlflow server` alone would leave its uvicorn and job runner serving
    raise RepbenchError(f"mlflow server did not come up within {timeout_s:.0f} s")


def stop_mlflow_server(proc: subprocess.Popen, timeout_s: float = 30) -> None:
    """Stop a server from start_mlflow_server with every process it started (its own session): SIGTERM, then
    SIGKILL to whatever is left after `timeout_s`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.time() + timeout_s
        while server_processes(proc) and time.time() < deadline:
            time.sleep(0.2)
        if not server_processes(proc):
            break
    proc.wait(timeout=timeout_s)


def server_processes(proc: subprocess.Popen) -> list[int]:
    """The live (not zombie) processes of the session that start_mlflow_server started `proc` in."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended while we looked
        if fields[0] != "Z" and int(fields[3]) == proc.pid:  # state, then ppid, pgrp, session
            live.append(int(stat.parent.name))
    return live


def start_server(tmp_path: Path, port: int) -> subprocess.Popen:
    """start_mlflow_server for a test: skipped where mlflow is missing, failed with its message."""
    import pytest
    if shutil.which("mlflow") is None:
        pytest.skip("the mlflow command is not on PATH")
    try:
        return start_mlflow_server(tmp_path, port)
    except RepbenchError as exc:
        pytest.fail(str(exc))

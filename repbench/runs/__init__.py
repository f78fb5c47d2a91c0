"""Stage 4, one run and its record: runner.py (plan, train or complete, measure, record), records.py (names,
configuration keys, folders, run.json), recording.py (folder, run.json and MLflow kept in agreement), measured.py
(what a record holds, measured with which settings), tracking.py (MLflow), outside.py (representations made
elsewhere)."""
from .measured import missing_metrics
from .records import RunBusy, find_finished, run_prefix
from .tracking import (MLflowTracker, cell_runs, connect, default_tracking_uri, download, interrupt_on_sigterm,
                       is_remote, reconcile, unreachable)
from .recording import PROGRESS, Recorder
from .runner import RunSpec, evaluate_saved, resolve_device, run
from .outside import evaluate, evaluate_features

__all__ = ["missing_metrics", "RunBusy", "find_finished", "run_prefix", "MLflowTracker",
           "cell_runs", "connect", "default_tracking_uri", "download", "interrupt_on_sigterm", "is_remote",
           "reconcile", "unreachable", "PROGRESS", "Recorder", "RunSpec", "evaluate_saved", "resolve_device", "run",
           "evaluate", "evaluate_features"]

"""Stage 4, one run and its record: runner.py (plan, train or complete, measure, record), record.py (RunRecord:
metrics.json as one type, what it holds and with which settings), records.py (names, configuration keys, folders,
process liveness), recording.py (folder, run.json and MLflow kept in agreement), tracking.py (MLflow), outside.py
(representations made elsewhere, scored and recorded as a run)."""
from .record import Measured, RunRecord, read_record, trusted_metrics, unconverged
from .records import RunBusy, find_finished, finished_folders, run_prefix
from .tracking import (MLflowTracker, cell_runs, connect, default_tracking_uri, download, interrupt_on_sigterm,
                       is_remote, reconcile, unreachable)
from .recording import PROGRESS, Recorder
from .runner import RunSpec, evaluate_saved, resolve_device, run
from .outside import evaluate, evaluate_features

__all__ = ["Measured", "RunRecord", "read_record", "trusted_metrics", "unconverged", "RunBusy", "find_finished",
           "finished_folders", "run_prefix",
           "MLflowTracker", "cell_runs", "connect", "default_tracking_uri", "download", "interrupt_on_sigterm",
           "is_remote", "reconcile", "unreachable", "PROGRESS", "Recorder", "RunSpec", "evaluate_saved",
           "resolve_device", "run", "evaluate", "evaluate_features"]

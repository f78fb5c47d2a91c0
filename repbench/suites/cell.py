"""One cell of a suite: the RunSpec it runs (the same for a local process, a --jobs worker and a Ray task) and its
outcome, a failure recorded rather than raised."""
from __future__ import annotations

from pathlib import Path

from ..errors import RepbenchError
from ..measure import battery_for
from ..runs import RunBusy, RunSpec, run
from .schema import Cell, Suite


def cell_spec(suite: Suite, cell: Cell, results_dir: Path, rerun: bool, device: str, tracking_uri: str | None,
              data_root: str | None):
    # reused if finished, else continued from its last epoch if interrupted (Ctrl-C, a lost machine or session)
    return RunSpec(learner=cell.learner, options=cell.options, dataset=cell.dataset, preset=cell.preset,
                   seed=cell.seed, device=device, results_dir=Path(results_dir), tracking_uri=tracking_uri,
                   data_root=data_root, progress=False, reuse=not rerun, resume=False if rerun else "auto",
                   battery=battery_for(cell.preset, suite.battery), tags={"suite": suite.name})


def run_cell(cell: Cell, spec) -> dict:
    """One cell's outcome; a failure is recorded, never raised (Ctrl-C still stops everything). A cell whose run
    another live process is training is BUSY."""
    try:
        record = run(spec)
        return {"cell": cell, "status": record["status"], "record": record}
    except KeyboardInterrupt:
        raise
    except RunBusy as exc:  # another suite (another terminal) trains it now: left to that one, not repeated
        return {"cell": cell, "status": "BUSY", "error": str(exc)}
    except Exception as exc:
        return {"cell": cell, "status": "FAILED",
                "error": str(exc) if isinstance(exc, RepbenchError) else f"{type(exc).__name__}: {exc}"}

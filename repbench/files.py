"""Files a run leaves: one atomic writer for them all (run.json, metrics.json, checkpoints, the representation
cache, baselines), and its one error. A write goes to a temporary file beside the target and replaces it, so a
crash or a full disk never leaves half a file where a whole one was."""
from __future__ import annotations

import errno
import io
import json
import os
from pathlib import Path
from typing import Any

import torch

from .errors import RepbenchError


class WriteError(RepbenchError):
    """A file could not be written (a full disk, a read-only folder): the user's to fix, not a bug."""

    def __init__(self, path: Path, exc: OSError):
        super().__init__(f"cannot write {path}: {exc.strerror or exc}; free space (or choose another "
                         f"--results-dir) and run again: an interrupted run continues with --resume")
        self.errno = exc.errno


def write_atomic(path: Path, data: bytes | memoryview, make_parents: bool = False) -> None:
    """Write `data` to `path` through `<path>.tmp`; on failure the old file stays and the temporary goes."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        if make_parents:
            path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise WriteError(path, exc) from None


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save through memory and write_atomic: a full disk is a clear error (torch's own writer reports
    it as an obscure internal failure) and never leaves half a file behind."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomic(path, buffer.getbuffer(), make_parents=True)


def read_json(path: Path) -> dict:
    """A JSON record, or {} if it is missing or unreadable (a half-written file counts as missing)."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def write_json(path: Path, obj: Any) -> None:
    """Write atomically; a full disk or a read-only folder is a one-line error and leaves the old file. On a full
    disk a record that exists is rewritten in place instead (it fits in the blocks it frees): a run's end must
    reach its run.json even when the disk filled first."""
    data = json.dumps(obj, indent=2, default=str).encode()
    try:
        write_atomic(path, data)
    except WriteError as exc:
        if exc.errno != errno.ENOSPC or not Path(path).exists():
            raise
        try:
            with open(path, "r+b") as f:
                f.truncate(0)
                f.write(data)
        except OSError:
            raise exc from None

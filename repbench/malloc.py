"""glibc's malloc, tuned for tensors: keep freed memory for reuse instead of handing it back to the system.

By default glibc serves allocations above a (dynamic, at most 32 MB) threshold with fresh mmap()s and returns
them on free, so a training step of the paper's width-256 head, whose activations are tens of MB, faults in
about a million fresh pages every step (measured: 1.16 million page faults and 3.7 s of kernel time out of
12.6 s). Raising the mmap and trim thresholds keeps those blocks in the heap: 0 faults per step. Done through
`mallopt` when a command starts (cli.main) and when a run starts (runs.runner.run), never on `import repbench`:
a library user's process is theirs to tune. `REPBENCH_MALLOC=system` leaves malloc alone, and a preloaded
jemalloc or tcmalloc is left in charge.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
LARGEST = 2 ** 31 - 1     # mallopt takes an int: anything larger than any tensor we allocate at once
TOP_PAD = 64 << 20        # grow the heap in 64 MB steps rather than page by page

_mode: str | None = None
SETTINGS = ("tuned", "system")  # the values of REPBENCH_MALLOC


def setting_error() -> str | None:
    """What is wrong with REPBENCH_MALLOC, for the CLI to say (it is read when a command starts)."""
    value = os.environ.get("REPBENCH_MALLOC", "tuned")
    return None if value in SETTINGS else f"REPBENCH_MALLOC must be 'tuned' or 'system', got '{value}'"


def tune() -> str:
    """Apply the tuning once per process; return what is in charge: 'glibc-tuned', 'system' (asked for, or not
    glibc), or 'preloaded:<library>'."""
    global _mode
    if _mode is not None:
        return _mode
    preload = os.environ.get("LD_PRELOAD", "")
    if os.environ.get("REPBENCH_MALLOC", "tuned") == "system":
        _mode = "system"
    elif "jemalloc" in preload or "tcmalloc" in preload:
        _mode = f"preloaded:{os.path.basename(preload.split(':')[0])}"
    else:
        _mode = "glibc-tuned" if _mallopt() else "system"
    return _mode


def _mallopt() -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # only glibc has this malloc to tune
        return all(libc.mallopt(option, value) == 1 for option, value in
                   ((M_MMAP_THRESHOLD, LARGEST), (M_TRIM_THRESHOLD, LARGEST), (M_TOP_PAD, TOP_PAD)))
    except (OSError, AttributeError):
        return False

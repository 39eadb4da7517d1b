"""The cores this process may use: what the engine's threads and the analysis's worker processes are planned by."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """Cores this process may run on: its affinity mask, which containers and taskset narrow
    (os.cpu_count where the platform has no affinity call)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def one_blas_thread() -> None:
    """Keep OpenBLAS (numpy's and SciPy's each) from starting a thread per core, for a command that
    runs a process per core itself (`chorus analyze`). Its threads spin ~0.1 s of CPU after every
    call they share, against the decode workers: ~3% of a run's CPU. Only takes effect before numpy
    is first imported; a value the user set is kept."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

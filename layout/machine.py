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

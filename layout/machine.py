"""The cores this process may use (what the engine's threads and the analysis's worker processes
are planned by), a process pool over them, and how a worker process ties its life to its parent's."""

from __future__ import annotations

import ctypes
import os
import signal
from concurrent.futures import ProcessPoolExecutor

from threadpoolctl import threadpool_limits

_PR_SET_PDEATHSIG = 1
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_KEPT_BYTES = 1 << 30


def usable_cores() -> int:
    """Cores this process may run on: its affinity mask, which containers and taskset narrow
    (os.cpu_count where the platform has no affinity call)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def keep_freed_memory() -> None:
    """Have glibc's malloc keep freed blocks of up to 1 GiB for reuse instead of handing them back
    to the kernel, for CPU training. By default every block over 32 MiB is mapped fresh and unmapped
    when freed, so each step's activations and gradients (the first conv block's alone are 84 MB a
    batch) are page-faulted in again and zeroed: a third of a birdcall step on a 2-core AVX2 host
    (0.29 s -> 0.20 s). The peak stays what a step needs; only its return to the kernel waits.
    Elsewhere than glibc, nothing."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, _KEPT_BYTES)
    mallopt(_M_TRIM_THRESHOLD, _KEPT_BYTES)


def one_blas_thread() -> None:
    """Keep OpenBLAS (numpy's and SciPy's each) from starting a thread per core, for a command that
    runs a process per core itself (`chorus analyze`). Its threads spin ~0.1 s of CPU after every
    call they share, against the decode workers: ~3% of a run's CPU. Only takes effect before numpy
    is first imported; a value the user set is kept."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def hold_blas_to_one_thread() -> None:
    """In a worker process of a set that runs one per core, with numpy already loaded (forked, or
    imported): hold its BLAS (and OpenMP) pools to one thread. Each pool's thread per core spun
    against the other workers: `chorus analyze` on a 2-hour folder 352x real time with them, ~800x
    without; features of the default training split 11-21 s with them, 4.5 s without."""
    threadpool_limits(1)


def worker_pool(workers: int | None = None) -> ProcessPoolExecutor:
    """A process pool of `workers` (default: one per usable core) for the data work (generation,
    features, degraded copies), each worker held to one BLAS thread."""
    return ProcessPoolExecutor(max_workers=workers or usable_cores(), initializer=hold_blas_to_one_thread)


def die_with_parent(sig: signal.Signals, parent: int) -> None:
    """Have the kernel send `sig` to this process when its parent dies, SIGKILL included (Linux's
    PR_SET_PDEATHSIG; elsewhere nothing: orphans remain possible). `parent` is the pid the caller
    knows its parent by: a parent that died before the call is found by the check after it.

    The signal follows the parent's thread that started this process, so use it only where that
    thread lives as long as the parent (a main thread, or the thread that also stops the child)."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return
    prctl(_PR_SET_PDEATHSIG, int(sig))
    if os.getppid() != parent:  # it died before the call above
        os.kill(os.getpid(), sig)

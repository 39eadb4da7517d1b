"""Handing freed heap memory back to the operating system.

Each request decodes and featurizes megabytes of audio in a worker thread and frees them again.
glibc serves most of those blocks from its arenas (its mmap threshold rises to the largest block
freed, up to 32 MB) and keeps the freed pages mapped, so the API worker's RSS crept upward under
a steady load while the Python objects it held stayed level (tracemalloc: ~38 MB throughout).
`malloc_trim(0)` returns every whole free page of every arena. Forcing large blocks to mmap
instead (MALLOC_MMAP_THRESHOLD_) would do the same per allocation, and halved /classify's
throughput here (page faults on every decode buffer): docs/benchmarks.md, "Memory".
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
from collections.abc import Callable

log = logging.getLogger("chorus.heap")


def malloc_trim() -> Callable[[], int] | None:
    """glibc's malloc_trim(0) as a callable (1: memory was released), or None where the C library has none (musl, macOS)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: int(trim(0))


async def trim_periodically(every_seconds: float, trim: Callable[[], int] | None = None) -> None:
    """Call `trim` (default: malloc_trim) every `every_seconds` until cancelled; nothing when it is 0 or there is no trim."""
    trim = trim or malloc_trim()
    if trim is None or every_seconds <= 0:
        log.info("heap trimming off (%s)", "no malloc_trim in this C library" if trim is None else "malloc_trim_seconds is 0")
        return
    while True:
        await asyncio.sleep(every_seconds)
        # Off the event loop: it walks every arena, taking each one's lock in turn.
        await asyncio.to_thread(trim)

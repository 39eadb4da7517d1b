"""Analysis-job windows behind interactive ones: two priority classes for one model, as Triton's
priority levels give.

Interactive calls keep BentoML's adaptive batching. Job windows wait here, in a queue of their own,
and reach the model two ways: up to `fill` of them ride along in each interactive batch (filling
it), and when no interactive batch is waiting the queue runs batches of at most `fill` job windows
on its own. One model run at a time holds the lock, so an interactive batch waits for at most one
small job batch, never for a job's backlog. Batching contract: the unit is one window; a job batch
holds at most `fill` windows; interactive batches grow by at most `fill`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

Run = Callable[[np.ndarray], np.ndarray]
"""windows [n, ...] -> rows [n, k]; blocking (ONNX Runtime)."""
BatchObserver = Callable[[int, int, float], None]
"""(interactive windows, job windows, seconds) of each model run."""


@dataclass
class _Request:
    windows: np.ndarray
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    rows: list[np.ndarray] = field(default_factory=list)
    taken: int = 0
    seconds: float = 0.0

    @property
    def remaining(self) -> int:
        return len(self.windows) - self.taken


class BackgroundWindows:
    def __init__(self, run: Run, fill: int, on_batch: BatchObserver | None = None):
        self._run = run
        self.fill = max(1, fill)
        self._on_batch = on_batch
        self._queue: deque[_Request] = deque()
        self._lock = threading.Lock()  # the queue
        self._model = threading.Lock()  # one model run at a time
        self._interactive_waiting = 0
        self._wake = threading.Event()
        self._runner: threading.Thread | None = None

    # Interactive batches (BentoML calls this from its batch thread)

    def interactive(self, windows: np.ndarray) -> tuple[np.ndarray, float]:
        """Rows of an interactive batch and the seconds its model run took (job windows filled in)."""
        taken: list[tuple[_Request, int, int]] = []
        with self._lock:
            self._interactive_waiting += 1
        try:
            with self._model:
                with self._lock:
                    self._interactive_waiting -= 1
                    taken = self._take(self.fill)
                job_windows = [request.windows[start : start + count] for request, start, count in taken]
                rows, seconds = self._timed(np.concatenate([windows, *job_windows]) if job_windows else windows)
        except Exception as exc:
            self._fail(taken, exc)
            raise
        if self._on_batch is not None:
            self._on_batch(len(windows), sum(count for _, _, count in taken), seconds)
        self._deliver(taken, rows[len(windows) :], seconds)
        return rows[: len(windows)], seconds

    # Job windows

    async def submit(self, windows: np.ndarray) -> tuple[np.ndarray, float]:
        """Rows of job windows, in order, once every one of them has run; and the model seconds they took."""
        request = _Request(windows, asyncio.get_running_loop().create_future(), asyncio.get_running_loop())
        if len(windows) == 0:
            return np.empty((0, 0), np.float32), 0.0
        with self._lock:
            self._queue.append(request)
            if self._runner is None or not self._runner.is_alive():
                self._runner = threading.Thread(target=self._run_jobs, name="chorus-job-windows", daemon=True)
                self._runner.start()
        self._wake.set()
        return await request.future  # cancelling it drops the windows not yet taken

    def _take(self, limit: int) -> list[tuple[_Request, int, int]]:
        """Up to `limit` queued job windows, oldest first (call with the queue lock)."""
        taken = []
        while self._queue and limit > 0:
            request = self._queue[0]
            if request.future.done():  # cancelled: nothing more of it runs
                self._queue.popleft()
                continue
            count = min(request.remaining, limit)
            taken.append((request, request.taken, count))
            request.taken += count
            limit -= count
            if request.remaining == 0:
                self._queue.popleft()
        return taken

    def _run_jobs(self) -> None:
        """Job batches on their own, only while no interactive batch waits for the model."""
        while True:
            with self._lock:
                idle = not self._queue
                if idle:
                    self._wake.clear()
            if idle:
                self._wake.wait()
                continue
            if self._interactive_waiting:  # the waiting interactive batch takes the model first
                time.sleep(0.001)
                continue
            with self._model:
                with self._lock:
                    taken = [] if self._interactive_waiting else self._take(self.fill)
                if not taken:
                    continue
                try:
                    rows, seconds = self._timed(np.concatenate([request.windows[start : start + count] for request, start, count in taken]))
                except Exception as exc:  # every job in this batch gets the error; the queue goes on
                    self._fail(taken, exc)
                    continue
            if self._on_batch is not None:
                self._on_batch(0, len(rows), seconds)
            self._deliver(taken, rows, seconds)

    def _timed(self, windows: np.ndarray) -> tuple[np.ndarray, float]:
        started = time.perf_counter()
        rows = self._run(windows)
        return rows, time.perf_counter() - started

    @staticmethod
    def _deliver(taken: list[tuple[_Request, int, int]], rows: np.ndarray, seconds: float) -> None:
        offset = 0
        for request, _, count in taken:
            request.rows.append(rows[offset : offset + count])
            request.seconds += seconds
            offset += count
            if request.taken == len(request.windows) and sum(len(r) for r in request.rows) == len(request.windows):
                request.loop.call_soon_threadsafe(_resolve, request.future, np.concatenate(request.rows), request.seconds)

    @staticmethod
    def _fail(taken: list[tuple[_Request, int, int]], exc: BaseException) -> None:
        for request, _, _ in taken:
            request.loop.call_soon_threadsafe(_reject, request.future, exc)


def _resolve(future: asyncio.Future, rows: np.ndarray, seconds: float) -> None:
    if not future.done():
        future.set_result((rows, seconds))


def _reject(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)

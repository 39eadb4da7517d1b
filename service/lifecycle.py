"""Graceful shutdown that keeps answering.

On SIGTERM uvicorn stops accepting at once, while the socket BentoML's supervisor holds keeps
queueing connections that are then reset; and the supervisor stops the engine in the same moment
as the API workers, so a request between two engine calls would lose its engine. A `Drain` takes
SIGTERM first: the process keeps serving, refuses new work with 503 + Retry-After (the API) or
keeps answering calls (the engine) until what is in flight is done or the grace runs out, and only
then hands the signal to uvicorn, which exits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

from layout.machine import die_with_parent

log = logging.getLogger("chorus.lifecycle")
Handler = Callable[[int, FrameType | None], Any]


def stop_with_the_server() -> None:
    """Have this BentoML worker sent SIGTERM (a drain, then exit) when the `bentoml serve` process
    that started it dies. BentoML starts each worker in a session of its own, so a `kill -9` of the
    server, or of its process group, or the OOM killer choosing it, left the workers running,
    holding the port (the next start failed: address in use), the models' memory and any job's
    lock. The server starts its workers from its main thread, which lives as long as it does."""
    die_with_parent(signal.SIGTERM, os.getppid())


class Activity:
    """Calls in progress (from the event loop and from worker threads alike): what an engine's drain waits on."""

    def __init__(self) -> None:
        self.active = 0
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        with self._lock:
            self.active += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.active -= 1


class Drain:
    def __init__(
        self,
        name: str,
        is_idle: Callable[[], Awaitable[bool]],
        grace_seconds: float,
        on_start: Callable[[], None] = lambda: None,
        poll_seconds: float = 0.05,
    ):
        """`is_idle` says when nothing is left in flight; `grace_seconds` bounds the wait; `on_start`
        runs when the drain begins (to start refusing new work)."""
        self.name = name
        self.draining = False
        self._is_idle = is_idle
        self._on_start = on_start
        self._grace = grace_seconds
        self._poll = poll_seconds
        self._task: asyncio.Task | None = None
        self._handed_over = False

    def install(self) -> None:
        """Take SIGTERM from whoever holds it now (uvicorn), from inside the running event loop."""
        loop = asyncio.get_running_loop()
        previous = signal.getsignal(signal.SIGTERM)

        def on_sigterm(sig: int, frame: FrameType | None) -> None:
            if self.draining:  # a second SIGTERM: stop waiting
                self._hand_over(previous, sig, frame)
                return
            self.draining = True
            loop.call_soon_threadsafe(self._start, previous, sig, frame)

        signal.signal(signal.SIGTERM, on_sigterm)

    def _start(self, previous: Any, sig: int, frame: FrameType | None) -> None:
        self._on_start()
        self._task = asyncio.get_running_loop().create_task(self._finish(previous, sig, frame))

    async def _finish(self, previous: Any, sig: int, frame: FrameType | None) -> None:
        started = time.monotonic()
        log.info("%s: draining before shutdown (at most %g s)", self.name, self._grace)
        idle = await self._is_idle()
        while not idle and time.monotonic() - started < self._grace:
            await asyncio.sleep(self._poll)
            idle = await self._is_idle()
        log.log(
            logging.INFO if idle else logging.WARNING,
            "%s: drained in %.1f s%s; shutting down",
            self.name,
            time.monotonic() - started,
            "" if idle else " (grace ran out with work in flight)",
        )
        self._hand_over(previous, sig, frame)

    def _hand_over(self, previous: Any, sig: int, frame: FrameType | None) -> None:
        """Pass the signal on, once: after a second SIGTERM the first drain's end must not pass it again."""
        if self._handed_over:
            return
        self._handed_over = True
        if callable(previous):
            previous(sig, frame)
        elif previous == signal.SIG_IGN:  # the process ignored SIGTERM before: it still does, once drained
            return
        else:  # SIG_DFL (or a handler set outside Python): nobody else wanted it, so leave as SIGTERM would have
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(signal.SIGTERM)

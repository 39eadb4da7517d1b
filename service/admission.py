"""Admission: a bounded number of requests in flight per API worker, a bounded number of bytes of
their bodies held in memory, and a deadline for each.

Past either bound a request is refused at once with 503 + Retry-After, never queued without end;
past its deadline it is cancelled (its engine work too) and answered 504. Work of its that runs on
a thread (off_loop) cannot be stopped from outside: its slot stays taken until that work ends, and
work that loops (decoding a recording block by block) asks `given_up()` between steps to end early.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import TypeVar

import anyio.to_thread

from service.errors import DeadlineExceeded, Overloaded, ShuttingDown
from service.metrics import Metrics

T = TypeVar("T")

_holding: ContextVar[_Outliving | None] = ContextVar("chorus_admission", default=None)
"""The current request's slot, as off_loop sees it (the request's tasks share it: gather's children too)."""

_gave_up: ContextVar[threading.Event | None] = ContextVar("chorus_gave_up", default=None)
"""Set, in an off_loop thread, once the request that started the thread has been cancelled."""


def given_up() -> bool:
    """True in an off_loop thread whose request was cancelled (deadline passed, client gone): work
    that loops asks between steps and ends early, which frees the slot it keeps. False elsewhere."""
    event = _gave_up.get()
    return event is not None and event.is_set()


def hold_body(size: int) -> None:
    """Count `size` more bytes of the current request's body as held in memory, until the request
    and the work it leaves on threads have ended: Overloaded (503) when that would pass the worker's
    max_body_bytes, with nothing counted. Bytes count as they arrive (check_body_room looks at a
    declared length first). Outside a request's slot, or after it, nothing."""
    holding = _holding.get()
    if holding is not None:
        holding.hold(size)


def check_body_room(size: int) -> None:
    """Overloaded (503) when `size` more bytes would not fit the worker's max_body_bytes now; nothing
    is counted. For a declared length before its body is read: a 503 then costs the client no
    upload, while a client that declares much and sends little (16 x 32 MiB declared, a byte every
    few seconds) holds no room it has not filled."""
    holding = _holding.get()
    if holding is not None and not holding.ended:
        holding.admission.refuse_body_past_room(size)


class Admission:
    def __init__(self, max_in_flight: int, retry_after: int, metrics: Metrics | None = None, max_body_bytes: int | None = None):
        self.max_in_flight = max_in_flight
        self.retry_after = retry_after
        self.in_flight = 0
        self.max_body_bytes = max_body_bytes
        """Bytes of request bodies the requests in flight may hold in memory at once (None: no bound)."""
        self.body_bytes = 0
        self.metrics = metrics
        self.closed = False
        """Set when the server drains before it stops: every new request is refused."""

    def _refuse_if_full(self) -> None:
        if self.closed:
            raise ShuttingDown(f"the server is shutting down; retry after {self.retry_after} s", self.retry_after)
        if self.in_flight >= self.max_in_flight:
            raise Overloaded(
                f"the server holds {self.in_flight} requests, its limit; retry after {self.retry_after} s",
                self.retry_after,
            )

    def refuse_body_past_room(self, size: int) -> None:
        if self.max_body_bytes is not None and self.body_bytes + size > self.max_body_bytes:
            raise Overloaded(
                f"the server holds {self.body_bytes} bytes of request bodies and this one would pass its limit of"
                f" {self.max_body_bytes} (CHORUS_MAX_BODY_BYTES_IN_FLIGHT); retry after {self.retry_after} s",
                self.retry_after,
            )

    def _change_body_bytes(self, size: int) -> None:
        self.body_bytes += size
        if self.metrics:
            self.metrics.body_bytes_in_flight.inc(size)

    def _take(self) -> None:
        self.in_flight += 1
        if self.metrics:
            self.metrics.in_flight.inc()

    def _give_back(self) -> None:
        self.in_flight -= 1
        if self.metrics:
            self.metrics.in_flight.dec()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        self._refuse_if_full()
        self._take()
        outliving = _Outliving(self)
        holding = _holding.set(outliving)
        try:
            yield
        finally:
            _holding.reset(holding)
            self._give_back()
            outliving.request_ended()

    @asynccontextmanager
    async def admitted(self, deadline_seconds: float) -> AsyncIterator[None]:
        """A slot (refused at once when none is free) for the whole of a request, body reading
        included, and its deadline: DeadlineExceeded once it passes."""
        async with self.slot():
            try:
                async with asyncio.timeout(deadline_seconds):
                    yield
            except TimeoutError:
                raise DeadlineExceeded(
                    f"the request did not finish within its deadline of {deadline_seconds:g} s",
                    deadline_seconds=deadline_seconds,
                ) from None


class _Abandoned(Exception):
    """Work whose request was cancelled before a thread took it up."""


class _Outliving:
    """A request's hold on its worker: the bytes of its body, and the threads it left running when it
    was cancelled. One slot stays taken while any of those runs (a /classify/batch of 16 files
    leaves up to 16, and takes one slot, as it did while it ran), and the body's bytes stay counted
    until the request and they have all ended: the threads may still read them."""

    def __init__(self, admission: Admission):
        self.admission = admission
        self.threads: set[asyncio.Future] = set()
        self.body_bytes = 0
        self.ended = False

    def hold(self, size: int) -> None:
        if self.ended:  # a task that outlived its request: what it holds is no longer the request's
            return
        self.admission.refuse_body_past_room(size)
        self.body_bytes += size
        self.admission._change_body_bytes(size)

    def _release_body(self) -> None:
        self.admission._change_body_bytes(-self.body_bytes)
        self.body_bytes = 0

    def request_ended(self) -> None:
        self.ended = True
        if not self.threads:
            self._release_body()

    def add(self, work: asyncio.Future) -> None:
        if not self.threads:
            self.admission._take()
        self.threads.add(work)
        work.add_done_callback(self._ended)

    def _ended(self, work: asyncio.Future) -> None:
        self.threads.discard(work)
        if not self.threads:
            self.admission._give_back()
            if self.ended:
                self._release_body()


async def off_loop(func: Callable[..., T], *args: object) -> T:
    """func(*args) on a worker thread, off the event loop. A thread cannot be stopped: when the
    caller is cancelled (its deadline passed, its client went away) it is answered at once, but the
    slot its request held stays taken until the thread ends. Otherwise a client that gives up on
    every request at once could keep any number of decodes running past max_in_flight (found:
    30 requests with a 50 ms deadline left 26 decode threads running, and slowed an honest
    request 15-fold). func may ask given_up() to end early."""
    abandoned = threading.Event()

    def unless_abandoned() -> T:
        # Work still waiting for a free thread when its request is cancelled never starts.
        if abandoned.is_set():
            raise _Abandoned
        _gave_up.set(abandoned)  # the thread runs in a copy of the caller's context: this stays in it
        return func(*args)

    work = asyncio.ensure_future(anyio.to_thread.run_sync(unless_abandoned))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        abandoned.set()
        outliving = _holding.get()
        if outliving is not None and not work.done():
            outliving.add(work)
        work.add_done_callback(_retrieved)
        raise


def _retrieved(work: asyncio.Future) -> None:
    """Read an abandoned thread's outcome, so asyncio does not log it as an error never retrieved."""
    if not work.cancelled():
        work.exception()

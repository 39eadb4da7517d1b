"""Admission: a bounded number of requests in flight per API worker, and a deadline for each.

Past the bound a request is refused at once with 503 + Retry-After, never queued without end;
past its deadline it is cancelled (its engine work too) and answered 504.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar

from service.errors import DeadlineExceeded, Overloaded, ShuttingDown
from service.metrics import Metrics

T = TypeVar("T")


class Admission:
    def __init__(self, max_in_flight: int, retry_after: int, metrics: Metrics | None = None):
        self.max_in_flight = max_in_flight
        self.retry_after = retry_after
        self.in_flight = 0
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

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        self._refuse_if_full()
        self.in_flight += 1
        if self.metrics:
            self.metrics.in_flight.inc()
        try:
            yield
        finally:
            self.in_flight -= 1
            if self.metrics:
                self.metrics.in_flight.dec()

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

"""The API workers' client to the engine process.

Models reach the engine only through an `EngineClient`: they name an engine method and get back
a callable. `BentoEngineClient` is the one over BentoML's service-to-service call; it coalesces
concurrent calls of a worker into one (service/engine/coalesce.py), counts the items in flight,
times the queue wait of calls that answer in `TimedRows`, and turns a lost engine connection
(shutdown, restart) into a 503 the client can retry instead of a 500.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import numpy as np

from service.engine.coalesce import Coalescer
from service.engine.contracts import TimedRows
from service.errors import EngineUnavailable
from service.metrics import Metrics

log = logging.getLogger("chorus.engine_client")
BatchCall = Callable[[np.ndarray], Awaitable[np.ndarray]]
"""items [n, ...] -> outputs [n, ...]; any n: the engine's batching merges calls."""
TimedCall = Callable[[np.ndarray], Awaitable[tuple[np.ndarray, float]]]
"""items [n, ...] -> (outputs [n, k], seconds the model ran on the batch that carried them)."""


@dataclass(frozen=True)
class EngineStatus:
    ready: bool
    error: str | None = None
    """Why the models failed to load; the engine will not become ready without a new export."""


class EngineClient(Protocol):
    """What the data plane and the model modules need from an engine, wherever it runs."""

    async def is_ready(self) -> bool:
        """True once every model is loaded and warmed up."""
        ...

    async def status(self) -> EngineStatus:
        """Whether the engine is ready and, when its models failed to load, why."""
        ...

    async def models(self) -> dict[str, dict[str, str]]:
        """Per store name: name, version, variant and provider of the model the engine serves."""
        ...

    def batched(self, method: str, model: str, max_items: int) -> BatchCall:
        """A batchable engine method; `max_items` is the most items of one call (the method's batch limit)."""
        ...

    def timed(self, method: str, model: str, max_items: int) -> TimedCall:
        """A batchable engine method that answers in TimedRows."""
        ...

    async def call(self, method: str, model: str, items: int, **kwargs: Any) -> np.ndarray:
        """A plain engine method; `items` is what the call puts in flight for `model`."""
        ...


class BentoEngineClient:
    def __init__(self, engine: Any, metrics: Metrics, retry_after_seconds: int):
        """`engine` is the handle `bentoml.depends(Engine)` gives the API service."""
        self._engine = engine
        self._metrics = metrics
        self._retry_after = retry_after_seconds

    async def is_ready(self) -> bool:
        return bool(await self._engine.is_ready(1))

    async def status(self) -> EngineStatus:
        async with self._reachable():
            answer = await self._engine.to_async.status()
        return EngineStatus(bool(answer["ready"]), answer.get("error"))

    async def models(self) -> dict[str, dict[str, str]]:
        async with self._reachable():
            return await self._engine.to_async.models()

    def batched(self, method: str, model: str, max_items: int) -> BatchCall:
        remote = getattr(self._engine.to_async, method)

        async def send(items: np.ndarray) -> np.ndarray:
            async with self._reachable():
                return await remote(items)

        coalesced = Coalescer(send, max_items)

        async def call(items: np.ndarray) -> np.ndarray:
            with self._pending(model, len(items)):
                return await coalesced(items)

        return call

    def timed(self, method: str, model: str, max_items: int) -> TimedCall:
        batched = self.batched(method, model, max_items)
        queue_wait = self._metrics.queue_wait_seconds.labels(model)

        async def call(items: np.ndarray) -> tuple[np.ndarray, float]:
            start = time.perf_counter()
            outputs, model_seconds = TimedRows.unpack(await batched(items))
            queue_wait.observe(max(0.0, time.perf_counter() - start - model_seconds))
            return outputs, model_seconds

        return call

    async def call(self, method: str, model: str, items: int, **kwargs: Any) -> np.ndarray:
        with self._pending(model, items):
            async with self._reachable():
                return await getattr(self._engine.to_async, method)(**kwargs)

    @contextlib.contextmanager
    def _pending(self, model: str, items: int) -> Iterator[None]:
        """Count items sent to the engine and not answered yet."""
        gauge = self._metrics.engine_queue.labels(model)
        gauge.inc(items)
        try:
            yield
        finally:
            gauge.dec(items)

    @contextlib.asynccontextmanager
    async def _reachable(self) -> AsyncIterator[None]:
        """A lost engine connection (shutdown, restart) is a 503 the client can retry, not a 500."""
        try:
            yield
        except (aiohttp.ClientError, ConnectionError) as exc:
            self._metrics.engine_lost.inc()
            log.warning("the engine is unreachable (%s: %s); answering 503 until it is back", type(exc).__name__, exc)
            raise EngineUnavailable(
                f"the inference engine is unavailable ({type(exc).__name__}); retry shortly", self._retry_after
            ) from exc

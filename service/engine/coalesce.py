"""Coalesce concurrent model calls of one API worker into one engine call while a call is in flight.

A /classify request makes one engine call per chunk of windows, a KServe frames-denoiser request
one per call. With many requests in flight, one HTTP call (and one pickled array) per request
costs the API worker more CPU than the model work it carries. Here a call goes out at once when
none is in flight (no added latency at low load); calls that arrive meanwhile are concatenated
(up to `max_items`) into the next one. The engine's adaptive batching
still merges calls across API workers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import numpy as np


class Coalescer:
    def __init__(self, call: Callable[[np.ndarray], Awaitable[np.ndarray]], max_items: int):
        self._call = call
        self._max_items = max_items
        self._queue: list[tuple[np.ndarray, asyncio.Future]] = []
        self._drainer: asyncio.Task | None = None  # held: the loop keeps only weak references to tasks

    async def __call__(self, items: np.ndarray) -> np.ndarray:
        future = asyncio.get_running_loop().create_future()
        self._queue.append((items, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        return await future

    def _take(self) -> list[tuple[np.ndarray, asyncio.Future]]:
        """Whole queued calls, oldest first, up to max_items (always at least one)."""
        taken: list[tuple[np.ndarray, asyncio.Future]] = []
        count = 0
        while self._queue and (not taken or count + len(self._queue[0][0]) <= self._max_items):
            items, future = self._queue.pop(0)
            if future.done():  # its request was cancelled (deadline): skip the work
                continue
            taken.append((items, future))
            count += len(items)
        return taken

    async def _drain(self) -> None:
        while self._queue:
            taken = self._take()
            if not taken:
                continue
            try:
                out = await self._call(np.concatenate([items for items, _ in taken]))
            except Exception as exc:  # every caller of this batch gets the error
                for _, future in taken:
                    if not future.done():
                        future.set_exception(exc)
                continue
            offset = 0
            for items, future in taken:
                if not future.done():
                    future.set_result(out[offset : offset + len(items)])
                offset += len(items)

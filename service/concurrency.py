"""Awaiting several pieces of one request together, failing as one."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def gather_or_cancel(*aws: Awaitable[T]) -> list[T]:
    """Results in order; on the first failure the others are cancelled and that error is raised.

    asyncio.gather would raise the first error yet leave the siblings running, spending engine
    time on an answer nobody will read. A TaskGroup cancels them but wraps the error in an
    ExceptionGroup, which the adapters' error mapping does not expect: unwrap the first one.
    """
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(_coroutine(a)) for a in aws]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [t.result() for t in tasks]


async def _coroutine(aw: Awaitable[T]) -> T:
    return await aw

"""Heap trimming: the C library's call is found, and the API worker's loop runs it on its period."""

from __future__ import annotations

import asyncio
import platform

import pytest

from service.heap import malloc_trim, trim_periodically


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_glibc_malloc_trim_is_found_and_runs() -> None:
    trim = malloc_trim()
    assert trim is not None
    assert trim() in (0, 1)


def test_the_loop_trims_on_its_period_until_cancelled() -> None:
    calls: list[int] = []

    async def run() -> None:
        loop, third = asyncio.get_running_loop(), asyncio.Event()

        def trim() -> int:  # runs in a worker thread
            calls.append(1)
            if len(calls) == 3:
                loop.call_soon_threadsafe(third.set)
            return 1

        task = asyncio.create_task(trim_periodically(0.01, trim))
        await third.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(run(), timeout=10))
    assert len(calls) >= 3


def test_a_zero_period_turns_trimming_off() -> None:
    calls: list[int] = []
    asyncio.run(asyncio.wait_for(trim_periodically(0, lambda: calls.append(1) or 1), timeout=10))
    assert calls == []

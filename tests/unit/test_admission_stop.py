"""given_up(): what a thread's work asks to end early when its request is cancelled."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from features import FrontEnd
from features.errors import AnalysisStopped
from service.admission import given_up, off_loop
from tests.conftest import encode

pytestmark = pytest.mark.anyio


def test_outside_off_loop_no_one_has_given_up():
    assert given_up() is False


async def test_a_thread_sees_its_request_give_up_and_only_then():
    started, seen = threading.Event(), []

    def work() -> None:
        seen.append(given_up())
        started.set()
        for _ in range(1000):
            if given_up():
                seen.append(True)
                return
            threading.Event().wait(0.005)

    task = asyncio.ensure_future(off_loop(work))
    await asyncio.to_thread(started.wait, 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(500):
        if len(seen) == 2:
            break
        await asyncio.sleep(0.01)
    assert seen == [False, True]
    assert await off_loop(given_up) is False  # a later request's thread starts afresh


def test_analysis_stops_after_the_windows_where_it_is_asked_to():
    recording = encode(np.zeros(16_000 * 60, np.float32), 16_000, "WAV")
    asked = []

    def stop() -> bool:
        asked.append(True)
        return len(asked) == 2

    with pytest.raises(AnalysisStopped):
        FrontEnd().analyze(recording, block_samples=16_000, stop=stop)
    assert len(asked) == 2
    assert len(FrontEnd().analyze(recording, block_samples=16_000, stop=lambda: False).windows) == 23  # 0, 2.5, ..., 55 s

"""Job windows behind interactive ones: right rows in the right order, small job batches, filled
interactive batches, cancellation."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from service.engine.background import BackgroundWindows


class Model:
    """Doubles each window's value; records each run's size; optionally slow."""

    def __init__(self, delay: float = 0.0):
        self.runs: list[int] = []
        self.delay = delay

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        self.runs.append(len(windows))
        time.sleep(self.delay)
        return windows[:, :1] * 2


def windows(values) -> np.ndarray:
    return np.asarray(values, np.float32).reshape(-1, 1)


def test_job_windows_run_in_small_batches_and_come_back_in_order():
    model = Model()
    lane = BackgroundWindows(model, fill=3)

    async def scenario():
        return await asyncio.gather(lane.submit(windows(range(7))), lane.submit(windows([100, 101])))

    (first, _), (second, _) = asyncio.run(scenario())
    np.testing.assert_array_equal(first[:, 0], np.arange(7) * 2)
    np.testing.assert_array_equal(second[:, 0], [200, 202])
    assert max(model.runs) <= 3 and sum(model.runs) == 9


def test_interactive_batches_take_at_most_fill_job_windows_along():
    model = Model(delay=0.05)
    lane = BackgroundWindows(model, fill=2)
    results: dict = {}

    async def scenario():
        job = asyncio.ensure_future(lane.submit(windows(range(10))))
        await asyncio.sleep(0.01)  # the job runner holds the model with its first batch
        interactive = await asyncio.to_thread(lane.interactive, windows([50, 51, 52]))
        results["interactive"] = interactive
        results["job"] = await job

    asyncio.run(scenario())
    rows, seconds = results["interactive"]
    np.testing.assert_array_equal(rows[:, 0], [100, 102, 104])
    assert seconds > 0
    np.testing.assert_array_equal(results["job"][0][:, 0], np.arange(10) * 2)
    assert 5 in model.runs  # the interactive batch: 3 windows + 2 job windows filled in
    assert all(run <= 5 for run in model.runs)


def test_a_cancelled_job_runs_no_further_windows():
    model = Model(delay=0.02)
    lane = BackgroundWindows(model, fill=2)

    async def scenario():
        job = asyncio.ensure_future(lane.submit(windows(range(40))))
        await asyncio.sleep(0.05)
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job
        await asyncio.sleep(0.1)

    asyncio.run(scenario())
    ran = sum(model.runs)
    time.sleep(0.1)
    assert ran == sum(model.runs) < 40  # nothing ran after the cancel settled


def test_a_failing_model_fails_the_jobs_of_that_batch_only():
    def flaky(batch: np.ndarray) -> np.ndarray:
        if batch[0, 0] == 0:
            raise RuntimeError("model broke")
        return batch * 2

    lane = BackgroundWindows(flaky, fill=1)

    async def scenario():
        return await asyncio.gather(lane.submit(windows([0])), lane.submit(windows([3])), return_exceptions=True)

    failed, ok = asyncio.run(scenario())
    assert isinstance(failed, RuntimeError) and ok[0][0, 0] == 6

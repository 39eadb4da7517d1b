"""The engine's step batcher: requests at different DDIM steps share batches and get exactly the
images the one-request loop gives; limits, deadlines, errors and cancellation."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from service.engine.ddim import ddim_sample
from service.engine.step_batching import SamplingTimeout, StepBatcher

ALPHAS = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
SHAPE = (3, 4, 4)


class FakeDenoiser:
    """Per-image arithmetic (no cross-image mixing), recording what each batch held."""

    def __init__(self, delay: float = 0.0, fail_at_call: int | None = None):
        self.batches: list[np.ndarray] = []
        self.delay = delay
        self.fail_at_call = fail_at_call

    def __call__(self, x_t: np.ndarray, t: np.ndarray) -> np.ndarray:
        self.batches.append(t.copy())
        if self.fail_at_call is not None and len(self.batches) == self.fail_at_call:
            raise RuntimeError("denoiser failed")
        time.sleep(self.delay)
        return (0.3 * x_t + (t / 1000.0)[:, None, None, None]).astype(np.float32)

    async def one_request(self, x_t: np.ndarray, t: np.ndarray) -> np.ndarray:
        return self(x_t, t)


def test_concurrent_requests_share_steps_and_match_the_single_request_loop():
    denoiser = FakeDenoiser(delay=0.002)
    requests = [(1, 5, 0), (2, 8, 1), (3, 20, 2), (1, 13, 3)]  # (count, steps, seed)

    async def scenario() -> list[np.ndarray]:
        batcher = StepBatcher(denoiser, ALPHAS, max_batch=8)

        async def later(delay: float, count: int, steps: int, seed: int) -> np.ndarray:
            await asyncio.sleep(delay)  # joins a batch already under way
            return await batcher.sample((count, *SHAPE), steps, seed, timeout_seconds=30)

        return await asyncio.gather(*(later(0.005 * i, *r) for i, r in enumerate(requests)))

    results = asyncio.run(scenario())
    reference = FakeDenoiser()
    for (count, steps, seed), images in zip(requests, results, strict=True):
        expected = asyncio.run(ddim_sample(reference.one_request, ALPHAS, (count, *SHAPE), steps, seed))
        np.testing.assert_allclose(images, expected, rtol=0, atol=1e-6)
    sizes = [len(t) for t in denoiser.batches]
    assert max(sizes) > 1 and max(sizes) <= 8
    assert any(len(np.unique(t)) > 1 for t in denoiser.batches), "no batch mixed requests at different steps"
    assert sum(sizes) == sum(count * steps for count, steps, _ in requests)  # every image-step ran once


def test_each_request_reports_its_wait_before_its_first_step():
    denoiser = FakeDenoiser(delay=0.02)
    waits: list[float] = []

    async def scenario() -> None:
        batcher = StepBatcher(denoiser, ALPHAS, max_batch=1, on_wait=waits.append)
        await asyncio.gather(*(batcher.sample((1, *SHAPE), 3, seed, 30) for seed in range(2)))

    asyncio.run(scenario())
    # One slot per tick: the second request waits for the first one's three steps.
    assert len(waits) == 2 and sorted(waits)[0] < 0.01 and sorted(waits)[1] >= 3 * 0.02 * 0.9


def test_a_tick_never_exceeds_max_batch_and_requests_keep_their_order():
    denoiser = FakeDenoiser(delay=0.001)

    async def scenario() -> None:
        batcher = StepBatcher(denoiser, ALPHAS, max_batch=4)
        await asyncio.gather(*(batcher.sample((n, *SHAPE), 5, n, 30) for n in (3, 4, 1, 2)))
        with pytest.raises(ValueError, match="at most 4 images"):
            await batcher.sample((5, *SHAPE), 5, 0, 30)

    asyncio.run(scenario())
    sizes = [len(t) for t in denoiser.batches]
    assert max(sizes) <= 4
    # The first request (3 images) runs first, with the 1-image request that fits beside it.
    assert sizes[0] == 4


def test_deadline_drops_a_request_and_the_others_finish():
    denoiser = FakeDenoiser(delay=0.01)

    async def scenario() -> None:
        batcher = StepBatcher(denoiser, ALPHAS, max_batch=8)
        short = asyncio.create_task(batcher.sample((1, *SHAPE), 200, 0, timeout_seconds=0.1))
        fine = asyncio.create_task(batcher.sample((1, *SHAPE), 20, 1, timeout_seconds=30))
        with pytest.raises(SamplingTimeout, match="deadline"):
            await short
        assert (await fine).shape == (1, *SHAPE)
        assert batcher.active_images == 0

    asyncio.run(scenario())
    assert sum(len(t) for t in denoiser.batches) < 200 + 20  # the expired request stopped early


def test_a_failed_tick_fails_its_requests_and_the_batcher_keeps_serving():
    denoiser = FakeDenoiser(fail_at_call=3)

    async def scenario() -> None:
        batcher = StepBatcher(denoiser, ALPHAS, max_batch=8)
        with pytest.raises(RuntimeError, match="denoiser failed"):
            await batcher.sample((2, *SHAPE), 10, 0, 30)
        assert (await batcher.sample((1, *SHAPE), 5, 0, 30)).shape == (1, *SHAPE)

    asyncio.run(scenario())


def test_a_cancelled_request_stops_costing_steps():
    denoiser = FakeDenoiser(delay=0.005)

    async def scenario() -> None:
        batcher = StepBatcher(denoiser, ALPHAS, max_batch=8)
        doomed = asyncio.create_task(batcher.sample((4, *SHAPE), 200, 0, 30))
        await asyncio.sleep(0.05)
        doomed.cancel()
        await batcher.sample((1, *SHAPE), 10, 1, 30)

    asyncio.run(scenario())
    assert sum(len(t) for t in denoiser.batches) < 4 * 200 / 2

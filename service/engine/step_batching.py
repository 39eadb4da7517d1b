"""Step-level continuous batching of DDIM sampling, run in the engine next to the denoiser.

Each tick runs the denoiser once over the images of every active request, each image at its own
step (the Unet takes one timestep per image). A request joins at the next tick and leaves after
its last step, so a short request never waits for a long one to finish and the batch stays full
under load; the API makes one engine call per /generate instead of one per DDIM step.

Batching contract: the unit is one image at one DDIM step; a tick holds at most `max_batch`
images, oldest requests first (a request's images always go together, so a request may hold at
most `max_batch` images). One tick runs at a time per engine process; the denoiser runs in a
worker thread so the event loop keeps taking requests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from service.engine.ddim import ddim_step, initial_noise, time_pairs, to_unit_range

# denoise(x_t [n, 3, H, W] float32, t [n] float32) -> v [n, 3, H, W]; blocking (ONNX Runtime).
SyncDenoise = Callable[[np.ndarray, np.ndarray], np.ndarray]
# on_tick(images in the batch, seconds the denoiser took)
TickObserver = Callable[[int, float], None]
# on_wait(seconds from a request's arrival to its first denoiser batch)
WaitObserver = Callable[[float], None]


class SamplingTimeout(TimeoutError):
    """A request passed its deadline before its last step; its images were dropped."""


@dataclass
class _Job:
    images: np.ndarray
    times: np.ndarray
    """The request's timesteps, T-1 down to -1 (one more entry than it has steps)."""
    future: asyncio.Future
    expires: float
    """Deadline in time.monotonic() seconds."""
    arrived: float = field(default_factory=time.monotonic)
    step: int = field(default=0)

    @property
    def count(self) -> int:
        return len(self.images)


class StepBatcher:
    def __init__(
        self,
        denoise: SyncDenoise,
        alphas_cumprod: np.ndarray,
        max_batch: int,
        on_tick: TickObserver | None = None,
        on_wait: WaitObserver | None = None,
    ):
        self._denoise = denoise
        self._alphas = alphas_cumprod
        self.max_batch = max_batch
        self._on_tick = on_tick
        self._on_wait = on_wait
        self._jobs: list[_Job] = []
        self._wake = asyncio.Event()
        self._runner: asyncio.Task | None = None

    @property
    def active_images(self) -> int:
        return sum(job.count for job in self._jobs)

    async def sample(self, shape: tuple[int, int, int, int], steps: int, seed: int, timeout_seconds: float) -> np.ndarray:
        """Images in [0, 1], float32 [n, C, H, W]; the same seed and steps give the same images as ddim_sample."""
        if shape[0] > self.max_batch:
            raise ValueError(f"a request may hold at most {self.max_batch} images (one batch), got {shape[0]}")
        pairs = time_pairs(len(self._alphas), steps)
        times = np.array([t for t, _ in pairs] + [pairs[-1][1]], dtype=np.int64)
        loop = asyncio.get_running_loop()
        job = _Job(initial_noise(shape, seed), times, loop.create_future(), time.monotonic() + timeout_seconds)
        self._jobs.append(job)
        self._wake.set()
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run(), name="chorus-step-batcher")
        return await job.future  # cancelling this drops the job at the next tick

    def _take(self) -> list[_Job]:
        """Drop finished, cancelled and expired jobs; then the oldest jobs that fit one batch."""
        now = time.monotonic()
        for job in self._jobs:
            if not job.future.done() and now > job.expires:
                job.future.set_exception(SamplingTimeout(f"sampling passed its deadline at step {job.step} of {len(job.times) - 1}"))
        self._jobs = [job for job in self._jobs if not job.future.done()]
        batch, count = [], 0
        for job in self._jobs:
            if count + job.count <= self.max_batch:
                batch.append(job)
                count += job.count
        return batch

    async def _run(self) -> None:
        while True:
            batch = self._take()
            if not batch:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._tick(batch)

    async def _tick(self, batch: list[_Job]) -> None:
        img = np.concatenate([job.images for job in batch])
        now_t = np.concatenate([np.full(job.count, job.times[job.step]) for job in batch])
        next_t = np.concatenate([np.full(job.count, job.times[job.step + 1]) for job in batch])
        if self._on_wait is not None:
            now = time.monotonic()
            for job in batch:
                if job.step == 0:
                    self._on_wait(now - job.arrived)
        started = time.perf_counter()
        try:
            v = await asyncio.to_thread(self._denoise, img, now_t.astype(np.float32))
            if self._on_tick is not None:
                self._on_tick(len(img), time.perf_counter() - started)
            stepped = ddim_step(img, v, self._alphas, now_t, next_t)
        except Exception as exc:  # every request in this tick gets the error; the others go on
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        offset = 0
        for job in batch:
            job.images = stepped[offset : offset + job.count]
            offset += job.count
            job.step += 1
            if job.step == len(job.times) - 1 and not job.future.done():
                job.future.set_result(to_unit_range(job.images))

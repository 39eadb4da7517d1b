"""The engine: one BentoML service that owns the ONNX Runtime sessions and batches model calls.

Batching contract (BentoML adaptive batching, per engine process, one batch at a time):
- `birdcall_logits`: input [n, 1, 64, 157] float32 normalized log-mel windows, output
  [n, classes + 1] float32: the logits, then the seconds ONNX Runtime took on the batch that held
  the row (so the API can tell each request's queue wait from its compute time). Batch unit: one
  5 s window. At most CHORUS_BIRDCALL_MAX_BATCH_SIZE windows per batch; callers split larger
  requests (the core does).
- `frames_sample`: a whole DDIM generation (count, steps, seed) -> uint8 images [count, H, W, 3].
  Not a BentoML batchable: the engine's own step batcher (service/step_batching.py) batches images
  of all requests at every DDIM step, at most CHORUS_FRAMES_MAX_BATCH_SIZE images per step.
- `frames_denoise`: the bare denoiser for KServe clients that run their own loop. Input
  [n, 4, H, W] float32 = x_t (3 channels) with the timestep t filled into a 4th plane (BentoML
  batches one array argument); output v [n, 3, H, W]. Batch unit: one image at one DDIM step.
Models load in a background thread; `__is_ready__` turns true only after every warm-up batch ran.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from typing import Annotated

import bentoml
import numpy as np
from bentoml.validators import ContentType

from service.ddim import to_uint8_images
from service.metrics import Metrics
from service.models import LoadedModel, choose_providers, frames_schedule, load_model
from service.settings import ServiceSettings
from service.step_batching import StepBatcher

log = logging.getLogger("chorus.engine")
settings = ServiceSettings()
# A declared media type: without one BentoML builds the output's JSON schema on every response
# to find it (~13% of the engine's event-loop time at concurrency 1, py-spy).
Array = Annotated[np.ndarray, ContentType("application/json")]


def batching(max_batch_size: int, max_latency_ms: int) -> dict:
    """@bentoml.api options; a max batch size of 1 turns batching off (BentoML refuses 1 as a batch size)."""
    if max_batch_size <= 1:
        return {}
    return {"batchable": True, "batch_dim": 0, "max_batch_size": max_batch_size, "max_latency_ms": max_latency_ms}


def pack_denoise_input(x_t: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(x_t [n,3,H,W], t [n]) -> [n,4,H,W]: one array, as BentoML batching wants."""
    plane = np.broadcast_to(t.astype(np.float32)[:, None, None, None], (len(t), 1, *x_t.shape[2:]))
    return np.concatenate([x_t.astype(np.float32), plane], axis=1)


# The API workers' client to this service otherwise swaps its connection pool every 100 calls and
# closes the old one under requests still in flight (500s under load): keep one pool for good.
@bentoml.service(
    name="chorus-engine",
    workers=1,
    traffic={"timeout": 300},
    runner_connection={"max_requests": 2**62, "max_age": 10.0**12},
    logging={"access": {"enabled": settings.engine_access_log}},
    tracing={} if settings.engine_tracing else {"excluded_urls": ["."]},  # "." matches every route
)
class Engine:
    def __init__(self) -> None:
        self.birdcall: LoadedModel | None = None
        self.frames: LoadedModel | None = None
        self.sampler: StepBatcher | None = None
        self._ready = threading.Event()
        self.load_error: str | None = None
        self.metrics = Metrics()
        threading.Thread(target=self._load, name="chorus-model-loader", daemon=True).start()

    def _load(self) -> None:
        try:
            providers = choose_providers(settings.providers)
            self.birdcall = load_model(settings.birdcall_model, settings.birdcall_variant, providers, settings.ort_threads, settings.ort_lanes)
            self.frames = load_model(settings.frames_model, settings.frames_variant, providers, settings.ort_threads, settings.ort_lanes)
            self._warm_up()
            self.sampler = StepBatcher(
                self._run_frames_split,
                frames_schedule(self.frames.path)[0],
                settings.frames_max_batch_size,
                on_tick=functools.partial(self._record_batch, self.frames),
                on_wait=self.metrics.queue_wait_seconds.labels(self.frames.name).observe,
            )
            for model in (self.birdcall, self.frames):
                self.metrics.model_info.labels(**model.info()).set(1)
            for label, share in self.birdcall.training_metrics.get("train_class_share", {}).items():
                self.metrics.training_class_share.labels(self.birdcall.name, label).set(share)
            self._ready.set()
            log.info("engine ready: %s, %s", self.birdcall.info(), self.frames.info())
        except Exception as exc:  # reported through /readyz and every call, not swallowed
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.exception("model loading failed")

    def _warm_up(self) -> None:
        """Run each batch size once, so first requests see neither lazy init nor a bad latency fit."""
        bird_shape = [d if isinstance(d, int) else 1 for d in self.birdcall.session.get_inputs()[0].shape]
        size = int(self.frames.config["arch"]["image_size"])
        for n in settings.warmup_batch_sizes:
            self._run_birdcall(np.zeros((min(n, settings.birdcall_max_batch_size), *bird_shape[1:]), np.float32))
            k = min(n, settings.frames_max_batch_size)
            self._run_frames(pack_denoise_input(np.zeros((k, 3, size, size), np.float32), np.zeros(k, np.float32)))

    def __is_ready__(self) -> bool:
        return self._ready.is_set()

    def _require_ready(self) -> None:
        if not self._ready.wait(timeout=120):
            raise RuntimeError(self.load_error or "models are still loading")

    def _run_birdcall(self, windows: np.ndarray) -> np.ndarray:
        return self.birdcall.run({"features": windows.astype(np.float32, copy=False)})

    def _run_frames(self, packed: np.ndarray) -> np.ndarray:
        return self._run_frames_split(packed[:, :3], packed[:, 3, 0, 0])

    def _run_frames_split(self, x_t: np.ndarray, t: np.ndarray) -> np.ndarray:
        feeds = {"x_t": np.ascontiguousarray(x_t, dtype=np.float32), "t": np.ascontiguousarray(t, dtype=np.float32)}
        return self.frames.run(feeds)

    def _record_batch(self, model: LoadedModel, items: int, seconds: float) -> None:
        self.metrics.batch_seconds.labels(model.name, model.variant).observe(seconds)
        self.metrics.batch_size.labels(model.name).observe(items)

    def _observed(self, model: LoadedModel, run, batch: np.ndarray) -> tuple[np.ndarray, float]:
        """The batch's output and the seconds it took, both recorded in the metrics."""
        start = time.perf_counter()
        out = run(batch)
        seconds = time.perf_counter() - start
        self._record_batch(model, len(batch), seconds)
        return out, seconds

    @bentoml.api(**batching(settings.birdcall_max_batch_size, settings.birdcall_max_latency_ms))
    def birdcall_logits(self, windows: np.ndarray) -> Array:
        self._require_ready()
        logits, seconds = self._observed(self.birdcall, self._run_birdcall, windows)
        return np.concatenate([logits, np.full((len(logits), 1), seconds, np.float32)], axis=1)

    @bentoml.api(**batching(settings.frames_max_batch_size, settings.frames_max_latency_ms))
    def frames_denoise(self, packed: np.ndarray) -> Array:
        self._require_ready()
        return self._observed(self.frames, self._run_frames, packed)[0]

    @bentoml.api
    async def frames_sample(self, count: int, steps: int, seed: int, timeout_seconds: float) -> Array:
        """[count, H, W, 3] uint8 images; requests past timeout_seconds are dropped between steps."""
        if not self._ready.is_set():
            await asyncio.to_thread(self._require_ready)
        size = int(self.frames.config["arch"]["image_size"])
        images = await self.sampler.sample((count, 3, size, size), steps, seed, timeout_seconds)
        return to_uint8_images(images)

    @bentoml.api
    def models(self) -> dict:
        """Name, version, variant and provider of each served model (empty until loaded)."""
        self._require_ready()
        return {"birdcall": self.birdcall.info(), "frames": self.frames.info()}

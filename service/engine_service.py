"""The engine: one BentoML service that owns the ONNX Runtime sessions and batches model calls.

BentoML needs each batchable method declared statically, so this is the one place, besides a
model's own module, where each model is named. Batching contract (BentoML adaptive batching, per
engine process, one batch at a time):
- `birdcall_windows`: input [n, 1, n_mels, n_frames] float32 normalized log-mel windows; output
  TimedRows (service/engine/contracts.py) of [scores | embedding]: n_species calibrated scores,
  then the embedding. Batch unit: one 5 s window. At most CHORUS_BIRDCALL_MAX_BATCH_SIZE windows
  per batch; callers split larger requests.
- `birdcall_job_windows`: the same for analysis jobs, at the lower priority: the windows wait in
  service/engine/background.py and fill interactive batches, or run in batches of at most
  CHORUS_JOB_WINDOWS_PER_BATCH when no interactive batch waits.
- `frames_sample`: a whole DDIM generation (count, steps, seed) -> uint8 images [count, H, W, 3].
  Not a BentoML batchable: the engine's own step batcher (service/engine/step_batching.py) batches
  images of all requests at every DDIM step, at most CHORUS_FRAMES_MAX_BATCH_SIZE images per step.
- `frames_denoise`: the bare denoiser for KServe clients that run their own loop. Input
  StepPlanes [n, 4, H, W] (x_t and its timestep t); output v [n, 3, H, W]. Batch unit: one image
  at one DDIM step.
Models load in a background thread; `__is_ready__` turns true only after every warm-up batch ran.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any

import bentoml
import numpy as np
from bentoml.validators import ContentType

from layout import artifacts
from layout.artifacts import ArtifactError
from service.engine.background import BackgroundWindows
from service.engine.contracts import StepPlanes, TimedRows
from service.engine.ddim import to_uint8_images
from service.engine.loaded import LoadedModel, load_model
from service.engine.runtime import CUDA, choose_providers, padded_sizes
from service.engine.step_batching import StepBatcher
from service.lifecycle import Activity, Drain, stop_with_the_server
from service.metrics import NO_DETECTION, Metrics
from service.models.birdcall import BirdcallModel
from service.models.frames import FramesModel
from service.settings import ServiceSettings

log = logging.getLogger("chorus.engine")
settings = ServiceSettings()
# A declared media type: without one BentoML builds the output's JSON schema on every response
# to find it (~13% of the engine's event-loop time at concurrency 1, py-spy).
Array = Annotated[np.ndarray, ContentType("application/json")]


def batching(max_batch_size: int, max_latency_ms: int) -> dict[str, Any]:
    """@bentoml.api options; a max batch size of 1 turns batching off (BentoML refuses 1 as a batch size)."""
    if max_batch_size <= 1:
        return {}
    return {"batchable": True, "batch_dim": 0, "max_batch_size": max_batch_size, "max_latency_ms": max_latency_ms}


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
        stop_with_the_server()
        self.birdcall: LoadedModel
        self.frames: LoadedModel
        self.sampler: StepBatcher
        self.background: BackgroundWindows
        self._ready = threading.Event()
        self.load_error: str | None = None
        self._activity = Activity()
        self._drained_workers = 0
        self.metrics = Metrics()
        if (earlier := self.metrics.record_engine_start()) > 0:
            log.error(
                "the engine process started again (%d before it since the server started): the previous one died; "
                "requests that were waiting on it were answered 503 engine_unavailable",
                earlier,
            )
        threading.Thread(target=self._load, name="chorus-model-loader", daemon=True).start()

    def _load(self) -> None:
        try:
            providers = choose_providers(settings.providers)
            opened = functools.partial(
                load_model,
                providers=providers,
                threads=settings.ort_threads,
                lanes=settings.ort_lanes,
                max_run_items=settings.ort_max_run_items,
            )
            self.birdcall = opened(
                settings.birdcall_model, settings.birdcall_variant, required=BirdcallModel.stored_files, outputs=BirdcallModel.model_outputs
            )
            pads = settings.frames_pad_batches == "on" or (settings.frames_pad_batches == "auto" and providers[0] == CUDA)
            self.frames = opened(
                settings.frames_model,
                settings.frames_variant,
                required=FramesModel.stored_files,
                pad_limit=settings.frames_max_batch_size if pads else 0,
            )
            self._warm_up()
            self.background = BackgroundWindows(self._birdcall_rows, settings.job_windows_per_batch, on_batch=self._record_birdcall_batch)
            self.sampler = StepBatcher(
                self._denoise,
                np.asarray(self.frames.config[artifacts.ALPHAS_CUMPROD], np.float64),
                settings.frames_max_batch_size,
                on_tick=functools.partial(self._record_batch, self.frames),
                on_wait=self.metrics.queue_wait_seconds.labels(self.frames.name).observe,
            )
            for model in (self.birdcall, self.frames):
                self.metrics.model_info.labels(**model.info()).set(1)
            self._announce_validation_mix()
            self._ready.set()
            log.info("engine ready: %s, %s", self.birdcall.info(), self.frames.info())
        except Exception as exc:  # reported through /readyz and every call, not swallowed
            self.load_error = str(exc) if isinstance(exc, ArtifactError) else f"{type(exc).__name__}: {exc}"
            log.exception("model loading failed; the server will not become ready: %s", self.load_error)

    def _announce_validation_mix(self) -> None:
        """The validation split's detection mix, which the drift alert compares the served mix with."""
        facts = self.birdcall.stored.training_metrics
        shares = {**facts.get("validation_detection_share", {}), NO_DETECTION: facts.get("validation_no_detection_share")}
        for label, share in shares.items():
            if share is not None:
                self.metrics.validation_detection_share.labels(self.birdcall.name, label).set(share)

    def _warm_up(self) -> None:
        """Run each batch size once, so first requests see neither lazy init nor a bad latency fit."""
        for model, limit in ((self.birdcall, settings.birdcall_max_batch_size), (self.frames, settings.frames_max_batch_size)):
            # A padded model runs only its padded sizes: warm each of them.
            sizes = padded_sizes(model.runner.pad_limit) if model.runner.pad_limit else {min(n, limit) for n in settings.warmup_batch_sizes}
            for n in sizes:
                model.run({spec.name: spec.example(n) for spec in model.runner.inputs})

    @bentoml.on_startup
    async def _install_drain(self) -> None:
        Drain("engine", self._idle, settings.drain_seconds).install()

    async def _idle(self) -> bool:
        """Every API worker has drained (they call api_worker_drained) and no call is running."""
        return self._drained_workers >= settings.api_workers and self._activity.active == 0

    @bentoml.api
    def api_worker_drained(self) -> bool:
        """An API worker has nothing in flight any more and is about to stop."""
        self._drained_workers += 1
        return True

    def __is_ready__(self) -> bool:
        return self._ready.is_set()

    def _require_ready(self) -> None:
        if self.load_error is not None or not self._ready.wait(timeout=120):
            raise RuntimeError(self.load_error or "models are still loading")

    def _denoise(self, x_t: np.ndarray, t: np.ndarray) -> np.ndarray:
        feeds = {"x_t": np.ascontiguousarray(x_t, dtype=np.float32), "t": np.ascontiguousarray(t, dtype=np.float32)}
        return self.frames.run(feeds)[0]

    def _record_batch(self, model: LoadedModel, items: int, seconds: float) -> None:
        self.metrics.batch_seconds.labels(model.name, model.variant).observe(seconds)
        self.metrics.batch_size.labels(model.name).observe(items)

    def _observed(self, model: LoadedModel, run: Callable[[], np.ndarray], items: int) -> tuple[np.ndarray, float]:
        """The batch's output and the seconds it took, both recorded in the metrics."""
        start = time.perf_counter()
        out = run()
        seconds = time.perf_counter() - start
        self._record_batch(model, items, seconds)
        return out, seconds

    def _birdcall_rows(self, windows: np.ndarray) -> np.ndarray:
        """[scores | embedding] of a batch of windows."""
        feeds = {"features": windows.astype(np.float32, copy=False)}
        return np.concatenate(self.birdcall.outputs_named(feeds, BirdcallModel.model_outputs), axis=1)

    def _record_birdcall_batch(self, interactive: int, job: int, seconds: float) -> None:
        self._record_batch(self.birdcall, interactive + job, seconds)
        if job:
            self.metrics.job_windows.labels(self.birdcall.name).inc(job)

    @bentoml.api(**batching(settings.birdcall_max_batch_size, settings.birdcall_max_latency_ms))
    def birdcall_windows(self, windows: np.ndarray) -> Array:
        self._require_ready()
        with self._activity:
            rows, seconds = self.background.interactive(windows)
        return TimedRows.pack(rows, seconds)

    @bentoml.api
    async def birdcall_job_windows(self, windows: np.ndarray) -> Array:
        """Analysis-job windows, behind every interactive batch."""
        if not self._ready.is_set():
            await asyncio.to_thread(self._require_ready)
        with self._activity:
            rows, seconds = await self.background.submit(windows)
        return TimedRows.pack(rows, seconds)

    @bentoml.api(**batching(settings.frames_max_batch_size, settings.frames_max_latency_ms))
    def frames_denoise(self, packed: np.ndarray) -> Array:
        self._require_ready()
        x_t, t = StepPlanes.unpack(packed)
        with self._activity:
            return self._observed(self.frames, lambda: self._denoise(x_t, t), len(packed))[0]

    @bentoml.api
    async def frames_sample(self, count: int, steps: int, seed: int, timeout_seconds: float) -> Array:
        """[count, H, W, 3] uint8 images; requests past timeout_seconds are dropped between steps."""
        if not self._ready.is_set():
            await asyncio.to_thread(self._require_ready)
        size = int(self.frames.config[artifacts.ARCH][artifacts.IMAGE_SIZE])
        with self._activity:
            images = await self.sampler.sample((count, 3, size, size), steps, seed, timeout_seconds)
        return to_uint8_images(images)

    @bentoml.api
    def status(self) -> dict:
        """ready, and why not when loading failed (error): answered at once, also while loading."""
        return {"ready": self._ready.is_set(), "error": self.load_error}

    @bentoml.api
    def models(self) -> dict:
        """Name, version, variant and provider of each served model (empty until loaded)."""
        self._require_ready()
        return {"birdcall": self.birdcall.info(), "frames": self.frames.info()}

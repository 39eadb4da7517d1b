"""The chorus API service: REST, KServe v2 HTTP (and gRPC) adapters over one inference core per model.

Run with `bentoml serve` from the repo root (bentofile.yaml names `service.service:Chorus`) or
`chorus up`. Pre-processing runs in these API workers; model calls go to the Engine service,
whose batchable methods batch across all requests and protocols.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import aiohttp
import bentoml
import numpy as np
from starlette.applications import Starlette
from threadpoolctl import threadpool_limits

from service import kserve, rest
from service.coalesce import Coalescer
from service.core import Admission, BirdcallCore, FramesCore
from service.engine import Engine, pack_denoise_input
from service.errors import EngineUnavailable, NotReady
from service.metrics import Metrics
from service.models import birdcall_frontend, frames_schedule, stored_model_path
from service.settings import ServiceSettings

log = logging.getLogger("chorus.service")
settings = ServiceSettings()
ENGINE_DEADLINE_SLACK_SECONDS = 1.0
app = Starlette(routes=[*rest.ROUTES, *kserve.ROUTES])


@bentoml.service(name="chorus", workers=settings.api_workers, traffic={"timeout": 300})
@bentoml.asgi_app(app, path="/")
class Chorus:
    engine = bentoml.depends(Engine)

    def __init__(self) -> None:
        # Requests are featurized in parallel threads; a multi-threaded BLAS inside each of them
        # spins against the others (8 threads on 2 cores: 77 -> 205 log-mel calls/s with one BLAS thread).
        threadpool_limits(1, user_api="blas")
        self.settings = settings
        self.metrics = Metrics()
        self.admission = Admission(settings.max_in_flight, settings.retry_after_seconds, self.metrics)
        self._birdcall: BirdcallCore | None = None
        self._frames: FramesCore | None = None
        self._init_lock = asyncio.Lock()
        self._birdcall_calls = Coalescer(self._engine_birdcall, settings.birdcall_max_batch_size)
        self._denoise_calls = Coalescer(self._engine_denoise, settings.frames_max_batch_size)
        self._grpc = None
        app.state.chorus = self

    async def _init_cores(self) -> None:
        """Build the cores once the engine is ready, from the exact model versions it loaded."""
        async with self._init_lock:
            if self._birdcall is not None:
                return
            if not await self.engine.is_ready(1):
                raise NotReady("the models are still loading; retry shortly (GET /readyz says when)", settings.retry_after_seconds)
            info = await self.engine.to_async.models()
            frontend, labels = birdcall_frontend(stored_model_path(info["birdcall"]["name"], info["birdcall"]["version"]))
            self._birdcall = BirdcallCore(
                frontend,
                labels,
                info["birdcall"],
                self._birdcall_logits,
                settings.birdcall_max_batch_size,
                settings.max_audio_seconds,
                self.metrics,
            )
            alphas_cumprod, image_size = frames_schedule(stored_model_path(info["frames"]["name"], info["frames"]["version"]))
            self._frames = FramesCore(
                alphas_cumprod,
                image_size,
                info["frames"],
                self._sample,
                self._denoise,
                (settings.max_images, settings.min_steps, settings.max_steps),
                self.metrics,
            )

    @bentoml.on_startup
    async def _start_grpc(self) -> None:
        # Imported here, in the worker only: the generated `inference.*` protobuf symbols would
        # clash with tritonclient's copies in any client process that imports this module.
        from service.grpc_server import start_grpc_server

        self._grpc = await start_grpc_server(self, settings.grpc_port) if settings.grpc_port else None

    @bentoml.on_shutdown
    async def _stop_grpc(self) -> None:
        if self._grpc is not None:
            await self._grpc.stop(grace=5)  # in-flight calls finish first

    @contextlib.contextmanager
    def _pending(self, model: str, items: int):
        """Count items sent to the engine and not answered yet."""
        gauge = self.metrics.engine_queue.labels(model)
        gauge.inc(items)
        try:
            yield
        finally:
            gauge.dec(items)

    @contextlib.asynccontextmanager
    async def _engine_call(self):
        """A lost engine connection (shutdown, restart) is a 503 the client can retry, not a 500."""
        try:
            yield
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise EngineUnavailable(
                f"the inference engine is unavailable ({type(exc).__name__}); retry shortly", settings.retry_after_seconds
            ) from exc

    async def _engine_birdcall(self, windows: np.ndarray) -> np.ndarray:
        async with self._engine_call():
            return await self.engine.to_async.birdcall_logits(windows)

    async def _birdcall_logits(self, windows: np.ndarray) -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        with self._pending("birdcall", len(windows)):
            out = await self._birdcall_calls(windows)
        # The engine appends the seconds its batch took; the rest of the round trip was waiting.
        model_seconds = float(out[:, -1].max())
        self.metrics.queue_wait_seconds.labels("birdcall").observe(max(0.0, time.perf_counter() - start - model_seconds))
        return out[:, :-1], model_seconds

    async def _sample(self, count: int, steps: int, seed: int, timeout_seconds: float) -> np.ndarray:
        # The engine gives up a moment after the API's own deadline (504) so its work stops too.
        with self._pending("frames", count):
            async with self._engine_call():
                return await self.engine.to_async.frames_sample(
                    count=count, steps=steps, seed=seed, timeout_seconds=timeout_seconds + ENGINE_DEADLINE_SLACK_SECONDS
                )

    async def _engine_denoise(self, packed: np.ndarray) -> np.ndarray:
        async with self._engine_call():
            return await self.engine.to_async.frames_denoise(packed)

    async def _denoise(self, x_t: np.ndarray, t: np.ndarray) -> np.ndarray:
        with self._pending("frames", len(x_t)):
            return await self._denoise_calls(pack_denoise_input(x_t, t))

    async def ready_birdcall(self) -> BirdcallCore:
        await self._init_cores()
        return self._birdcall

    async def ready_frames(self) -> FramesCore:
        await self._init_cores()
        return self._frames

    def birdcall_core(self) -> BirdcallCore:
        return self._birdcall

    def frames_core(self) -> FramesCore:
        return self._frames

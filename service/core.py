"""The inference core: one per model, shared by every protocol adapter (REST, KServe v2 HTTP, gRPC).

Pre-processing (decode, resample, features) runs here in the API worker, in a thread so the event
loop stays free; the engine's batchable methods only ever see model tensors, so windows and
denoising steps of all requests, whatever protocol they came by, share the same batches.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import numpy as np
from PIL import Image

from features import AudioError, AudioFacts, FrontEnd
from service.errors import DeadlineExceeded, InvalidParameter, Overloaded, from_audio_error
from service.metrics import Metrics

# infer(windows) -> (logits, seconds the model ran on the batch that carried them)
Infer = Callable[[np.ndarray], Awaitable[tuple[np.ndarray, float]]]
Denoise = Callable[[np.ndarray, np.ndarray], Awaitable[np.ndarray]]
# sample(count, steps, seed, timeout_seconds) -> [count, H, W, 3] uint8 images
Sample = Callable[[int, int, int, float], Awaitable[np.ndarray]]


class Admission:
    """A bounded number of requests in flight per worker, and a deadline for each.

    Past the bound a request is refused at once with 503 + Retry-After: never an unbounded wait.
    """

    def __init__(self, max_in_flight: int, retry_after: int, metrics: Metrics | None = None):
        self.max_in_flight = max_in_flight
        self.retry_after = retry_after
        self.in_flight = 0
        self.metrics = metrics

    def _refuse_if_full(self) -> None:
        if self.in_flight >= self.max_in_flight:
            raise Overloaded(
                f"the server holds {self.in_flight} requests, its limit; retry after {self.retry_after} s",
                self.retry_after,
            )

    @asynccontextmanager
    async def slot(self):
        self._refuse_if_full()
        self.in_flight += 1
        if self.metrics:
            self.metrics.in_flight.inc()
        try:
            yield
        finally:
            self.in_flight -= 1
            if self.metrics:
                self.metrics.in_flight.dec()

    async def run(self, work: Coroutine[Any, Any, Any], deadline_seconds: float) -> Any:
        try:
            self._refuse_if_full()
        except Overloaded:
            work.close()  # never started: close it so it is not reported as "never awaited"
            raise
        async with self.slot():
            try:
                return await asyncio.wait_for(work, timeout=deadline_seconds)
            except TimeoutError:
                raise DeadlineExceeded(
                    f"the request did not finish within its deadline of {deadline_seconds:g} s",
                    deadline_seconds=deadline_seconds,
                ) from None


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class ClassifyOptions:
    top_k: int = 3
    timeline: bool = True
    min_confidence: float = 0.0


class BirdcallCore:
    def __init__(
        self,
        frontend: FrontEnd,
        labels: list[str],
        model_info: dict[str, str],
        infer: Infer,
        max_batch: int,
        max_seconds: float,
        metrics: Metrics | None = None,
    ):
        self.metrics = metrics
        self.frontend = frontend
        self.labels = labels
        self.model_info = model_info
        self.infer = infer
        self.max_batch = max_batch
        self.max_seconds = max_seconds

    def _ranked(self, probs: np.ndarray, options: ClassifyOptions) -> list[dict[str, Any]]:
        order = np.argsort(-probs)[: options.top_k]
        return [
            {"label": self.labels[i], "probability": round(float(probs[i]), 6)}
            for i in order
            if probs[i] >= options.min_confidence
        ]

    def _prepare(self, data: bytes) -> tuple[AudioFacts, np.ndarray, list, dict[str, float]]:
        analysis = self.frontend.analyze(data, max_seconds=self.max_seconds)
        return analysis.audio, analysis.windows.features, analysis.windows.spans, analysis.timings

    async def prepare(self, data: bytes) -> tuple[AudioFacts, np.ndarray, list, dict[str, float]]:
        """Decode -> resample -> windows -> normalized log-mel, off the event loop. Typed 4xx on bad audio."""
        try:
            return await anyio.to_thread.run_sync(self._prepare, data)
        except AudioError as exc:
            raise from_audio_error(exc) from exc

    async def logits(self, features: np.ndarray) -> tuple[np.ndarray, float]:
        """Network outputs for any number of windows, and the model's seconds on them.

        Chunks of at most max_batch go out together; no two chunks of one request fit in one engine
        batch, so the model's time on the request is the sum of its chunks' batch times.
        """
        chunks = [features[i : i + self.max_batch] for i in range(0, len(features), self.max_batch)]
        results = await asyncio.gather(*(self.infer(c) for c in chunks))
        return np.concatenate([logits for logits, _ in results]), sum(seconds for _, seconds in results)

    async def probabilities_from_waveform(self, waveform: np.ndarray) -> np.ndarray:
        """Mono float32 samples at the model's rate -> [n_windows, n_classes] probabilities."""
        if waveform.size == 0:
            raise InvalidParameter("the waveform is empty; send at least one sample")
        if not np.isfinite(waveform).all():
            raise InvalidParameter("the waveform contains NaN or infinite samples")
        if waveform.size / self.frontend.config.sample_rate > self.max_seconds:
            raise InvalidParameter(f"the waveform is longer than {self.max_seconds:g} s")

        def features() -> np.ndarray:
            return self.frontend.waveform_windows(waveform.astype(np.float32, copy=False)).features

        return softmax((await self.logits(await anyio.to_thread.run_sync(features)))[0])

    async def probabilities_from_features(self, features: np.ndarray) -> np.ndarray:
        expected = self.frontend.config.feature_shape
        if features.ndim != 4 or features.shape[1:] != expected or len(features) == 0:
            raise InvalidParameter(f"log_mel must have shape [n, {', '.join(map(str, expected))}], got {list(features.shape)}")
        return softmax((await self.logits(features.astype(np.float32, copy=False)))[0])

    async def classify(self, data: bytes, options: ClassifyOptions) -> dict[str, Any]:
        started = time.perf_counter()
        decoded, features, spans, timings = await self.prepare(data)
        start = time.perf_counter()
        logits, model_seconds = await self.logits(features)
        timings["inference"] = time.perf_counter() - start
        timings["model"] = model_seconds
        start = time.perf_counter()
        probs = softmax(logits)
        result: dict[str, Any] = {
            "model": self.model_info,
            "audio": {
                "duration_seconds": round(decoded.duration_seconds, 4),
                "sample_rate": decoded.sample_rate,
                "channels": decoded.channels,
                "format": decoded.format,
                "windows": len(spans),
            },
            "top": self._ranked(probs.mean(axis=0), options),
        }
        if options.timeline:
            result["windows"] = [
                {"start": round(span.start, 3), "end": round(span.end, 3), "top": self._ranked(p, options)}
                for span, p in zip(spans, probs)
            ]
        timings["postprocess"] = time.perf_counter() - start
        timings["total"] = time.perf_counter() - started
        if self.metrics:
            top1 = [self.labels[i] for i in probs.argmax(axis=1)]
            self.metrics.record_classification(self.model_info, timings, top1, decoded.duration_seconds, decoded.sample_rate)
        result["timings_ms"] = {k: round(v * 1e3, 3) for k, v in timings.items()}
        return result


@dataclass(frozen=True)
class GenerateRequest:
    count: int = 1
    steps: int = 50
    seed: int = 0


class FramesCore:
    def __init__(
        self,
        alphas_cumprod: np.ndarray,
        image_size: int,
        model_info: dict[str, str],
        sample: Sample,
        denoise: Denoise,
        limits: tuple[int, int, int],
        metrics: Metrics | None = None,
    ):
        self.metrics = metrics
        self.alphas_cumprod = alphas_cumprod
        self.image_size = image_size
        self.model_info = model_info
        self.sample = sample
        self.denoise = denoise
        self.max_images, self.min_steps, self.max_steps = limits

    async def denoise_batch(self, x_t: np.ndarray, t: np.ndarray, max_batch: int) -> np.ndarray:
        """One denoiser call for any number of images, in chunks the engine accepts (KServe adapter)."""
        shape = (3, self.image_size, self.image_size)
        if x_t.ndim != 4 or x_t.shape[1:] != shape or t.shape != (len(x_t),) or len(x_t) == 0:
            raise InvalidParameter(f"x_t must be [n, {', '.join(map(str, shape))}] and t [n], got {list(x_t.shape)} and {list(t.shape)}")
        if not (np.isfinite(x_t).all() and np.isfinite(t).all()):
            raise InvalidParameter("x_t and t must be finite")
        parts = range(0, len(x_t), max_batch)
        outs = await asyncio.gather(*(self.denoise(x_t[i : i + max_batch], t[i : i + max_batch]) for i in parts))
        return np.concatenate(outs)

    def validate(self, request: GenerateRequest) -> None:
        problems = []
        if not 1 <= request.count <= self.max_images:
            problems.append(f"count must be 1-{self.max_images}, got {request.count}")
        if not self.min_steps <= request.steps <= self.max_steps:
            problems.append(f"steps must be {self.min_steps}-{self.max_steps}, got {request.steps}")
        if not 0 <= request.seed < 2**63:
            problems.append(f"seed must be 0 to 2**63-1, got {request.seed}")
        if problems:
            raise InvalidParameter("; ".join(problems), accepted={"count": [1, self.max_images], "steps": [self.min_steps, self.max_steps]})

    async def generate(self, request: GenerateRequest, timeout_seconds: float) -> tuple[np.ndarray, dict[str, float]]:
        """[count, H, W, 3] uint8 images and timings (ms); the engine drops the work past timeout_seconds."""
        self.validate(request)
        started = time.perf_counter()
        images = await self.sample(request.count, request.steps, request.seed, timeout_seconds)
        total = time.perf_counter() - started
        if self.metrics:
            self.metrics.stage_seconds.labels(self.model_info["name"], self.model_info["variant"], "total").observe(total)
        return images, {"total": round(total * 1e3, 3)}


def encode_png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()

"""birdcall: species of every 5 s window of a recording.

Pre-processing (decode, resample, features) runs here in the API worker, in a thread so the event
loop stays free; the engine only ever sees model tensors, so windows of all requests, whatever
protocol they came by, share the same batches. The front end's configuration, normalization
statistics and labels are read from the stored model, never from code.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import anyio.to_thread
import numpy as np

from features import Analysis, AudioError, FrontEnd, FrontEndConfig, InvalidSamplesError, NormStats
from layout import artifacts
from service.engine.client import EngineClient, TimedCall
from service.errors import InvalidParameter, from_audio_error
from service.metrics import Metrics
from service.models.base import ServedModel
from service.models.tasks import AudioClassifier, ClassifyOptions
from service.settings import ServiceSettings
from service.store import StoredModel
from service.tensors import Tensor, numeric

ENGINE_METHOD = "birdcall_logits"
SAMPLE_RANGE = "audio samples belong in [-1, 1]"


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class BirdcallLimits:
    max_batch: int
    """Most windows of one engine call (the engine's batch limit); longer recordings go in chunks."""
    max_seconds: float
    """Longest accepted recording, in seconds."""
    default_top_k: int
    """Species per window and overall when a request does not say."""
    max_files: int
    """Most recordings in one batch request."""


def stored_frontend(stored: StoredModel) -> FrontEnd:
    """The front end exactly as the model was trained with it: its config and normalization stats."""
    config = FrontEndConfig.from_dict(stored.config[artifacts.FRONTEND])
    return FrontEnd(config, NormStats.from_dict(stored.read_json(artifacts.NORM_STATS)))


class BirdcallModel(ServedModel, AudioClassifier):
    store_name = "birdcall"
    name = "birdcall"
    outputs: ClassVar[tuple[str, ...]] = ("probabilities", "labels")

    def __init__(
        self,
        info: dict[str, str],
        frontend: FrontEnd,
        labels: list[str],
        logits: TimedCall,
        limits: BirdcallLimits,
        metrics: Metrics | None = None,
    ):
        super().__init__(info)
        self.frontend = frontend
        self.labels = labels
        self._logits = logits
        self.limits = limits
        self.default_top_k = limits.default_top_k
        self.metrics = metrics

    @classmethod
    def build(
        cls, stored: StoredModel, info: dict[str, str], engine: EngineClient, settings: ServiceSettings, metrics: Metrics
    ) -> BirdcallModel:
        limits = BirdcallLimits(
            max_batch=settings.birdcall_max_batch_size,
            max_seconds=settings.max_audio_seconds,
            default_top_k=settings.default_top_k,
            max_files=settings.max_batch_files,
        )
        logits = engine.timed(ENGINE_METHOD, cls.store_name, limits.max_batch)
        return cls(info, stored_frontend(stored), stored.read_json(artifacts.LABELS), logits, limits, metrics)

    # Pre-processing

    def _prepare(self, data: bytes) -> Analysis:
        analysis = self.frontend.analyze(data, max_seconds=self.limits.max_seconds)
        if not np.isfinite(analysis.windows.features).all():  # finite float samples so loud their power overflows
            raise InvalidSamplesError(f"the recording's samples are too large to analyze; {SAMPLE_RANGE}")
        return analysis

    async def prepare(self, data: bytes) -> Analysis:
        """Decode -> resample -> windows -> normalized log-mel (streamed in blocks), off the event loop.
        Typed 4xx on bad audio."""
        try:
            return await anyio.to_thread.run_sync(self._prepare, data)
        except AudioError as exc:
            raise from_audio_error(exc) from exc

    # The network

    async def logits(self, features: np.ndarray) -> tuple[np.ndarray, float]:
        """Network outputs for any number of windows, and the model's seconds on them.

        Chunks of at most max_batch go out together; no two chunks of one request fit in one engine
        batch, so the model's time on the request is the sum of its chunks' batch times.
        """
        step = self.limits.max_batch
        results = await asyncio.gather(*(self._logits(features[i : i + step]) for i in range(0, len(features), step)))
        logits = np.concatenate([logits for logits, _ in results])
        # The engine refuses a model whose outputs are not finite at load: here the inputs are the cause.
        if not np.isfinite(logits).all():
            raise InvalidParameter("the model's outputs for these inputs are not finite: the inputs lie far outside the range it knows")
        return logits, sum(seconds for _, seconds in results)

    async def probabilities_from_waveform(self, waveform: np.ndarray) -> np.ndarray:
        """Mono float32 samples at the model's rate -> [n_windows, n_classes] probabilities."""
        if waveform.size == 0:
            raise InvalidParameter("the waveform is empty; send at least one sample")
        if not np.isfinite(waveform).all():
            raise InvalidParameter("the waveform contains NaN or infinite samples")
        if waveform.size / self.frontend.config.sample_rate > self.limits.max_seconds:
            raise InvalidParameter(f"the waveform is longer than {self.limits.max_seconds:g} s")

        def features() -> np.ndarray:
            windows = self.frontend.waveform_windows(waveform.astype(np.float32, copy=False)).features
            if not np.isfinite(windows).all():  # finite samples so large their power overflows
                raise InvalidParameter(f"the waveform's samples are too large to analyze; {SAMPLE_RANGE}")
            return windows

        return softmax((await self.logits(await anyio.to_thread.run_sync(features)))[0])

    async def probabilities_from_features(self, features: np.ndarray) -> np.ndarray:
        expected = self.frontend.config.feature_shape
        if features.ndim != 4 or features.shape[1:] != expected or len(features) == 0:
            raise InvalidParameter(f"log_mel must have shape [n, {', '.join(map(str, expected))}], got {list(features.shape)}")
        if not np.isfinite(features).all():
            raise InvalidParameter("log_mel contains NaN or infinite values")
        return softmax((await self.logits(features.astype(np.float32, copy=False)))[0])

    # REST: /classify

    def _ranked(self, probs: np.ndarray, options: ClassifyOptions) -> list[dict[str, Any]]:
        order = np.argsort(-probs)[: options.top_k]
        return [{"label": self.labels[i], "probability": round(float(probs[i]), 6)} for i in order if probs[i] >= options.min_confidence]

    async def classify(self, data: bytes, options: ClassifyOptions) -> dict[str, Any]:
        """A recording's file bytes -> ranking, per-window timeline, audio facts, model and timings."""
        started = time.perf_counter()
        prepared = await self.prepare(data)
        timings = dict(prepared.timings)
        start = time.perf_counter()
        logits, model_seconds = await self.logits(prepared.windows.features)
        timings["inference"] = time.perf_counter() - start
        timings["model"] = model_seconds
        start = time.perf_counter()
        probs = softmax(logits)
        audio = prepared.audio
        spans = prepared.windows.spans
        result: dict[str, Any] = {
            "model": self.info,
            "audio": {
                "duration_seconds": round(audio.duration_seconds, 4),
                "sample_rate": audio.sample_rate,
                "channels": audio.channels,
                "format": audio.format,
                "windows": len(spans),
            },
            "top": self._ranked(probs.mean(axis=0), options),
        }
        if options.timeline:
            result["windows"] = [
                {"start": round(span.start, 3), "end": round(span.end, 3), "top": self._ranked(p, options)}
                for span, p in zip(spans, probs, strict=True)
            ]
        timings["postprocess"] = time.perf_counter() - start
        timings["total"] = time.perf_counter() - started
        if self.metrics:
            top1 = [self.labels[i] for i in probs.argmax(axis=1)]
            self.metrics.record_classification(self.info, timings, top1, audio.duration_seconds, audio.sample_rate)
        result["timings_ms"] = {k: round(v * 1e3, 3) for k, v in timings.items()}
        return result

    # KServe v2

    def metadata(self) -> dict[str, Any]:
        n_classes = len(self.labels)
        config = self.frontend.config
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": "onnxruntime_onnx",
            "inputs": [
                {"name": "waveform", "datatype": "FP32", "shape": [-1]},
                {"name": "log_mel", "datatype": "FP32", "shape": [-1, *config.feature_shape]},
            ],
            "outputs": [
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, n_classes]},
                {"name": "labels", "datatype": "BYTES", "shape": [n_classes]},
            ],
            "parameters": {
                "inputs": "send exactly one: waveform = mono FP32 samples at "
                f"{config.sample_rate} Hz (cut into {config.clip_seconds:g} s windows, {config.stride_seconds:g} s apart), "
                "or log_mel = normalized log-mel windows",
                "sample_rate": config.sample_rate,
            },
        }

    async def infer(self, inputs: dict[str, Tensor]) -> dict[str, np.ndarray]:
        if set(inputs) == {"waveform"}:
            probs = await self.probabilities_from_waveform(numeric(inputs["waveform"], "FP32 samples").reshape(-1))
        elif set(inputs) == {"log_mel"}:
            probs = await self.probabilities_from_features(numeric(inputs["log_mel"], "FP32 log-mel windows"))
        else:
            raise InvalidParameter(f"send exactly one input, 'waveform' or 'log_mel'; got {sorted(inputs)}")
        return {"probabilities": probs.astype(np.float32), "labels": np.array([x.encode() for x in self.labels], dtype=object)}

"""birdcall: which species call in every 5 s window of a recording (none, one or several).

The model scores each species on its own: a calibrated probability per species and window, so a
window of rain can hold no species and a dawn chorus several. A species is detected where its
score reaches the threshold (by default the one calibrated on the validation split, stored with
the model). The pooled embedding of each window comes along, for clustering and search.

Pre-processing (decode, resample, features) runs here in the API worker, in a thread so the event
loop stays free; the engine only ever sees model tensors, so windows of all requests, whatever
protocol they came by, share the same batches. The front end's configuration, normalization
statistics, labels and threshold are read from the stored model, never from code.
"""

from __future__ import annotations

import base64
import io
import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from features import Analysis, AudioError, FrontEnd, FrontEndConfig, InvalidSamplesError, NormStats, WindowSpan, grid_frames, window_count
from layout import artifacts
from service.admission import given_up, off_loop
from service.concurrency import gather_or_cancel
from service.engine.client import BatchCall, EngineClient, TimedCall
from service.engine.contracts import TimedRows
from service.errors import InvalidParameter, PayloadTooLarge, from_audio_error
from service.metrics import Metrics
from service.models.base import ServedModel
from service.models.tasks import AudioClassifier, ClassifyOptions
from service.settings import ServiceSettings
from service.store import StoredModel
from service.tensors import Tensor, numeric

ENGINE_METHOD = "birdcall_windows"
JOB_METHOD = "birdcall_job_windows"
"""The same windows at the lower priority, for analysis jobs."""
SCORES, EMBEDDING = "scores", "embedding"
"""The exported model's outputs, in the order the engine's TimedRows carries them."""
SCORES_MEANING = (
    "independent calibrated probability of each species in the window (sigmoid): a species is detected "
    "where its score is at least the threshold; a window can hold none or several"
)
SAMPLE_RANGE = "audio samples belong in [-1, 1]"


def stored_frontend(stored: StoredModel) -> FrontEnd:
    """The front end exactly as the model was trained with it: its config and normalization stats."""
    config = FrontEndConfig.from_dict(stored.config[artifacts.FRONTEND])
    return FrontEnd(config, NormStats.from_dict(stored.read_json(artifacts.NORM_STATS)))


def stored_threshold(stored: StoredModel) -> float:
    """The decision threshold calibrated on the validation split."""
    return float(stored.read_json(artifacts.CALIBRATION)["threshold"])


@dataclass(frozen=True)
class BirdcallLimits:
    max_batch: int
    """Most windows of one engine call (the engine's batch limit); longer recordings go in chunks."""
    max_seconds: float
    """Longest accepted recording, in seconds."""
    max_samples: int
    """Most decoded samples (frames x channels) of one recording."""
    default_top_k: int
    """Most species per window when a request does not say."""


@dataclass(frozen=True)
class WindowOutputs:
    scores: np.ndarray
    """[n_windows, n_species] calibrated probabilities."""
    embeddings: np.ndarray
    """[n_windows, dim] pooled embeddings."""
    model_seconds: float
    """ONNX Runtime seconds of the batches that carried the windows."""


# Dark to light (navy, purple, orange, pale yellow): quiet bands recede, calls stand out.
_ANCHORS = np.array(
    [[0, 0, 16], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21], [250, 193, 39], [252, 255, 164]]
)
COLORMAP = np.stack(
    [np.interp(np.linspace(0, len(_ANCHORS) - 1, 256), np.arange(len(_ANCHORS)), _ANCHORS[:, c]) for c in range(3)], axis=1
).astype(np.uint8)


def spectrogram(features: np.ndarray, config: FrontEndConfig, duration_seconds: float) -> dict[str, Any]:
    """What the model heard, as an image: the normalized log-mel grid (low bands at the bottom, one
    pixel column per hop) over the recording's duration, base64 PNG, with the scale a page needs to
    place the windows on it. The last window's frames past the end (zeros) are left out, so the
    image's width is the recording's duration, as the page's lanes and cursor take it."""
    frames = max(1, round(duration_seconds * config.sample_rate / config.hop_length))
    grid = grid_frames(features, config)[:, :frames]
    levels = np.clip((grid + 2.5) / 6.0, 0.0, 1.0)  # normalized per band: about -2.5 to 3.5 standard deviations
    buffer = io.BytesIO()
    Image.fromarray(COLORMAP[(levels[::-1] * 255).astype(np.uint8)]).save(buffer, format="PNG")
    return {
        "png_base64": base64.b64encode(buffer.getvalue()).decode(),
        "seconds_per_column": config.hop_length / config.sample_rate,
        "f_min": config.f_min,
        "f_max": config.f_max,
        "frequency_scale": "mel",
    }


def summarize(spans: list[WindowSpan], scores: np.ndarray, detected: np.ndarray, labels: list[str]) -> list[dict[str, Any]]:
    """Per species detected anywhere: windows detected, max and mean score over them, first and last time;
    the species with the highest score first (by the unrounded score: saturated scores round alike,
    and the order must stay the one training's recording accuracy measures)."""
    ranked = []
    for j in np.flatnonzero(detected.any(axis=0)):
        rows = np.flatnonzero(detected[:, j])
        top = float(scores[rows, j].max())
        ranked.append(
            (
                (-top, labels[j]),
                {
                    "label": labels[j],
                    "windows": len(rows),
                    "max_score": round(top, 6),
                    "mean_score": round(float(scores[rows, j].mean()), 6),
                    "first_seconds": round(spans[rows[0]].start, 3),
                    "last_seconds": round(spans[rows[-1]].end, 3),
                },
            )
        )
    return [entry for _, entry in sorted(ranked, key=lambda pair: pair[0])]


class BirdcallModel(ServedModel, AudioClassifier):
    store_name = "birdcall"
    name = "birdcall"
    outputs: ClassVar[tuple[str, ...]] = ("probabilities", EMBEDDING, "labels")
    stored_files: ClassVar[tuple[str, ...]] = (artifacts.CONFIG, artifacts.LABELS, artifacts.NORM_STATS, artifacts.CALIBRATION)
    model_outputs: ClassVar[tuple[str, ...]] = (SCORES, EMBEDDING)

    def __init__(
        self,
        info: dict[str, str],
        frontend: FrontEnd,
        labels: list[str],
        threshold: float,
        windows: TimedCall,
        limits: BirdcallLimits,
        metrics: Metrics | None = None,
        job_windows: BatchCall | None = None,
    ):
        super().__init__(info)
        self.frontend = frontend
        self.labels = labels
        self.threshold = threshold
        self._windows = windows
        self._job_windows = job_windows
        self.limits = limits
        self.max_batch = limits.max_batch
        self.default_top_k = limits.default_top_k
        self.metrics = metrics

    @classmethod
    def build(
        cls, stored: StoredModel, info: dict[str, str], engine: EngineClient, settings: ServiceSettings, metrics: Metrics
    ) -> BirdcallModel:
        limits = BirdcallLimits(
            max_batch=settings.birdcall_max_batch_size,
            max_seconds=settings.max_audio_seconds,
            max_samples=settings.max_audio_samples,
            default_top_k=settings.default_top_k,
        )
        windows = engine.timed(ENGINE_METHOD, cls.store_name, limits.max_batch)
        job_windows = engine.batched(JOB_METHOD, cls.store_name, limits.max_batch)
        labels = stored.read_json(artifacts.LABELS)
        return cls(info, stored_frontend(stored), labels, stored_threshold(stored), windows, limits, metrics, job_windows)

    # Pre-processing

    def _prepare(self, data: bytes) -> Analysis:
        analysis = self.frontend.analyze(data, max_seconds=self.limits.max_seconds, max_samples=self.limits.max_samples, stop=given_up)
        if not np.isfinite(analysis.windows.features).all():  # finite float samples so loud their power overflows
            raise InvalidSamplesError(f"the recording's samples are too large to analyze; {SAMPLE_RANGE}")
        return analysis

    async def prepare(self, data: bytes) -> Analysis:
        """Decode -> resample -> windows -> normalized log-mel (streamed in blocks), off the event loop.
        Typed 4xx on bad audio."""
        try:
            return await off_loop(self._prepare, data)
        except AudioError as exc:
            raise from_audio_error(exc) from exc

    # The network

    async def window_outputs(self, features: np.ndarray) -> WindowOutputs:
        """Scores and embeddings of any number of windows, and the model's seconds on them.

        Chunks of at most max_batch go out together; no two chunks of one request fit in one engine
        batch, so the model's time on the request is the sum of its chunks' batch times.
        """
        step = self.limits.max_batch
        results = await gather_or_cancel(*(self._windows(features[i : i + step]) for i in range(0, len(features), step)))
        rows = np.concatenate([outputs for outputs, _ in results])
        # The engine refuses a model whose outputs are not finite at load: here the inputs are the cause.
        if not np.isfinite(rows).all():
            raise InvalidParameter("the model's outputs for these inputs are not finite: the inputs lie far outside the range it knows")
        n = len(self.labels)
        return WindowOutputs(rows[:, :n], rows[:, n:], sum(seconds for _, seconds in results))

    async def job_scores(self, features: np.ndarray) -> np.ndarray:
        """Scores of an analysis job's windows, at the lower priority: they never delay /classify."""
        if self._job_windows is None:
            raise RuntimeError("this model was built without an engine method for jobs")
        rows, _ = TimedRows.unpack(await self._job_windows(features))
        return rows[:, : len(self.labels)]

    async def outputs_from_waveform(self, waveform: np.ndarray) -> WindowOutputs:
        """Mono float32 samples at the model's rate -> every window's outputs."""
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

        return await self.window_outputs(await off_loop(features))

    @property
    def max_windows(self) -> int:
        """The windows of the longest recording accepted (limits.max_seconds): what log_mel may carry."""
        config = self.frontend.config
        return window_count(math.floor(self.limits.max_seconds * config.sample_rate), config)

    async def outputs_from_features(self, features: np.ndarray) -> WindowOutputs:
        expected = self.frontend.config.feature_shape
        if features.ndim != 4 or features.shape[1:] != expected or len(features) == 0:
            raise InvalidParameter(f"log_mel must have shape [n, {', '.join(map(str, expected))}], got {list(features.shape)}")
        if len(features) > self.max_windows:  # as many as the longest recording /classify takes, not what fits the body
            raise PayloadTooLarge(
                f"log_mel has {len(features)} windows; at most {self.max_windows} are accepted (the windows of a"
                f" {self.limits.max_seconds:g} s recording)"
            )
        features = features.astype(np.float32, copy=False)
        if not np.isfinite(features).all():
            raise InvalidParameter("log_mel contains NaN or infinite values")
        return await self.window_outputs(features)

    # REST: /classify

    def _window_detections(self, scores: np.ndarray, detected: np.ndarray, top_k: int) -> list[dict[str, Any]]:
        order = [j for j in np.argsort(-scores) if detected[j]][:top_k]
        return [{"label": self.labels[j], "score": round(float(scores[j]), 6)} for j in order]

    async def classify(self, data: bytes, options: ClassifyOptions) -> dict[str, Any]:
        """A recording's file bytes -> per window the species detected (possibly none), per species a
        summary over the recording, audio facts, model and timings."""
        started = time.perf_counter()
        prepared = await self.prepare(data)
        timings = dict(prepared.timings)
        start = time.perf_counter()
        outputs = await self.window_outputs(prepared.windows.features)
        timings["inference"] = time.perf_counter() - start
        timings["model"] = outputs.model_seconds
        start = time.perf_counter()
        threshold = self.threshold if options.min_confidence is None else options.min_confidence
        detected = outputs.scores >= threshold
        # top_k caps what each window lists; the summary counts every detection.
        audio, spans = prepared.audio, prepared.windows.spans
        result: dict[str, Any] = {
            "model": self.info,
            "audio": {
                "duration_seconds": round(audio.duration_seconds, 4),
                "sample_rate": audio.sample_rate,
                "channels": audio.channels,
                "format": audio.format,
                "windows": len(spans),
            },
            "threshold": threshold,
            "summary": summarize(spans, outputs.scores, detected, self.labels),
        }
        if warning := self.frontend.config.band_limited(audio.sample_rate):
            result["warnings"] = [warning]
        if options.timeline:
            result["windows"] = [
                {"start": round(span.start, 3), "end": round(span.end, 3), "detections": self._window_detections(s, d, options.top_k)}
                for span, s, d in zip(spans, outputs.scores, detected, strict=True)
            ]
        if options.embeddings:
            result["embeddings"] = np.round(outputs.embeddings, 6).tolist()
        if options.spectrogram:
            result["spectrogram"] = spectrogram(prepared.windows.features, self.frontend.config, audio.duration_seconds)
        timings["postprocess"] = time.perf_counter() - start
        timings["total"] = time.perf_counter() - started
        if self.metrics:
            # At the calibrated threshold, whatever this request asked: the drift alert compares the
            # mix with validation's, which was counted at that threshold.
            calibrated = outputs.scores >= self.threshold
            self.metrics.record_classification(self.info, timings, calibrated, self.labels, audio.duration_seconds, audio.sample_rate)
        result["timings_ms"] = {k: round(v * 1e3, 3) for k, v in timings.items()}
        return result

    # KServe v2

    def metadata(self) -> dict[str, Any]:
        n_species = len(self.labels)
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
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, n_species]},
                {"name": EMBEDDING, "datatype": "FP32", "shape": [-1, -1]},
                {"name": "labels", "datatype": "BYTES", "shape": [n_species]},
            ],
            "parameters": {
                "inputs": "send exactly one: waveform = mono FP32 samples at "
                f"{config.sample_rate} Hz (cut into {config.clip_seconds:g} s windows, {config.stride_seconds:g} s apart), "
                "or log_mel = normalized log-mel windows",
                "sample_rate": config.sample_rate,
                "probabilities": SCORES_MEANING,
                "threshold": self.threshold,
                "embedding": "the pooled vector each window's scores are read from, for clustering and similarity search",
            },
        }

    async def infer(self, inputs: dict[str, Tensor]) -> dict[str, np.ndarray]:
        if set(inputs) == {"waveform"}:
            waveform = inputs["waveform"]
            if sum(d != 1 for d in waveform.shape) > 1:  # [n], or [1, n] from a client that batches
                raise InvalidParameter(f"waveform is one mono recording, shape [n_samples]; got shape {waveform.shape}")
            outputs = await self.outputs_from_waveform(numeric(waveform, "FP32 samples").reshape(-1))
        elif set(inputs) == {"log_mel"}:
            outputs = await self.outputs_from_features(numeric(inputs["log_mel"], "FP32 log-mel windows"))
        else:
            raise InvalidParameter(f"send exactly one input, 'waveform' or 'log_mel'; got {sorted(inputs)}")
        return {
            "probabilities": outputs.scores.astype(np.float32),
            EMBEDDING: outputs.embeddings.astype(np.float32),
            "labels": np.array([x.encode() for x in self.labels], dtype=object),
        }

"""chorus' Prometheus metrics (besides BentoML's built-ins), correct with several worker processes.

prometheus_client decides single- or multi-process mode when it is first imported, and BentoML
sets PROMETHEUS_MULTIPROC_DIR in each worker only after importing the service module: so the
metrics are created in the worker (`Metrics()` in a service's __init__), never at import time.
Units are in the names; buckets fit the measured timings (sub-millisecond stages included).
"""

from __future__ import annotations

import os

import numpy as np

# Seconds: post-processing takes ~0.1 ms, decode/features ~1-30 ms, a generate call seconds.
STAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256)
DURATION_BUCKETS = (1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
RATE_BUCKETS = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000, 96000)
NO_DETECTION = "(none)"
"""The label of the no-detection share in chorus_validation_detection_share."""
BYTES_BUCKETS = tuple(2**k for k in range(10, 27, 2))  # 1 KiB .. 64 MiB


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.stage_seconds = Histogram(
            "chorus_stage_duration_seconds",
            "Time per request stage: decode, resample, features, inference (round trip to the engine, "
            "queue wait included), postprocess, total (end to end).",
            ["model", "variant", "stage"],
            buckets=STAGE_BUCKETS,
        )
        self.batch_size = Histogram(
            "chorus_batch_size",
            "Items per engine batch, in each model's batch unit: 5 s windows (classifier) or images at one DDIM step (frames).",
            ["model"],
            buckets=BATCH_BUCKETS,
        )
        self.batch_seconds = Histogram(
            "chorus_batch_duration_seconds",
            "ONNX Runtime time per engine batch; request duration at the engine minus this is queue wait.",
            ["model", "variant"],
            buckets=STAGE_BUCKETS,
        )
        self.queue_wait_seconds = Histogram(
            "chorus_queue_wait_seconds",
            "Per request, time before the model ran on it: classifier, the engine round trip minus the ONNX Runtime "
            "time of the batch that held it (coalescing, batching wait and transport); frames, arrival at the "
            "step batcher to the first denoiser batch.",
            ["model"],
            buckets=STAGE_BUCKETS,
        )
        self.detections = Counter(
            "chorus_detections_total", "Windows in which each species was detected (at the request's threshold).", ["model", "label"]
        )
        self.windows = Counter("chorus_windows_total", "Windows classified.", ["model"])
        self.empty_windows = Counter("chorus_windows_without_detection_total", "Windows in which no species was detected.", ["model"])
        self.errors = Counter("chorus_errors_total", "Requests answered with an error.", ["route", "type", "status"])
        self.rejected = Counter("chorus_rejected_total", "Requests refused with 503 (overload or not ready).", ["route", "reason"])
        self.timeouts = Counter("chorus_timeouts_total", "Requests that passed their deadline (504).", ["route"])
        self.audio_seconds = Histogram("chorus_audio_duration_seconds", "Duration of received recordings.", buckets=DURATION_BUCKETS)
        self.sample_rate = Histogram("chorus_audio_sample_rate_hertz", "Sample rate of received recordings.", buckets=RATE_BUCKETS)
        self.body_bytes = Histogram("chorus_request_body_bytes", "Size of inference request bodies.", ["route"], buckets=BYTES_BUCKETS)
        self.in_flight = Gauge(
            "chorus_in_flight_requests",
            "Inference requests held by the API workers (the admission queue depth).",
            multiprocess_mode="livesum",
        )
        self.body_bytes_in_flight = Gauge(
            "chorus_body_bytes_in_flight",
            "Bytes of request bodies held in memory by the API workers (bounded by CHORUS_MAX_BODY_BYTES_IN_FLIGHT per worker).",
            multiprocess_mode="livesum",
        )
        self.engine_queue = Gauge(
            "chorus_engine_pending_items",
            "Items sent to the engine and not yet answered.",
            ["model"],
            multiprocess_mode="livesum",
        )
        self.model_info = Gauge(
            "chorus_model_info",
            "1 for each served model, with its name, version, variant and ONNX Runtime provider.",
            ["name", "version", "variant", "provider"],
            multiprocess_mode="max",
        )

        self.validation_detection_share = Gauge(
            "chorus_validation_detection_share",
            "Share of validation windows in which each species was detected at the calibrated threshold; label "
            f'"{NO_DETECTION}" for windows with none (the reference of the detection-drift alert).',
            ["model", "label"],
            multiprocess_mode="max",
        )

        self.job_windows = Counter(
            "chorus_job_windows_total", "Windows of analysis jobs the model ran (behind interactive ones).", ["model"]
        )
        self.jobs = Gauge(
            "chorus_jobs",
            "Analysis jobs by state (queued, running, done, failed, cancelled), as on disk.",
            ["state"],
            multiprocess_mode="max",
        )
        self.job_audio_seconds = Counter("chorus_job_audio_seconds_total", "Seconds of audio analysis jobs have analyzed.")
        self.engine_starts = Counter(
            "chorus_engine_starts_total",
            "Engine processes started since the server started: above 1, the engine died and BentoML started it again.",
        )
        self.engine_lost = Counter(
            "chorus_engine_lost_total", "Engine calls that found the engine gone (it crashed, is restarting or stopping): each a 503."
        )

    def record_engine_start(self) -> int:
        """Count this engine process's start; returns how many engine processes started before it."""
        before = 0.0
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # the other processes' counts live in its files
            from prometheus_client import CollectorRegistry, multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            before = registry.get_sample_value("chorus_engine_starts_total") or 0.0
        self.engine_starts.inc()
        return int(before)

    def record_error(self, route: str, kind: str, status: int) -> None:
        self.errors.labels(route, kind, str(status)).inc()
        if status == 503:
            self.rejected.labels(route, kind).inc()
        elif status == 504:
            self.timeouts.labels(route).inc()

    def record_classification(
        self, model: dict[str, str], timings: dict[str, float], detected: np.ndarray, labels: list[str], duration: float, rate: int
    ) -> None:
        """timings in seconds per stage; detected [windows, labels] says which species each window holds."""
        for stage, seconds in timings.items():
            self.stage_seconds.labels(model["name"], model["variant"], stage).observe(seconds)
        for j in np.flatnonzero(detected.any(axis=0)):
            self.detections.labels(model["name"], labels[j]).inc(int(detected[:, j].sum()))
        self.windows.labels(model["name"]).inc(len(detected))
        self.empty_windows.labels(model["name"]).inc(int((~detected.any(axis=1)).sum()))
        self.audio_seconds.observe(duration)
        self.sample_rate.observe(rate)

"""Every serving knob in one typed place. Each field reads env var CHORUS_<FIELD>, e.g.
CHORUS_BIRDCALL_MAX_BATCH_SIZE=32 for `birdcall_max_batch_size`.

A CHORUS_* variable that names no setting is an error at start (a typo would otherwise be
silently ignored), except the variables of chorus' other tools listed in OTHER_VARIABLES.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PREFIX = "CHORUS_"
OTHER_VARIABLES = {
    "CHORUS_HOME": "workspace of training, export and reports (layout/workspace.py)",
    "CHORUS_LOAD_POOL": "recordings the load test sends (loadtests/recordings.py)",
    "CHORUS_LOAD_POOL_DIR": "where the load test keeps them (loadtests/recordings.py)",
    "CHORUS_BASELINE_DEVICE": "device of the benchmark's torch baseline (benchmarks/baseline_app.py)",
    "CHORUS_TEST_ARTIFACTS": "where tests leave screenshots and logs (tests/)",
}
WEEK_SECONDS = 7 * 24 * 3600
"""The longest recording a job takes by default: what a field recorder left running for a week holds."""


class UnknownSettingError(ValueError):
    """A CHORUS_* environment variable names no setting."""


def _with_suggestion(name: str, known: set[str]) -> str:
    close = difflib.get_close_matches(name.upper(), known, 2)
    return f"{name} (did you mean {' or '.join(close)}?)" if close else name


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore")

    def __init__(self, **values: Any) -> None:
        self.check_environment()
        super().__init__(**values)

    # Models
    birdcall_model: str = Field("birdcall:latest", description="BentoML model tag of the exported birdcall model.")
    birdcall_variant: Literal["fp32", "int8", "fp16"] = Field(
        "fp32", description="ONNX variant to serve; fp16 is for GPUs (slower on CPU)."
    )
    frames_model: str = Field("frames:latest", description="BentoML model tag of the exported frames denoiser.")
    frames_variant: Literal["fp32", "fp16"] = Field("fp32", description="ONNX variant of the denoiser.")
    providers: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="ONNX Runtime providers: auto takes CUDA when onnxruntime-gpu sees a GPU, else CPU."
    )
    ort_lanes: int = Field(
        0, ge=0, description="Slices of each batch run at once (service/engine/runtime.py); 0: one per CPU core, 1 on a GPU."
    )
    ort_threads: int = Field(0, ge=0, description="ORT intra-op threads per slice; 0: the cores divided by the lanes.")
    ort_max_run_items: int = Field(
        8,
        ge=0,
        description="Most items (windows, images) one ONNX Runtime run takes on CPU; larger batches run in slices of this "
        "size across the lanes. Bounds the runtime's arena (it keeps its peak activations) at no throughput cost "
        "measured (docs/benchmarks.md). 0: one run per lane.",
    )

    # Adaptive batching (BentoML): units are windows (birdcall) and denoising steps (frames)
    birdcall_max_batch_size: int = Field(64, ge=1, description="Most 5 s windows in one birdcall batch.")
    birdcall_max_latency_ms: int = Field(
        2000, ge=1, description="Longest a window may wait for and run in a batch before BentoML answers 503, in ms."
    )
    frames_max_batch_size: int = Field(
        32, ge=1, description="Most images in one denoiser batch (each image at its own DDIM step); at least max_images."
    )
    frames_pad_batches: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Pad each denoiser batch with zero images to the next power of two (at most frames_max_batch_size) "
        "and warm each such size at load: a GPU runs this Unet in the same time at batch 1 or 16, while ONNX Runtime's "
        "CUDA provider pays for each new shape. auto: on where the denoiser runs on CUDA (on a CPU the padding is work).",
    )
    frames_max_latency_ms: int = Field(
        10_000, ge=1, description="Batch latency budget of one bare denoiser call (KServe frames-denoiser), in ms."
    )
    warmup_batch_sizes: tuple[int, ...] = Field((1, 8, 32, 64), description="Batch sizes run once before /readyz says ready.")

    # Requests
    max_upload_bytes: int = Field(32 * 1024 * 1024, ge=1, description="Largest accepted request body, in bytes (413 past it).")
    max_kserve_json_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1,
        description="Largest JSON part of a KServe v2 HTTP request, in bytes (413 past it). Tensor data as JSON numbers takes"
        " ~15 times its size in memory while it is parsed; the binary tensor data extension (tritonclient's default) carries"
        " tensors up to max_upload_bytes at their own size.",
    )
    max_audio_seconds: float = Field(600.0, gt=0, description="Longest accepted recording, in seconds (413 past it).")
    max_audio_samples: int = Field(
        600 * 96_000 * 2,
        ge=1,
        description="Most decoded samples (frames x channels) of one recording, checked on the header and while decoding "
        "(413 past it): bounds the work a small, highly compressed file can cause. Default: 10 min of 96 kHz stereo.",
    )
    max_batch_files: int = Field(16, ge=1, description="Most files in one /classify/batch request.")
    default_top_k: int = Field(3, ge=1, description="Species per window and overall when the request does not say.")
    max_in_flight: int = Field(256, ge=1, description="Inference requests one API worker holds at once; past it: 503 with Retry-After.")
    max_body_bytes_in_flight: int = Field(
        512 * 1024 * 1024,
        ge=1,
        description="Bytes of request bodies one API worker holds in memory at once, counted as they arrive (the requests in"
        " flight, and the work cancelled ones leave on threads); past it: 503 with Retry-After. At least max_upload_bytes"
        " and max_kserve_json_bytes: unset, it is raised to the larger of them.",
    )
    retry_after_seconds: int = Field(1, ge=1, description="Retry-After sent with 503 overload answers, in seconds.")
    default_deadline_seconds: float = Field(
        60.0, gt=0, description="Per-request deadline unless the X-Request-Timeout header (seconds) says less; 504 past it."
    )
    api_token: str | None = Field(
        None, description="When set, inference routes need 'Authorization: Bearer <token>' (health and /metrics stay open)."
    )

    # Analysis jobs
    job_windows_per_batch: int = Field(
        8,
        ge=1,
        description="Most analysis-job windows in one model run: they fill interactive batches up to this and run in batches of "
        "this size when no interactive batch waits, so /classify waits at most one such batch.",
    )
    max_job_upload_bytes: int = Field(
        8 * 1024**3, ge=1, description="Largest recording uploaded for an analysis job, in bytes (413 while it streams)."
    )
    max_job_audio_seconds: float = Field(
        float(WEEK_SECONDS),
        gt=0,
        description="Longest recording an analysis job decodes, in seconds, checked on the header and while decoding: a longer"
        " one is a failed file in the job's errors table, the others go on. Bytes do not bound it (a FLAC of silence"
        " decodes to days from megabytes). Default: a week.",
    )
    max_job_audio_samples: int = Field(
        WEEK_SECONDS * 48_000 * 2,
        ge=1,
        description="Most decoded samples (frames x channels) of one recording an analysis job decodes, checked as"
        " max_job_audio_seconds is: bounds the decoding work of many channels at a high rate. Default: a week of 48 kHz stereo.",
    )
    min_job_upload_bytes_per_second: float = Field(
        16 * 1024,
        gt=0,
        description="Slowest average rate a job's upload may arrive at, counted from its start once it has run for read_timeout_seconds;"
        " 408 under it. Uploads have no overall timeout (a large one takes as long as the link needs): this ends one that trickles"
        " a byte at a time while it holds one of max_pending_uploads.",
    )
    max_pending_uploads: int = Field(
        32,
        ge=1,
        description="Most uploads no job has taken yet, kept at once; past it POST /jobs/uploads is a 429 (submit or delete some).",
    )
    max_unfinished_jobs: int = Field(
        64, ge=1, description="Most jobs queued or running at once; past it a submission is a 429 (wait for some, or cancel them)."
    )
    analyze_root: str | None = Field(
        None, description="Folder whose files and subfolders analysis jobs may name by path; unset: jobs take uploads only."
    )
    jobs_home: str | None = Field(None, description="Where jobs keep their uploads, journals and tables; default: $CHORUS_HOME/jobs.")
    jobs_keep_hours: float | None = Field(
        None,
        gt=0,
        description="Finished jobs (by their last state change) older than this are deleted by the server, tables and input "
        "with them; unset: kept until a client deletes them (DELETE /jobs/{id}).",
    )
    uploads_keep_hours: float = Field(
        1.0,
        gt=0,
        description="Uploads no job took are deleted this long after their last write, so that their bounded room "
        "(CHORUS_MAX_PENDING_UPLOADS) frees itself when a client fills it and leaves.",
    )

    # Frames generation limits
    max_images: int = Field(16, ge=1, description="Most images per /generate request.")
    min_steps: int = Field(5, ge=1, description="Fewest DDIM steps per /generate request.")
    max_steps: int = Field(250, ge=1, description="Most DDIM steps per /generate request.")

    # Processes and ports
    api_workers: int = Field(1, ge=1, description="API worker processes (decode and features run here).")
    engine_access_log: bool = Field(
        False,
        description="Log every API -> engine call too. Off by default: each client request is already in the "
        "API's access log with its trace id.",
    )
    engine_tracing: bool = Field(
        False,
        description="Trace API -> engine calls (OpenTelemetry) when BentoML tracing is configured. Off by default: "
        "the engine's tracing middleware cost about a quarter of its per-call work even unsampled.",
    )
    malloc_trim_seconds: float = Field(
        30.0,
        ge=0,
        description="How often the API worker hands freed heap memory back to the OS (glibc malloc_trim), in s; 0: never. "
        "Decoding frees megabytes per request, and glibc keeps freed pages of its arenas mapped.",
    )
    grpc_port: int = Field(3001, ge=0, description="Port of the KServe v2 gRPC server; 0 disables it.")
    grpc_host: str | None = Field(
        None, description="Address the gRPC server listens on; default: the HTTP server's (bentoml serve --host)."
    )

    # Connections and shutdown
    header_timeout_seconds: float = Field(
        10.0, gt=0, description="Longest wait for a request's head (line and headers), in s; the connection is closed past it (408)."
    )
    max_header_bytes: int = Field(
        64 * 1024,
        ge=1024,
        description="Most bytes of a request's head (request line and headers); the connection is closed past it (431).",
    )
    read_timeout_seconds: float = Field(30.0, gt=0, description="Longest wait for the next chunk of a request body, in s; 408 past it.")
    engine_check_seconds: float = Field(
        5.0,
        gt=0,
        description="Longest wait for the engine's readiness, status and model list, together, in s; past it /readyz says not ready and a"
        " route 503 + Retry-After, so an engine that does not answer cannot hold probes (or a shutdown) for the request timeout.",
    )
    drain_seconds: float = Field(
        30.0, gt=0, description="On SIGTERM, longest wait for requests in flight to finish, in s; new ones get 503 + Retry-After meanwhile."
    )

    @classmethod
    def check_environment(cls, environ: Mapping[str, str] | None = None) -> None:
        """Raise UnknownSettingError for a CHORUS_* variable that is neither a setting nor another tool's."""
        known = {PREFIX + name.upper() for name in cls.model_fields} | set(OTHER_VARIABLES)
        names = os.environ if environ is None else environ
        unknown = sorted(k for k in names if k.upper().startswith(PREFIX) and k.upper() not in known)
        if unknown:
            hints = [_with_suggestion(name, known) for name in unknown]
            raise UnknownSettingError(
                f"unknown chorus setting(s): {'; '.join(hints)}. The settings are listed in service/settings.py and docs/serving.md"
            )

    @model_validator(mode="after")
    def _one_body_fits_in_flight(self) -> ServiceSettings:
        if "max_body_bytes_in_flight" not in self.model_fields_set:
            # Unset, it follows a raised body limit: a deployment that raised only that keeps starting.
            self.max_body_bytes_in_flight = max(self.max_body_bytes_in_flight, self.max_upload_bytes, self.max_kserve_json_bytes)
        for name in ("max_upload_bytes", "max_kserve_json_bytes"):
            if self.max_body_bytes_in_flight < getattr(self, name):
                raise ValueError(
                    f"CHORUS_MAX_BODY_BYTES_IN_FLIGHT ({self.max_body_bytes_in_flight}) must be at least CHORUS_{name.upper()}"
                    f" ({getattr(self, name)}): a body of the largest accepted size would never pass"
                )
        return self

    @model_validator(mode="after")
    def _one_request_fits_one_batch(self) -> ServiceSettings:
        # A /generate request's images go through the step batcher together.
        if self.max_images > self.frames_max_batch_size:
            raise ValueError(
                f"CHORUS_MAX_IMAGES ({self.max_images}) must not exceed CHORUS_FRAMES_MAX_BATCH_SIZE ({self.frames_max_batch_size})"
            )
        return self


def settings_table() -> str:
    """The Markdown table of every setting (variable, default, meaning) that docs/serving.md holds."""
    rows = ["| variable | default | what it sets |", "|---|---|---|"]
    for name, field in ServiceSettings.model_fields.items():
        default = "unset" if field.default is None else f"`{field.default}`"
        text = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{PREFIX}{name.upper()}` | {default} | {text} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":  # uv run python -m service.settings: the table, to paste into docs/serving.md
    print(settings_table(), end="")

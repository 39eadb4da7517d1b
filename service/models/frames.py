"""frames: piano-video frames from a DDPM denoiser, sampled with DDIM.

/generate sends one call per request to the engine, whose step batcher runs the DDIM loop with the
steps of all requests in shared batches. KServe clients get the bare denoiser
(`frames-denoiser`) to run a loop of their own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from layout import artifacts
from service.concurrency import gather_or_cancel
from service.engine.client import BatchCall, EngineClient
from service.engine.contracts import StepPlanes
from service.errors import InvalidParameter
from service.metrics import Metrics
from service.models.base import ServedModel
from service.models.tasks import GenerateRequest, ImageGenerator
from service.settings import ServiceSettings
from service.store import StoredModel
from service.tensors import Tensor, numeric

SAMPLE_METHOD = "frames_sample"
DENOISE_METHOD = "frames_denoise"
# The engine gives up a moment after the API's own deadline (504) so its work stops too.
ENGINE_DEADLINE_SLACK_SECONDS = 1.0


@dataclass(frozen=True)
class FramesLimits:
    max_images: int
    """Most images per /generate request."""
    min_steps: int
    max_steps: int
    """DDIM steps per /generate request."""
    max_batch: int
    """Most images of one denoiser engine call; larger KServe requests go in chunks."""


def stored_schedule(stored: StoredModel) -> tuple[np.ndarray, int]:
    """The training's diffusion schedule (alphas_cumprod, one per timestep) and the image size."""
    config = stored.config
    return np.asarray(config[artifacts.ALPHAS_CUMPROD], np.float64), int(config[artifacts.ARCH][artifacts.IMAGE_SIZE])


class FramesModel(ServedModel, ImageGenerator):
    store_name = "frames"
    name = "frames-denoiser"
    outputs: ClassVar[tuple[str, ...]] = ("v",)
    stored_files: ClassVar[tuple[str, ...]] = (artifacts.CONFIG,)

    def __init__(
        self,
        info: dict[str, str],
        alphas_cumprod: np.ndarray,
        image_size: int,
        engine: EngineClient,
        limits: FramesLimits,
        metrics: Metrics | None = None,
    ):
        super().__init__(info)
        self.alphas_cumprod = alphas_cumprod
        self.image_size = image_size
        self._engine = engine
        self._denoise: BatchCall = engine.batched(DENOISE_METHOD, self.store_name, limits.max_batch)
        self.limits = limits
        self.metrics = metrics

    @classmethod
    def build(
        cls, stored: StoredModel, info: dict[str, str], engine: EngineClient, settings: ServiceSettings, metrics: Metrics
    ) -> FramesModel:
        alphas, image_size = stored_schedule(stored)
        limits = FramesLimits(settings.max_images, settings.min_steps, settings.max_steps, settings.frames_max_batch_size)
        return cls(info, alphas, image_size, engine, limits, metrics)

    # REST: /generate

    def validate(self, request: GenerateRequest) -> None:
        limits = self.limits
        problems = []
        if not 1 <= request.count <= limits.max_images:
            problems.append(f"count must be 1-{limits.max_images}, got {request.count}")
        if not limits.min_steps <= request.steps <= limits.max_steps:
            problems.append(f"steps must be {limits.min_steps}-{limits.max_steps}, got {request.steps}")
        if not 0 <= request.seed < 2**63:
            problems.append(f"seed must be 0 to 2**63-1, got {request.seed}")
        if problems:
            accepted = {"count": [1, limits.max_images], "steps": [limits.min_steps, limits.max_steps]}
            raise InvalidParameter("; ".join(problems), accepted=accepted)

    async def generate(self, request: GenerateRequest, timeout_seconds: float) -> tuple[np.ndarray, dict[str, float]]:
        """[count, H, W, 3] uint8 images and timings (ms); the engine drops the work past timeout_seconds."""
        self.validate(request)
        started = time.perf_counter()
        images = await self._engine.call(
            SAMPLE_METHOD,
            self.store_name,
            request.count,
            count=request.count,
            steps=request.steps,
            seed=request.seed,
            timeout_seconds=timeout_seconds + ENGINE_DEADLINE_SLACK_SECONDS,
        )
        total = time.perf_counter() - started
        if self.metrics:
            self.metrics.stage_seconds.labels(self.info["name"], self.info["variant"], "total").observe(total)
        return images, {"total": round(total * 1e3, 3)}

    # KServe v2: the bare denoiser

    async def denoise(self, x_t: np.ndarray, t: np.ndarray) -> np.ndarray:
        """v for any number of images, in chunks the engine accepts."""
        shape = (3, self.image_size, self.image_size)
        if x_t.ndim != 4 or x_t.shape[1:] != shape or t.shape != (len(x_t),) or len(x_t) == 0:
            raise InvalidParameter(f"x_t must be [n, {', '.join(map(str, shape))}] and t [n], got {list(x_t.shape)} and {list(t.shape)}")
        if not (np.isfinite(x_t).all() and np.isfinite(t).all()):
            raise InvalidParameter("x_t and t must be finite")
        if not ((t >= 0) & (t < len(self.alphas_cumprod))).all():
            raise InvalidParameter(f"t must hold timesteps from 0 to {len(self.alphas_cumprod) - 1}")
        step = self.limits.max_batch
        parts = range(0, len(x_t), step)
        outs = await gather_or_cancel(*(self._denoise(StepPlanes.pack(x_t[i : i + step], t[i : i + step])) for i in parts))
        v = np.concatenate(outs)
        # The engine refuses a model whose outputs are not finite at load: here the inputs are the cause.
        if not np.isfinite(v).all():
            raise InvalidParameter("the denoiser's outputs for these inputs are not finite: x_t lies far outside the range it knows")
        return v

    def metadata(self) -> dict[str, Any]:
        size = self.image_size
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": "onnxruntime_onnx",
            "inputs": [
                {"name": "x_t", "datatype": "FP32", "shape": [-1, 3, size, size]},
                {"name": "t", "datatype": "FP32", "shape": [-1]},
            ],
            "outputs": [{"name": "v", "datatype": "FP32", "shape": [-1, 3, size, size]}],
            "parameters": {"objective": "pred_v", "timesteps": len(self.alphas_cumprod)},
        }

    async def infer(self, inputs: dict[str, Tensor]) -> dict[str, np.ndarray]:
        if set(inputs) != {"x_t", "t"}:
            raise InvalidParameter(f"send inputs 'x_t' and 't'; got {sorted(inputs)}")
        x_t = numeric(inputs["x_t"], "FP32 images").astype(np.float32)
        t = numeric(inputs["t"], "FP32 timesteps").astype(np.float32)
        return {"v": await self.denoise(x_t, t)}

"""frames: images/s of the raw engine, chorus served, and torch eager sequential DDIM (the seed's way)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np

from benchmarks.load import LevelResult, check_served_device, sweep
from service.engine.ddim import ddim_sample
from service.engine.runtime import open_runner
from service.local_server import serve
from service.models.frames import stored_schedule
from service.settings import ServiceSettings
from service.store import StoredModel


def raw_engine(stored: StoredModel, steps: int, providers: list[str], seconds: float = 8.0) -> dict:
    """ORT (run as the engine runs it) + the numpy DDIM loop in-process, 1, 8 and 16 images per call."""
    alphas, size = stored_schedule(stored)
    engine = ServiceSettings()  # run ORT exactly as the engine does
    runner = open_runner(stored.onnx_path("fp32"), providers, engine.ort_threads, engine.ort_lanes, engine.ort_max_run_items)

    async def denoise(x: np.ndarray, t: np.ndarray) -> np.ndarray:
        return runner.run({"x_t": x, "t": t})[0]

    result = {}
    for count in (1, 8, 16):
        asyncio.run(ddim_sample(denoise, alphas, (count, 3, size, size), steps, 10**6))  # untimed: first runs pay set-up
        images, start, seed = 0, time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            asyncio.run(ddim_sample(denoise, alphas, (count, 3, size, size), steps, seed))
            images += count
            seed += 1
        result[f"batch{count}_images_per_s"] = round(images / (time.perf_counter() - start), 2)
    return result


def torch_eager(workspace_checkpoint: Path, steps: int, device: str = "cpu", seconds: float = 8.0) -> dict:
    """The seed: denoising-diffusion-pytorch's own DDIM sampler, one image after another."""
    import os

    os.environ["TQDM_DISABLE"] = "1"  # the sampler draws a progress bar per image
    import torch

    from training.checkpoint import load_checkpoint, load_weights
    from training.train_frames import FramesArch, build_diffusion

    checkpoint = load_checkpoint(workspace_checkpoint)
    arch = FramesArch(**checkpoint.config["arch"])
    diffusion = build_diffusion(arch, sampling_steps=steps)
    load_weights(diffusion.model, checkpoint)
    diffusion.to(device).eval()
    with torch.inference_mode():
        diffusion.ddim_sample((1, 3, arch.image_size, arch.image_size))  # untimed: the first call pays set-up (CUDA's too)
        if device != "cpu":
            torch.cuda.synchronize()
        images, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            diffusion.ddim_sample((1, 3, arch.image_size, arch.image_size))
            images += 1
        if device != "cpu":
            torch.cuda.synchronize()
    return {"images_per_s": round(images / (time.perf_counter() - start), 2)}


def served(steps: int, levels: tuple[int, ...], seconds: float, **env: str) -> list[LevelResult]:
    requests = [("/generate", {"json": {"steps": steps, "seed": s, "format": "json"}}) for s in range(16)]
    with serve(**env) as url:
        check_served_device(url, *requests[0], env.get("CHORUS_PROVIDERS"))
        return sweep(url, requests, levels, seconds)

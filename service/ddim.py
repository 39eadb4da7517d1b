"""DDIM sampling (eta = 0) in numpy, step for step as denoising-diffusion-pytorch's ddim_sample with pred_v.

The loop lives outside the ONNX graph so every step is one batchable denoiser call, and steps of
different requests share batches.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import numpy as np

Denoise = Callable[[np.ndarray, np.ndarray], Awaitable[np.ndarray]]


def time_pairs(total_timesteps: int, steps: int) -> list[tuple[int, int]]:
    """[(T-1, t1), ..., (t_k, -1)]: the library's float32 linspace, truncated to int."""
    times = np.linspace(-1, total_timesteps - 1, steps + 1, dtype=np.float32).astype(np.int64)
    times = times[::-1].tolist()
    return list(zip(times[:-1], times[1:]))


async def ddim_sample(
    denoise: Denoise, alphas_cumprod: np.ndarray, shape: tuple[int, ...], steps: int, seed: int
) -> np.ndarray:
    """Images in [0, 1], float32 [n, C, H, W]. Same seed, steps and model -> same images."""
    rng = np.random.default_rng(seed)
    img = rng.standard_normal(shape, dtype=np.float32)
    for time, time_next in time_pairs(len(alphas_cumprod), steps):
        alpha = alphas_cumprod[time]
        t = np.full(shape[0], time, dtype=np.float32)
        v = await denoise(img, t)
        x_start = np.clip(np.sqrt(alpha) * img - np.sqrt(1 - alpha) * v, -1.0, 1.0)
        if time_next < 0:
            img = x_start
            break
        pred_noise = (img / np.sqrt(alpha) - x_start) / np.sqrt(1 / alpha - 1)
        alpha_next = alphas_cumprod[time_next]
        img = (x_start * np.sqrt(alpha_next) + np.sqrt(1 - alpha_next) * pred_noise).astype(np.float32)
    return ((img + 1) / 2).astype(np.float32)


def to_uint8_images(images: np.ndarray) -> np.ndarray:
    """[n, C, H, W] in [0, 1] -> [n, H, W, C] uint8."""
    return (np.clip(images, 0, 1).transpose(0, 2, 3, 1) * 255).round().astype(np.uint8)

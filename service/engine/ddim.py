"""DDIM sampling (eta = 0) in numpy, step for step as denoising-diffusion-pytorch's ddim_sample with pred_v.

The loop lives outside the ONNX graph so every step is one denoiser call, and steps of different
requests can share a batch (service/engine/step_batching.py). `ddim_step` takes one timestep per image
for that reason; `ddim_sample` is the one-request loop (reference and in-process benchmark).
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable

import numpy as np

Denoise = Callable[[np.ndarray, np.ndarray], Awaitable[np.ndarray]]


def time_pairs(total_timesteps: int, steps: int) -> list[tuple[int, int]]:
    """[(T-1, t1), ..., (t_k, -1)]: the library's float32 linspace, truncated to int."""
    times = np.linspace(-1, total_timesteps - 1, steps + 1, dtype=np.float32).astype(np.int64)
    times = times[::-1].tolist()
    return list(itertools.pairwise(times))


def initial_noise(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """x_T for a request: same seed, same noise, whatever else is being generated."""
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def ddim_step(img: np.ndarray, v: np.ndarray, alphas_cumprod: np.ndarray, time: np.ndarray, time_next: np.ndarray) -> np.ndarray:
    """One update per image: x_t -> x_{t_next}, or the clipped x_0 estimate where t_next is -1.

    time and time_next are int arrays with one entry per image, so images at different steps
    update together.
    """
    alpha = alphas_cumprod[time].reshape(-1, 1, 1, 1)
    alpha_next = alphas_cumprod[np.maximum(time_next, 0)].reshape(-1, 1, 1, 1)
    x_start = np.clip(np.sqrt(alpha) * img - np.sqrt(1 - alpha) * v, -1.0, 1.0)
    pred_noise = (img / np.sqrt(alpha) - x_start) / np.sqrt(1 / alpha - 1)
    stepped = x_start * np.sqrt(alpha_next) + np.sqrt(1 - alpha_next) * pred_noise
    return np.where((time_next < 0).reshape(-1, 1, 1, 1), x_start, stepped).astype(np.float32)


def to_unit_range(img: np.ndarray) -> np.ndarray:
    """x_0 in [-1, 1] -> images in [0, 1]."""
    return ((img + 1) / 2).astype(np.float32)


async def ddim_sample(denoise: Denoise, alphas_cumprod: np.ndarray, shape: tuple[int, ...], steps: int, seed: int) -> np.ndarray:
    """Images in [0, 1], float32 [n, C, H, W]. Same seed, steps and model -> same images."""
    img = initial_noise(shape, seed)
    for time, time_next in time_pairs(len(alphas_cumprod), steps):
        v = await denoise(img, np.full(shape[0], time, dtype=np.float32))
        img = ddim_step(img, v, alphas_cumprod, np.full(shape[0], time), np.full(shape[0], time_next))
    return to_unit_range(img)


def to_uint8_images(images: np.ndarray) -> np.ndarray:
    """[n, C, H, W] in [0, 1] -> [n, H, W, C] uint8."""
    return (np.clip(images, 0, 1).transpose(0, 2, 3, 1) * 255).round().astype(np.uint8)

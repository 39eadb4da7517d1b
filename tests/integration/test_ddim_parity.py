"""The serving DDIM loop (numpy, one batchable call per step) against denoising-diffusion-pytorch's own sampler."""

from __future__ import annotations

import asyncio

import numpy as np
import torch

from service.engine.ddim import ddim_sample


def test_numpy_ddim_matches_denoising_diffusion_pytorch(tiny_frames, tiny_workspace, monkeypatch):
    """The serving loop (numpy, one batchable call per step) reproduces the library's ddim_sample."""
    from training.checkpoint import load_checkpoint, load_weights
    from training.train_frames import FramesArch, build_diffusion

    checkpoint = load_checkpoint(tiny_workspace.checkpoint_dir("frames"))
    arch = FramesArch(**checkpoint.config["arch"])
    steps, seed = 7, 3
    diffusion = build_diffusion(arch, sampling_steps=steps)
    load_weights(diffusion.model, checkpoint)
    diffusion.eval()
    shape = (2, 3, arch.image_size, arch.image_size)
    start = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)  # what ddim_sample draws

    async def denoise(x: np.ndarray, t: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return diffusion.model(torch.from_numpy(x), torch.from_numpy(t)).numpy()

    ours = asyncio.run(ddim_sample(denoise, diffusion.alphas_cumprod.double().numpy(), shape, steps, seed))
    monkeypatch.setattr(torch, "randn", lambda *a, **k: torch.from_numpy(start.copy()))
    with torch.inference_mode():
        theirs = diffusion.ddim_sample(shape).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-4)

"""Export the frames denoiser: one Unet call, (x_t [B,3,H,W], t [B]) -> v [B,3,H,W], in fp32 and fp16.

The DDIM loop stays outside the graph (numpy in the service), so requests at different steps
can share one batch. int8 is skipped: it measured slower than fp32 for this Unet.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from denoising_diffusion_pytorch import Unet
from torch import nn

from export.parity import OutputKind, Tolerance
from export.pipeline import ExportJob, already_registered, export_digest, run_export
from layout import artifacts
from layout.artifacts import CONFIG, METRICS, WEIGHTS
from layout.workspace import Workspace
from training.checkpoint import load_checkpoint, load_weights
from training.frames_synth import render_frames
from training.train_frames import FramesArch

OUTPUTS = {"v": OutputKind.TENSOR}
TOLERANCES = {
    "fp32": Tolerance(max_abs_diff=1e-3),
    "fp16": Tolerance(max_abs_diff=5e-2),
}
VARIANTS = ("fp32", "fp16")
HELD_OUT_SEED = 1_000_003  # not the training seed


class Denoiser(nn.Module):
    """The exported graph: t is float32 so clients of any protocol can send it as a plain tensor."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(x_t, t)


def held_out_inputs(arch: FramesArch, alphas_cumprod: np.ndarray, n: int = 48) -> dict[str, np.ndarray]:
    """Noised held-out keyboard frames at random timesteps, as q_sample makes them in training."""
    rng = np.random.default_rng(HELD_OUT_SEED)
    x0 = render_frames(n, arch.image_size, HELD_OUT_SEED).transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0
    t = rng.integers(0, len(alphas_cumprod), n)
    a = alphas_cumprod[t].reshape(-1, 1, 1, 1)
    x_t = np.sqrt(a) * x0 + np.sqrt(1 - a) * rng.standard_normal(x0.shape)
    return {"x_t": x_t.astype(np.float32), "t": t.astype(np.float32)}


def export_frames(
    workspace: Workspace, *, variants: tuple[str, ...] = VARIANTS, tolerances: dict[str, Tolerance] | None = None
) -> dict[str, Any]:
    tolerances = {**TOLERANCES, **(tolerances or {})}
    checkpoint = load_checkpoint(workspace.checkpoint_dir("frames"))
    digest = export_digest(checkpoint, (WEIGHTS, CONFIG), variants, tolerances)
    reports = workspace.reports_dir("frames")
    if (report := already_registered("frames", digest, reports)) is not None:
        return report
    arch = FramesArch(**checkpoint.config[artifacts.ARCH])
    unet = load_weights(Unet(**arch.unet_kwargs()), checkpoint)
    job = ExportJob(
        name="frames",
        checkpoint=checkpoint,
        module=Denoiser(unet),
        inputs=held_out_inputs(arch, np.asarray(checkpoint.config[artifacts.ALPHAS_CUMPROD])),
        outputs=OUTPUTS,
        variants=variants,
        tolerances=tolerances,
        digest=digest,
        store_labels={"task": "image-generation", "image_size": str(arch.image_size)},
        metadata={artifacts.ARCH: checkpoint.config[artifacts.ARCH], "training_metrics": checkpoint.metrics},
        checkpoint_files=(CONFIG, METRICS),
        bench_batch_sizes=(1, 8, 32),
    )
    return run_export(job, reports)

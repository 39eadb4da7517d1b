"""Train the frames DDPM: denoising-diffusion-pytorch Unet + GaussianDiffusion with the seed's choices
(pred_v objective, sigmoid beta schedule, 1000 training steps, DDIM sampling)."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from denoising_diffusion_pytorch import GaussianDiffusion, Unet
from ema_pytorch import EMA
from tqdm import tqdm

from layout import artifacts
from layout.workspace import Workspace
from training.checkpoint import save_checkpoint
from training.frames_data import folder_hash, generate_frames, load_frames
from training.plots import plot_curves, save_image_grid


@dataclass(frozen=True)
class FramesArch:
    """Unet and diffusion settings; `unet` kwargs go straight to denoising_diffusion_pytorch.Unet."""

    image_size: int = 32
    dim: int = 32
    dim_mults: tuple[int, ...] = (1, 2, 4)
    timesteps: int = 1000
    objective: str = "pred_v"
    beta_schedule: str = "sigmoid"

    def unet_kwargs(self) -> dict:
        return {"dim": self.dim, "dim_mults": tuple(self.dim_mults), "channels": 3, "flash_attn": False}


@dataclass(frozen=True)
class FramesProfile:
    name: str
    arch: FramesArch
    n_images: int
    max_steps: int
    max_minutes: float
    """Wall-clock budget for the step loop."""
    batch_size: int = 32
    lr: float = 2e-3
    ema_decay: float = 0.995
    sample_steps: int = 50
    """DDIM steps for the sample grid."""
    seed: int = 0


PROFILES = {
    "default": FramesProfile("default", FramesArch(dim=16), n_images=4000, max_steps=2500, max_minutes=5.0, batch_size=16),
    "full": FramesProfile(
        "full",
        FramesArch(image_size=128, dim=64, dim_mults=(1, 2, 4, 8)),
        n_images=20000,
        max_steps=100_000,
        max_minutes=600,
        batch_size=16,
        lr=8e-5,
    ),
    "tiny": FramesProfile(
        "tiny",
        FramesArch(image_size=16, dim=8, dim_mults=(1, 2)),
        n_images=64,
        max_steps=4,
        max_minutes=1,
        batch_size=8,
        sample_steps=3,
    ),
}


def build_diffusion(arch: FramesArch, sampling_steps: int | None = None) -> GaussianDiffusion:
    unet = Unet(**arch.unet_kwargs())
    return GaussianDiffusion(
        unet,
        image_size=arch.image_size,
        timesteps=arch.timesteps,
        sampling_timesteps=sampling_steps or arch.timesteps,
        objective=arch.objective,
        beta_schedule=arch.beta_schedule,
    )


def train_frames(profile: FramesProfile, workspace: Workspace, data_dir: Path | None = None) -> dict:
    """Render data if none is given, train for a step/time budget, save the EMA weights and a sample grid."""
    started = time.perf_counter()
    torch.manual_seed(profile.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    arch = profile.arch
    if data_dir is None:
        data_dir = workspace.data_dir("frames") / f"{profile.name}_{arch.image_size}px"
        if not any(data_dir.glob("*.png")):
            generate_frames(data_dir, profile.n_images, arch.image_size, profile.seed)
    images = torch.from_numpy(load_frames(data_dir, arch.image_size)).permute(0, 3, 1, 2).float() / 255.0
    diffusion = build_diffusion(arch, sampling_steps=profile.sample_steps)
    ema = EMA(diffusion, beta=profile.ema_decay, update_after_step=min(100, profile.max_steps // 2), update_every=1)
    optimizer = torch.optim.Adam(diffusion.parameters(), lr=profile.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=profile.max_steps, eta_min=profile.lr * 0.05)
    generator = torch.Generator().manual_seed(profile.seed)
    deadline = time.perf_counter() + profile.max_minutes * 60
    losses, window = [], []
    history: dict[str, list[float]] = {"train_loss": []}
    bar = tqdm(range(1, profile.max_steps + 1), desc="train frames", unit="step")
    step = 0
    for step in bar:
        diffusion.train()
        batch = images[torch.randint(len(images), (profile.batch_size,), generator=generator)]
        loss = diffusion(batch)  # GaussianDiffusion normalizes [0, 1] -> [-1, 1] itself
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(diffusion.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        ema.update()
        losses.append(loss.item())
        window.append(loss.item())
        if step % 50 == 0 or step == profile.max_steps:
            bar.set_postfix(loss=f"{np.mean(window):.4f}")
            history["train_loss"].append(float(np.mean(window)))
            window = []
        if time.perf_counter() > deadline:
            break
    if window:
        history["train_loss"].append(float(np.mean(window)))

    ema_model = ema.ema_model.eval()
    torch.manual_seed(profile.seed)
    samples = ema_model.sample(batch_size=32)
    grid = (samples.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    reports = workspace.reports_dir("frames")
    save_image_grid(grid, reports / "samples.png")
    save_image_grid(images[:32].permute(0, 2, 3, 1).mul(255).round().byte().numpy(), reports / "training_data.png")
    plot_curves(history, reports / "training_curves.png", f"frames ({profile.name}), loss every 50 steps")

    checkpoint_dir = workspace.checkpoint_dir("frames")
    final_loss = float(np.mean(losses[-50:]))
    metrics = {
        "model": "frames",
        "profile": profile.name,
        "final_loss": round(final_loss, 5),
        "steps": step,
        "images": len(images),
        "image_size": arch.image_size,
        "data_hash": folder_hash(data_dir),
        "data_dir": str(data_dir),
        "parameters": sum(p.numel() for p in ema_model.model.parameters()),
        "seconds": round(time.perf_counter() - started, 1),
        "checkpoint": str(checkpoint_dir),
        "samples": str(reports / "samples.png"),
    }
    config = {
        "model": "frames",
        artifacts.ARCH: asdict(arch),
        # The serving DDIM loop reads the schedule from here, so it cannot drift from training.
        artifacts.ALPHAS_CUMPROD: ema_model.alphas_cumprod.double().tolist(),
        "training": {"profile": asdict(profile), "history": history, "data_dir": str(data_dir)},
    }
    # Only the Unet's weights (EMA): the diffusion wrapper's buffers are derived from the config.
    save_checkpoint(checkpoint_dir, ema_model.model, config, metrics)
    return metrics

"""frames data: render stand-in keyboards to a folder, or read any folder of frame images."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from training.frames_synth import render_frames

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def generate_frames(out_dir: Path, n: int, size: int, seed: int) -> Path:
    """Write n rendered keyboard frames as PNGs under out_dir; returns out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(tqdm(render_frames(n, size, seed), desc="generate frames", unit="img")):
        Image.fromarray(frame).save(out_dir / f"frame_{i:05d}.png")
    return out_dir


def _image_paths(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def folder_hash(folder: Path) -> str:
    """sha256 over every image's relative path and bytes: names the exact data a model was trained on."""
    digest = hashlib.sha256()
    for path in _image_paths(folder):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def load_frames(folder: Path, size: int) -> np.ndarray:
    """Every image under folder (recursively), center-cropped square and resized: [n, size, size, 3] uint8."""
    paths = _image_paths(folder)
    if not paths:
        raise ValueError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}")
    frames = []
    for path in tqdm(paths, desc="load frames", unit="img"):
        with Image.open(path) as img:
            img = img.convert("RGB")
            side = min(img.size)
            left, top = (img.width - side) // 2, (img.height - side) // 2
            img = img.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
            frames.append(np.asarray(img, dtype=np.uint8))
    return np.stack(frames)

"""Realistic request bodies for load and benchmark runs: synthetic bird recordings in real formats."""

from __future__ import annotations

import io
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from training.birdcall_synth import SPECIES, synthesize_recording, write_audio

# (container, subtype, file suffix, MIME type)
FORMATS = {
    "wav": ("WAV", "PCM_16", "audio/wav"),
    "flac": ("FLAC", "PCM_16", "audio/flac"),
    "mp3": ("MP3", "MPEG_LAYER_III", "audio/mpeg"),
    "ogg": ("OGG", "VORBIS", "audio/ogg"),
}
RATES = (16_000, 22_050, 44_100, 48_000)
POOL_VERSION = 2
"""Part of a cached pool's name: a pool made by other code is made again."""
POOL_SEED = 7


def pool_dir() -> Path:
    """Where load runs keep their synthesized recordings (CHORUS_LOAD_POOL_DIR)."""
    return Path(os.environ.get("CHORUS_LOAD_POOL_DIR", Path(tempfile.gettempdir()) / "chorus-load-pool"))


def pool_size() -> int:
    return int(os.environ.get("CHORUS_LOAD_POOL", "16"))


@dataclass(frozen=True)
class Recording:
    name: str
    data: bytes
    mime: str
    seconds: float
    species: str


def make_recording(seconds: float, rate: int, fmt: str, seed: int, channels: int = 1) -> Recording:
    rng = np.random.default_rng(seed)
    species = list(SPECIES)[seed % len(SPECIES)]
    audio = synthesize_recording(species, seconds, rate, rng).audio
    if channels == 2:
        audio = np.stack([audio, audio * 0.9], axis=1)
    container, subtype, mime = FORMATS[fmt]
    buffer = io.BytesIO()
    write_audio(buffer, audio, rate, container, subtype)
    return Recording(f"{species}_{seconds:.0f}s_{rate}.{fmt}", buffer.getvalue(), mime, seconds, species)


def recording_pool(n: int, seed: int = 0, min_seconds: float = 3, max_seconds: float = 60, formats=tuple(FORMATS)) -> list[Recording]:
    """n recordings, lengths uniform in [min, max] s, some stereo; every format at every rate once in
    each len(formats) x len(RATES) recordings (cycled together, 4 formats and 4 rates made 4 pairs only)."""
    rng = np.random.default_rng(seed)
    return [
        make_recording(
            float(rng.uniform(min_seconds, max_seconds)),
            RATES[(i // len(formats)) % len(RATES)],
            formats[i % len(formats)],
            seed * 1000 + i,
            channels=2 if i % 3 == 0 else 1,
        )
        for i in range(n)
    ]


def cached_pool(folder: Path, n: int, seed: int = 0) -> list[Recording]:
    """recording_pool, written to / read from `folder`, so load runs spend no time synthesizing."""
    index = folder / f"pool_v{POOL_VERSION}_{n}_{seed}.json"
    if index.exists():
        entries = json.loads(index.read_text())
        return [Recording(**{**e, "data": (folder / e["name"]).read_bytes()}) for e in entries]
    pool = recording_pool(n, seed)
    folder.mkdir(parents=True, exist_ok=True)
    for rec in pool:
        (folder / rec.name).write_bytes(rec.data)
    index.write_text(json.dumps([{k: v for k, v in asdict(r).items() if k != "data"} for r in pool]))
    return pool

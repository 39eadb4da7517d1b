"""birdcall data: generate a stand-in dataset, read any folder + CSV of labels, turn it into windows.

The CSV has columns `path,label` and optionally `split` (train/val/test). Paths are relative to
the CSV's folder. Without a split column, recordings are split deterministically by a hash of
their path (80/10/10, the seed's proportions), never window by window, so no recording leaks
across splits. Generated data and a user's real recordings take exactly the same path.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from features import FrontEnd, FrontEndConfig
from training.birdcall_synth import SPECIES, synthesize_recording, write_audio

SPLITS = ("train", "val", "test")
# Container, libsndfile subtype and file suffix, with their share of generated recordings.
_FORMATS = [
    ("FLAC", "PCM_16", "flac", 0.6),
    ("WAV", "PCM_16", "wav", 0.1),
    ("OGG", "VORBIS", "ogg", 0.1),
    ("MP3", "MPEG_LAYER_III", "mp3", 0.2),
]
_RATES = (16_000, 22_050, 32_000)


@dataclass(frozen=True)
class Item:
    path: Path
    label: str
    split: str


@dataclass(frozen=True)
class GenerateSpec:
    """What `generate_dataset` makes."""

    recordings_per_species: int = 40
    min_seconds: float = 3.0
    max_seconds: float = 30.0
    n_species: int = len(SPECIES)
    seed: int = 0


def _split_for(index: int, n: int) -> str:
    """Stratified 70/15/15 by position within a species' recordings."""
    frac = index / n
    return "train" if frac < 0.7 else ("val" if frac < 0.85 else "test")


def _write_one(job: tuple[Path, str, int, float, int, int]) -> None:
    path, species, rate, seconds, fmt_index, seed = job
    rng = np.random.default_rng(seed)
    recording = synthesize_recording(species, seconds, rate, rng)
    fmt, subtype, _, _ = _FORMATS[fmt_index]
    write_audio(path, recording.audio, rate, fmt, subtype)


def generate_dataset(out_dir: Path, spec: GenerateSpec = GenerateSpec(), workers: int | None = None) -> Path:
    """Write audio files and labels.csv under out_dir; returns the CSV path. Same spec, same bytes."""
    audio_dir = out_dir / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    species = list(SPECIES)[: spec.n_species]
    rng = np.random.default_rng(spec.seed)
    shares = np.array([f[3] for f in _FORMATS])
    jobs, rows = [], []
    for label in species:
        for i in range(spec.recordings_per_species):
            fmt_index = int(rng.choice(len(_FORMATS), p=shares / shares.sum()))
            rate = int(rng.choice(_RATES))
            seconds = float(rng.uniform(spec.min_seconds, spec.max_seconds))
            rel = Path("audio") / f"{label}_{i:04d}.{_FORMATS[fmt_index][2]}"
            jobs.append((out_dir / rel, label, rate, seconds, fmt_index, int(rng.integers(2**31))))
            rows.append((rel.as_posix(), label, _split_for(i, spec.recordings_per_species)))
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
        list(tqdm(pool.map(_write_one, jobs, chunksize=4), total=len(jobs), desc="generate birdcall", unit="rec"))
    csv_path = out_dir / "labels.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "split"])
        writer.writerows(rows)
    return csv_path


def _hash_split(path: str) -> str:
    bucket = int(hashlib.sha1(path.encode()).hexdigest()[:8], 16) % 10
    return "train" if bucket < 8 else ("val" if bucket == 8 else "test")


def read_manifest(csv_path: Path) -> list[Item]:
    """Read `path,label[,split]` rows; paths are relative to the CSV's folder (or absolute)."""
    root = csv_path.parent
    items = []
    with csv_path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"path", "label"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{csv_path} lacks column(s) {sorted(missing)}; expected path,label[,split]")
        for row in reader:
            split = (row.get("split") or _hash_split(row["path"])).strip()
            if split not in SPLITS:
                raise ValueError(f"{csv_path}: split {split!r} for {row['path']} is not one of {SPLITS}")
            items.append(Item(root / row["path"], row["label"].strip(), split))
    if not items:
        raise ValueError(f"{csv_path} lists no recordings")
    return items


def dataset_hash(csv_path: Path) -> str:
    """sha256 over the manifest and every listed file: names the exact data a model was trained on."""
    digest = hashlib.sha256(csv_path.read_bytes())
    for item in read_manifest(csv_path):
        digest.update(item.path.read_bytes())
    return digest.hexdigest()


@dataclass
class WindowSet:
    """All windows of a list of recordings, before normalization."""

    log_mels: np.ndarray
    """[n, 1, n_mels, n_frames] float32, unnormalized ln-mel."""
    labels: np.ndarray
    """[n] int64 class index."""
    recording: np.ndarray
    """[n] int64 index of the source recording (for per-recording accuracy)."""
    rms: np.ndarray
    """[n] float32 waveform RMS of each window (for the clip filter)."""

    def select(self, mask: np.ndarray) -> WindowSet:
        return WindowSet(self.log_mels[mask], self.labels[mask], self.recording[mask], self.rms[mask])

    def __len__(self) -> int:
        return len(self.labels)


_worker_frontend: FrontEnd | None = None


def _featurize_one(args: tuple[Path, dict]) -> tuple[np.ndarray, np.ndarray]:
    """One recording's plain ln-mel windows (identity stats: training fits its own) and their RMS."""
    global _worker_frontend
    path, config = args
    if _worker_frontend is None:
        _worker_frontend = FrontEnd(FrontEndConfig.from_dict(config))
    windows = _worker_frontend.analyze(path).windows
    return windows.features, windows.rms


def featurize(
    items: Sequence[Item], labels: Sequence[str], config: FrontEndConfig, workers: int | None = None, desc: str = "features"
) -> WindowSet:
    """Every recording's windows, exactly as serving computes them (FrontEnd.analyze), before normalization."""
    index = {name: i for i, name in enumerate(labels)}
    jobs = [(item.path, config.to_dict()) for item in items]
    mels, rms, y, rec = [], [], [], []
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
        results = pool.map(_featurize_one, jobs, chunksize=4)
        for i, (item, (m, r)) in enumerate(tqdm(zip(items, results, strict=True), total=len(items), desc=desc, unit="rec")):
            mels.append(m)
            rms.append(r)
            y.append(np.full(len(m), index[item.label]))
            rec.append(np.full(len(m), i))
    return WindowSet(np.concatenate(mels), np.concatenate(y), np.concatenate(rec), np.concatenate(rms))


def clip_filter(windows: WindowSet, min_rms: float = 0.005, min_mel_std: float = 0.10) -> np.ndarray:
    """The seed's training-time filter: keep windows with RMS >= min_rms and ln-mel std >= min_mel_std.

    Serving never filters: silence is classified like anything else.
    """
    mel_std = windows.log_mels.reshape(len(windows), -1).std(axis=1)
    return (windows.rms >= min_rms) & (mel_std >= min_mel_std)

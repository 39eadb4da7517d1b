"""Per-mel-band normalization statistics, fitted on the training split and stored with the model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class NormStats:
    """Per-mel-band mean and std of ln-mel features over the training split."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def identity(cls, n_mels: int) -> NormStats:
        """Mean 0, std 1: features come out as plain ln-mel, bit for bit (what training fits stats on)."""
        return cls(np.zeros(n_mels, np.float32), np.ones(n_mels, np.float32))

    @classmethod
    def fit(cls, log_mels: np.ndarray, chunk: int = 256) -> NormStats:
        """From [n, 1, n_mels, frames] unnormalized features (an array or a memory map); std is floored
        to avoid division by ~0. Two passes over `chunk` windows at a time (~170 MB of float64 at the
        defaults), so memory does not grow with the data."""
        n_mels = log_mels.shape[2]
        cells = log_mels.shape[0] * log_mels.shape[1] * log_mels.shape[3]
        total = np.zeros(n_mels)
        for start in range(0, len(log_mels), chunk):
            total += log_mels[start : start + chunk].sum(axis=(0, 1, 3), dtype=np.float64)
        mean = total / cells
        squares = np.zeros(n_mels)
        for start in range(0, len(log_mels), chunk):
            deviation = log_mels[start : start + chunk].astype(np.float64) - mean[None, None, :, None]
            squares += np.einsum("abcd,abcd->c", deviation, deviation)
        std = np.sqrt(squares / cells)
        return cls(mean.astype(np.float32), np.maximum(std, 1e-5).astype(np.float32))

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, list[float]]) -> NormStats:
        return cls(np.asarray(data["mean"], np.float32), np.asarray(data["std"], np.float32))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: Path) -> NormStats:
        return cls.from_dict(json.loads(path.read_text()))

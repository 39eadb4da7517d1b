"""Windows: 5 s long, 2.5 s apart, the last one zero-padded; where each sits and what it holds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from features.config import FrontEndConfig


@dataclass(frozen=True)
class WindowSpan:
    """Where one window sits in the recording, in seconds (end is clipped to the audio's end)."""

    start: float
    end: float
    channel: int | None = None
    """The file channel the window was cut from; None for the mix of all channels."""


@dataclass(frozen=True)
class WindowBatch:
    """Consecutive windows of one recording, ready for the network."""

    features: np.ndarray
    """[k, 1, n_mels, n_frames] float32 ln-mel, normalized with the front end's stats."""
    spans: list[WindowSpan]
    rms: np.ndarray
    """[k] float32 RMS of each window's samples at the model's rate, zero padding included (training's clip filter)."""

    def __len__(self) -> int:
        return len(self.spans)

    @classmethod
    def empty(cls, config: FrontEndConfig) -> WindowBatch:
        return cls(np.empty((0, *config.feature_shape), np.float32), [], np.empty(0, np.float32))

    @classmethod
    def concat(cls, batches: Sequence[WindowBatch], config: FrontEndConfig) -> WindowBatch:
        if not batches:
            return cls.empty(config)
        return cls(
            np.concatenate([b.features for b in batches]),
            [span for b in batches for span in b.spans],
            np.concatenate([b.rms for b in batches]),
        )


def window_count(n_samples: int, config: FrontEndConfig) -> int:
    """Windows needed to cover n_samples: one for anything up to one clip, then one per stride."""
    excess = max(0, n_samples - config.clip_samples)
    return 1 + math.ceil(excess / config.stride_samples)

"""Cut a 16 kHz waveform into fixed windows: 5 s long, 2.5 s apart, the last one zero-padded."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from features.config import FrontEndConfig


@dataclass(frozen=True)
class WindowSpan:
    """Where one window sits in the recording, in seconds (end is clipped to the audio's end)."""

    start: float
    end: float


def window_count(n_samples: int, config: FrontEndConfig) -> int:
    """Windows needed to cover n_samples: one for anything up to one clip, then one per stride."""
    excess = max(0, n_samples - config.clip_samples)
    return 1 + math.ceil(excess / config.stride_samples)


def split_windows(waveform: np.ndarray, config: FrontEndConfig) -> np.ndarray:
    """[n_samples] float32 -> [n_windows, clip_samples] float32; the tail is zero-padded."""
    n = window_count(len(waveform), config)
    needed = (n - 1) * config.stride_samples + config.clip_samples
    padded = np.zeros(needed, dtype=np.float32)
    padded[: len(waveform)] = waveform
    view = np.lib.stride_tricks.sliding_window_view(padded, config.clip_samples)
    return np.ascontiguousarray(view[:: config.stride_samples][:n])


def window_spans(n_samples: int, config: FrontEndConfig) -> list[WindowSpan]:
    """Start/end seconds of each window that split_windows makes for n_samples."""
    duration = n_samples / config.sample_rate
    spans = []
    for i in range(window_count(n_samples, config)):
        start = i * config.stride_seconds
        spans.append(WindowSpan(start=start, end=min(start + config.clip_seconds, duration)))
    return spans

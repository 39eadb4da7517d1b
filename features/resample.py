"""Streaming resampling with soxr (HQ: the best aliasing of the options measured).

soxr's stream gives the same samples, bit for bit, however the input is chunked, and the same as
its one-shot `soxr.resample`; so a block size never changes the features.
"""

from __future__ import annotations

import numpy as np
import soxr


class Resampler:
    """[frames] or [frames, channels] float32 at from_rate -> the same at to_rate, block by block."""

    def __init__(self, from_rate: int, to_rate: int, channels: int):
        # At equal rates soxr would copy the samples unchanged: skip it.
        self._stream = None if from_rate == to_rate else soxr.ResampleStream(from_rate, to_rate, channels, dtype="float32", quality="HQ")
        self._empty = np.empty(0, np.float32)

    def push(self, block: np.ndarray) -> np.ndarray:
        """Resampled output ready so far (soxr holds back a filter's length of input until flush)."""
        self._empty = block[:0]
        return block if self._stream is None else self._stream.resample_chunk(block)

    def flush(self) -> np.ndarray:
        """The held-back tail, at the end of the recording."""
        return self._empty if self._stream is None else self._stream.resample_chunk(self._empty, last=True)

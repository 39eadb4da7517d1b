"""The front end: a model's config and normalization stats applied to recordings or waveforms."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from features.config import FrontEndConfig
from features.decode import DEFAULT_BLOCK_SAMPLES, AudioFacts, Source
from features.errors import AnalysisStopped
from features.grid import MelGrid
from features.mel import LogMel
from features.norm import NormStats
from features.stream import AudioStream, Channels
from features.windows import WindowBatch


@dataclass(frozen=True)
class Analysis:
    """A whole recording's windows (what serving classifies), with its facts and stage timings."""

    audio: AudioFacts
    windows: WindowBatch
    """All windows, channel by channel (one signal when mixed), in time order."""
    timings: dict[str, float]
    """Seconds spent per stage: decode, resample, features."""


class FrontEnd:
    """Audio -> normalized ln-mel windows [n, 1, n_mels, n_frames] float32, with the model's stats."""

    def __init__(self, config: FrontEndConfig | None = None, stats: NormStats | None = None):
        self.config = config or FrontEndConfig()
        self.stats = stats or NormStats.identity(self.config.n_mels)
        self._log_mel = LogMel(self.config, self.stats)
        self._mean = self.stats.mean.reshape(1, 1, -1, 1)
        self._inv_std = (1.0 / self.stats.std).reshape(1, 1, -1, 1)

    def stream(
        self,
        source: Source,
        *,
        channels: Channels = "mix",
        max_seconds: float | None = None,
        max_samples: int | None = None,
        block_samples: int = DEFAULT_BLOCK_SAMPLES,
    ) -> AudioStream:
        """Open a recording (path or bytes) for block-by-block analysis; use it as a context manager and iterate it.
        max_seconds bounds its duration, max_samples its decoded frames x channels."""
        return AudioStream(
            source, self._log_mel, channels=channels, max_seconds=max_seconds, max_samples=max_samples, block_samples=block_samples
        )

    def analyze(
        self,
        source: Source,
        *,
        channels: Channels = "mix",
        max_seconds: float | None = None,
        max_samples: int | None = None,
        block_samples: int = DEFAULT_BLOCK_SAMPLES,
        stop: Callable[[], bool] | None = None,
    ) -> Analysis:
        """Every window of a recording at once: the streaming path, collected (so it cannot differ from it).
        stop is asked whenever new windows are done (every block, or every stride of audio where blocks
        hold less): True ends the work with AnalysisStopped."""
        opened = self.stream(source, channels=channels, max_seconds=max_seconds, max_samples=max_samples, block_samples=block_samples)
        batches = []
        with opened as stream:
            for batch in stream:
                if stop is not None and stop():
                    raise AnalysisStopped("stopped before the end of the recording")
                batches.append(batch)
        # "each" emits the channels' windows interleaved as blocks complete them: order by channel.
        batches.sort(key=lambda batch: -1 if batch.spans[0].channel is None else batch.spans[0].channel)
        return Analysis(stream.facts(), WindowBatch.concat(batches, self.config), dict(stream.timings))

    def waveform_windows(self, waveform: np.ndarray) -> WindowBatch:
        """[n_samples] mono float32 already at config.sample_rate -> all its windows (the same grid code)."""
        grid = MelGrid(self.config, self._log_mel)
        return WindowBatch.concat([grid.push(np.asarray(waveform, np.float32)), grid.finish()], self.config)

    def normalize(self, log_mels: np.ndarray) -> np.ndarray:
        """Plain ln-mel [n, 1, n_mels, frames] (identity stats' output) -> normalized with this front end's stats."""
        return ((log_mels - self._mean) * self._inv_std).astype(np.float32, copy=False)

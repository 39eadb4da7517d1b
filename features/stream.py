"""A recording turned into windows block by block: decode -> mix (or split channels) -> resample -> mel grid.

Memory depends on the block size, not on the recording's length, rate or channel count (in "each"
mode, times the channel count). The time spent in each stage is added up for the service's timings.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import TracebackType
from typing import Literal

import numpy as np

from features.decode import AudioFacts, AudioReader, Source
from features.grid import MelGrid
from features.mel import LogMel
from features.resample import Resampler
from features.windows import WindowBatch

Channels = Literal["mix", "each"]
STAGES = ("decode", "resample", "features")


def mix_down(block: np.ndarray) -> np.ndarray:
    """[frames, channels] -> [frames] mean of the channels.

    Summed channel by channel in a fixed order, so a frame's mix never depends on the block it came
    in (numpy's mean may reorder its sum with the array's shape).
    """
    if block.shape[1] == 1:
        return block[:, 0]
    mix = np.add(block[:, 0], block[:, 1])
    for channel in range(2, block.shape[1]):
        mix += block[:, channel]
    mix /= np.float32(block.shape[1])
    return mix


class AudioStream:
    """Iterate for WindowBatch chunks, each emitted as soon as its windows are complete.

    channels="mix" analyzes the mean of all channels (spans carry channel None); "each" analyzes
    every channel on its own (spans carry the channel index). A bad recording raises a typed
    AudioError, possibly after some chunks were emitted (NaN in a late block, too long). After the
    last chunk, facts() has the decoded duration and `timings` the seconds spent per stage.
    """

    def __init__(
        self,
        source: Source,
        log_mel: LogMel,
        *,
        channels: Channels,
        max_seconds: float | None,
        block_samples: int,
        max_samples: int | None = None,
    ):
        if channels not in ("mix", "each"):
            raise ValueError(f'channels must be "mix" or "each", got {channels!r}')
        self.timings = dict.fromkeys(STAGES, 0.0)
        start = time.perf_counter()
        self._reader = AudioReader(source, max_seconds=max_seconds, max_samples=max_samples, block_samples=block_samples)
        self.timings["decode"] += time.perf_counter() - start
        self._mix = channels == "mix"
        signals = 1 if self._mix else self._reader.channels
        config = log_mel.config
        self._resampler = Resampler(self._reader.sample_rate, config.sample_rate, signals)
        self._grids = [MelGrid(config, log_mel, None if self._mix else c) for c in range(signals)]

    def __iter__(self) -> Iterator[WindowBatch]:
        clock = time.perf_counter
        blocks = self._reader.blocks()
        while True:
            t0 = clock()
            block = next(blocks, None)
            if block is not None and self._mix:
                block = mix_down(block)
            t1 = clock()
            resampled = self._resampler.flush() if block is None else self._resampler.push(block)
            t2 = clock()
            columns = [resampled] if self._mix else [resampled[:, c] for c in range(len(self._grids))]
            batches = []
            for grid, column in zip(self._grids, columns, strict=True):
                batches.append(grid.push(column))
                if block is None:
                    batches.append(grid.finish())
            t3 = clock()
            self.timings["decode"] += t1 - t0
            self.timings["resample"] += t2 - t1
            self.timings["features"] += t3 - t2
            yield from (batch for batch in batches if len(batch))
            if block is None:
                return

    def facts(self) -> AudioFacts:
        return self._reader.facts()

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> AudioStream:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

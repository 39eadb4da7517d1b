"""A fake engine for the run tests: deterministic scores from a file's bytes, no audio decoding."""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np

from analyze.analyzer import AnalysisFailed, FileScores
from analyze.detections import Span

BYTES_PER_SECOND = 100
"""A fake file of n bytes stands for n / 100 seconds of audio."""


class Killed(BaseException):
    """Stands in for kill -9: nothing catches it, the run stops where it is."""


class FakeAnalyzer:
    """Scores [windows, labels] drawn from a generator seeded by the file's bytes (5 s windows, 2.5 s apart).

    `fail` maps file names to the exception their analysis raises; `kill_after` raises Killed
    when asked for one more file than that.
    """

    def __init__(self, labels: tuple[str, ...], *, fail: dict[str, Exception] | None = None, kill_after: int | None = None):
        self.labels = labels
        self.fail = fail or {}
        self.kill_after = kill_after
        self.calls: list[Path] = []

    def __call__(self, path: Path) -> FileScores:
        if self.kill_after is not None and len(self.calls) >= self.kill_after:
            raise Killed
        self.calls.append(path)
        if path.name in self.fail:
            raise self.fail[path.name]
        data = path.read_bytes()
        duration = len(data) / BYTES_PER_SECOND
        windows = 1 + math.ceil(max(0.0, duration - 5.0) / 2.5)
        spans = tuple(Span(i * 2.5, min(i * 2.5 + 5.0, duration)) for i in range(windows))
        # Cubed uniform scores: mostly low, a few high, so thresholds and merges have work to do.
        scores = np.random.default_rng(zlib.crc32(data)).random((windows, len(self.labels)), dtype=np.float32) ** 3
        return FileScores(scores=scores, spans=spans, duration_s=duration, sample_rate=48_000, channels=1)


def write_recordings(folder: Path, count: int, *, seconds: float = 20.0) -> list[Path]:
    """`count` fake recordings with AudioMoth names, each with its own bytes (so its own scores)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"202405{17 + i // 24:02d}_{i % 24:02d}0000.WAV"
        size = int((seconds + i) * BYTES_PER_SECOND)
        path.write_bytes(np.random.default_rng(i).integers(0, 256, size, dtype=np.uint8).tobytes())
        paths.append(path)
    return paths


def decode_error(reason: str = "not a WAV file: RIFF header missing") -> AnalysisFailed:
    return AnalysisFailed("decode", reason)

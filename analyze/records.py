"""The typed records the run hands to the writers: what the model is, what each file gave."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from analyze.detections import Detection


@dataclass(frozen=True)
class ModelInfo:
    """The model behind a run: its identity goes on every output row and into the resume key."""

    name: str
    version: str
    labels: tuple[str, ...]
    """Species names in score-column order."""
    low_hz: float
    """Lowest frequency the model listens to (the Raven selections' Low Freq)."""
    high_hz: float
    """Highest frequency the model listens to; capped per file at its Nyquist frequency."""


@dataclass(frozen=True)
class FileResult:
    """One file analyzed: its audio facts and its detections."""

    path: Path
    duration_s: float
    sample_rate: int
    """Native sample rate of the file, in Hz."""
    channels: int
    detections: tuple[Detection, ...]


@dataclass(frozen=True)
class FileFailure:
    """One file that could not be analyzed: a row of the errors table."""

    path: Path
    stage: str
    """Where it failed: e.g. "read", "decode", "features", "model", or "internal" for an unexpected error."""
    reason: str

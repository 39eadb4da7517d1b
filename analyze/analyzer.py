"""The contract between the run and the engine that decodes audio and scores windows.

The engine provides an `Execute`: a callable from paths to their outcomes, each a file's
`FileScores` or the exception its analysis raised (`AnalysisFailed` when the file itself is the
problem: unreadable, empty, corrupt, NaN samples), yielded as they arrive, in any order.
`in_order(analyzer)` makes one from a per-file `Analyzer` run here one file after another;
the batch pipelines (worker processes and one model consumer, or Ray) are others, and the run
and its outputs do not change with the choice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analyze.detections import Span


@dataclass(frozen=True)
class FileScores:
    """What the engine found in one file."""

    scores: np.ndarray
    """[windows, labels] independent scores in [0, 1], columns in the model's label order."""
    spans: tuple[Span, ...]
    """Where each row's window sits (and on which channel, when channels are analyzed one by one)."""
    duration_s: float
    """Exact length (samples / native rate): the combined Raven table adds these up to place each file."""
    sample_rate: int
    """Native sample rate, in Hz."""
    channels: int


READ_STAGE = "read"
"""The stage of a failure to open or read the file (an OSError): not the bytes' fault, so the
journal does not keep it and the next run tries the file again."""


class AnalysisFailed(Exception):
    """The file cannot be analyzed, and retrying the same bytes would fail the same way (except at
    READ_STAGE: the bytes could not be had)."""

    def __init__(self, stage: str, reason: str):
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason


Analyzer = Callable[[Path], FileScores]
Outcome = tuple[Path, FileScores | Exception]
"""A path and its scores, or the exception its analysis raised."""
Execute = Callable[[Sequence[Path]], Iterable[Outcome]]


def in_order(analyzer: Analyzer) -> Execute:
    """Analyze the paths one after another in this process.

    Exceptions become outcomes so one bad file cannot stop the batch; BaseException
    (KeyboardInterrupt, SystemExit) is not caught and stops the run.
    """

    def execute(paths: Sequence[Path]) -> Iterator[Outcome]:
        for path in paths:
            try:
                yield path, analyzer(path)
            except Exception as error:
                yield path, error

    return execute

"""Raven Pro selection tables: one per file, and one combined table over the whole file sequence.

Raven reads a tab-separated text file whose header names its measurement columns; columns it
does not know (Common Name, Confidence, Model, ...) become annotations. Both tables have the same
columns, in BirdNET-Analyzer's order for its first twelve. The combined table follows Raven's
file-sequence rules, as Raven itself saves them: `Begin Time (s)` counts from the start of the
sequence (the files one after another, in the order of `combined.list.txt`, which Raven opens as
that sequence), `Begin Path` names the file and `File Offset (s)` is the time within it (in a
per-file table, its own path, and the same time as `Begin Time (s)`). Selection numbers run 1, 2, 3, ... down each table.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence

from analyze.detections import Detection
from analyze.records import FileResult, ModelInfo
from analyze.writers.text import cell, clock, score, seconds, species_names

VIEW = "Spectrogram 1"
COLUMNS = (
    "Selection",
    "View",
    "Channel",
    "Begin Time (s)",
    "End Time (s)",
    "Low Freq (Hz)",
    "High Freq (Hz)",
    "Common Name",
    "Species Code",
    "Confidence",
)
SEQUENCE_COLUMNS = ("Begin Path", "File Offset (s)")
EXTRA_COLUMNS = ("Clock Begin", "Clock End", "Model", "Model Version")


def selection_table(result: FileResult, model: ModelInfo) -> str:
    """The table of one file: times are offsets in that file. It has the combined table's columns,
    as BirdNET-Analyzer's per-file tables do, so per-file tables stack and read by position alike."""
    rows = (_row(d, result, model, d.begin_s, d.end_s) + _sequence(result, d) + _extra(d, model) for d in result.detections)
    return "".join(_lines(COLUMNS + SEQUENCE_COLUMNS + EXTRA_COLUMNS, rows))


def combined_lines(results: Iterable[FileResult], model: ModelInfo) -> Iterator[str]:
    """The lines of one table for every file, as a Raven file sequence of `results` in the given order.

    Files without detections still take their place in the sequence (their duration shifts the
    files after them), which is why the list file must hold exactly these files in this order.
    """

    def rows() -> Iterator[list[str]]:
        start = 0.0
        for result in results:
            for d in result.detections:
                yield _row(d, result, model, start + d.begin_s, start + d.end_s) + _sequence(result, d) + _extra(d, model)
            start += result.duration_s

    return _lines(COLUMNS + SEQUENCE_COLUMNS + EXTRA_COLUMNS, rows())


def sequence_lines(results: Iterable[FileResult]) -> Iterator[str]:
    """The file list Raven opens as the sequence the combined table refers to: one path per line."""
    return (cell(os.fspath(r.path)) + "\n" for r in results)


def _row(d: Detection, result: FileResult, model: ModelInfo, begin: float, end: float) -> list[str]:
    # Mixed audio has one channel in Raven's eyes: 1.
    channel = 1 if d.channel is None else d.channel + 1
    high = min(model.high_hz, result.sample_rate / 2)
    common = cell(species_names(d.species)[1])
    return [VIEW, str(channel), seconds(begin), seconds(end), f"{model.low_hz:g}", f"{high:g}", common, cell(d.species), score(d.score)]


def _sequence(result: FileResult, d: Detection) -> list[str]:
    return [cell(os.fspath(result.path)), seconds(d.begin_s)]


def _extra(d: Detection, model: ModelInfo) -> list[str]:
    return [clock(d.clock_begin), clock(d.clock_end), cell(model.name), cell(model.version)]


def _lines(columns: Sequence[str], rows: Iterator[list[str]]) -> Iterator[str]:
    yield "\t".join(columns) + "\n"
    for n, row in enumerate(rows, start=1):
        yield "\t".join([str(n), *row]) + "\n"

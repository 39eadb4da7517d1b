"""From per-window scores to detections: threshold, species filter, top-k per window, optional merge.

Scores are independent calibrated per-species scores in [0, 1] (a window can hold no species
or several), one row per window and one column per model label.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Span:
    """Where one window sits in its file, in seconds; `channel` is the 0-based channel, None when channels were mixed."""

    start: float
    end: float
    channel: int | None = None


@dataclass(frozen=True)
class Detection:
    """One species found in one window, or in a run of consecutive windows when merged."""

    path: Path
    channel: int | None
    """0-based channel index; None when the channels were mixed to mono."""
    begin_s: float
    """Offset in the file, in seconds."""
    end_s: float
    species: str
    score: float
    """The window's score, or the highest of the merged windows."""
    windows: int
    """How many windows this detection spans (1 unless merged)."""
    clock_begin: datetime | None = None
    """Recorder clock time of begin_s (naive), when the file name holds the start time."""
    clock_end: datetime | None = None


class UnknownSpeciesError(ValueError):
    """A species list cannot be read or names species the model does not know (the message then lists the known ones)."""


@dataclass(frozen=True)
class DetectionSettings:
    """How scores become detections; every field is part of the resume key (changing one redoes the files)."""

    min_confidence: float = 0.5
    """A species is detected in a window when its score is >= this."""
    top_k: int | None = 3
    """At most this many species per window (highest scores first); None: no limit."""
    merge: bool = False
    """Consecutive windows of one species (and channel) become one detection."""
    species: frozenset[str] | None = None
    """Keep only these species; None keeps all."""
    exclude: frozenset[str] = frozenset()
    """Drop these species (applied after `species`)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be within [0, 1], got {self.min_confidence}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {self.top_k}")

    def species_mask(self, labels: Sequence[str]) -> np.ndarray:
        """Boolean mask over `labels` of the species kept; names the model does not know are an error."""
        check_species(set(self.species or ()) | set(self.exclude), labels)
        keep = np.array([label not in self.exclude for label in labels], dtype=bool)
        if self.species is not None:
            keep &= np.array([label in self.species for label in labels], dtype=bool)
        return keep


def read_species_list(path: Path, labels: Sequence[str]) -> frozenset[str]:
    """Species names from a text file: one per line, `#` starts a comment, blank lines ignored.

    Names must match the model's labels exactly; unknown names are an error listing the known ones.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise UnknownSpeciesError(f"{path}: the species list cannot be read ({reason}); give a text file, one species per line") from error
    names = set()
    for line in text.splitlines():
        name = line.split("#", 1)[0].strip()
        if name:
            names.add(name)
    if not names:
        known = ", ".join(sorted(labels))
        raise UnknownSpeciesError(f"{path}: the species list names no species; give one species per line (the model knows: {known})")
    check_species(names, labels, source=str(path))
    return frozenset(names)


def check_species(names: set[str], labels: Sequence[str], *, source: str = "species list") -> None:
    unknown = sorted(names - set(labels))
    if not unknown:
        return
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, labels, n=1)
        hints.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
    raise UnknownSpeciesError(f"{source}: unknown species {', '.join(hints)}; the model knows: {', '.join(sorted(labels))}")


def detect(
    scores: np.ndarray,
    spans: Sequence[Span],
    labels: Sequence[str],
    settings: DetectionSettings,
    *,
    path: Path,
    clock_start: datetime | None = None,
) -> list[Detection]:
    """Detections of one file, sorted by begin, channel, score (highest first), species.

    `scores` is [windows, labels]; `spans[i]` places row i. With `clock_start` (the file's
    recording start), each detection also carries its clock begin and end.
    """
    scores = np.asarray(scores)
    if scores.shape != (len(spans), len(labels)):
        raise ValueError(f"scores have shape {scores.shape}, expected ({len(spans)} windows, {len(labels)} labels)")
    if not np.all((scores >= 0.0) & (scores <= 1.0)):  # also false for NaN
        raise ValueError("scores must be within [0, 1] (independent calibrated scores), and finite")

    hits = _window_hits(scores, settings.species_mask(labels), settings)
    detections = []
    for channel, rows in _rows_by_channel(spans).items():
        position = {row: i for i, row in enumerate(rows)}
        for species in np.flatnonzero(hits[rows].any(axis=0)).tolist():
            run: list[int] = []
            for row in (r for r in rows if hits[r, species]):
                # Adjacent in the channel's window order, not merely touching: at a 2.5 s stride the
                # windows before and after a miss touch, yet the window between them said no.
                if run and not (settings.merge and position[row] == position[run[-1]] + 1):
                    detections.append(_detection(run, spans, scores, species, labels, channel, path, clock_start))
                    run = []
                run.append(row)
            detections.append(_detection(run, spans, scores, species, labels, channel, path, clock_start))
    detections.sort(key=lambda d: (d.begin_s, -1 if d.channel is None else d.channel, -d.score, d.species))
    return detections


def _window_hits(scores: np.ndarray, keep: np.ndarray, settings: DetectionSettings) -> np.ndarray:
    """[windows, labels] bool: the species each window reports after filter, threshold and top-k."""
    hits = keep[None, :] & (scores >= settings.min_confidence)
    if settings.top_k is not None and settings.top_k < scores.shape[1]:
        masked = np.where(hits, scores, -1.0)
        # Stable sort: equal scores keep label order, so ties are broken the same way every run.
        ranked = np.argsort(-masked, axis=1, kind="stable")[:, : settings.top_k]
        top = np.zeros_like(hits)
        np.put_along_axis(top, ranked, True, axis=1)
        hits &= top
    return hits


def _rows_by_channel(spans: Sequence[Span]) -> dict[int | None, list[int]]:
    """Window rows of each channel, in time order."""
    rows: dict[int | None, list[int]] = {}
    for row in sorted(range(len(spans)), key=lambda r: spans[r].start):
        rows.setdefault(spans[row].channel, []).append(row)
    return rows


def _detection(
    run: list[int],
    spans: Sequence[Span],
    scores: np.ndarray,
    species: int,
    labels: Sequence[str],
    channel: int | None,
    path: Path,
    clock_start: datetime | None,
) -> Detection:
    begin = spans[run[0]].start
    end = max(spans[r].end for r in run)
    return Detection(
        path=path,
        channel=channel,
        begin_s=begin,
        end_s=end,
        species=labels[species],
        # Shortest decimal that round-trips in the scores' own dtype: a float32 0.91 is written 0.91,
        # not 0.9100000262260437, and converts back to the very same float32.
        score=float(str(scores[run, species].max())),
        windows=len(run),
        clock_begin=None if clock_start is None else clock_start + timedelta(seconds=begin),
        clock_end=None if clock_start is None else clock_start + timedelta(seconds=end),
    )

"""Figures of a multi-label detector: per (window, species) scores against 0/1 targets.

Pairs whose target is unknown (a call cut by the window edge, see training.birdcall_data) count
neither as hits nor as misses nor as false detections.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Reliability:
    """Scores binned by value: mean score, share of true pairs and count per non-empty bin."""

    confidence: np.ndarray
    precision: np.ndarray
    count: np.ndarray

    @property
    def ece(self) -> float:
        """Expected calibration error: |mean score - share true| averaged over bins, weighted by count."""
        total = self.count.sum()
        return float(np.sum(self.count * np.abs(self.confidence - self.precision)) / total) if total else 0.0


def reliability(scores: np.ndarray, targets: np.ndarray, known: np.ndarray, bins: int = 15, min_score: float = 0.0) -> Reliability:
    """Equal-width bins over [0, 1] of the known pairs scoring at least min_score."""
    keep = known & (scores >= min_score)
    s, t = scores[keep], targets[keep]
    edges = np.minimum(np.digitize(s, np.linspace(0, 1, bins + 1)[1:-1]), bins - 1)
    count = np.bincount(edges, minlength=bins)
    conf = np.bincount(edges, weights=s, minlength=bins)
    hits = np.bincount(edges, weights=t, minlength=bins)
    used = count > 0
    return Reliability(conf[used] / count[used], hits[used] / count[used], count[used])


def precision_recall(scores: np.ndarray, targets: np.ndarray, known: np.ndarray, threshold: float) -> dict[str, float]:
    """Micro precision, recall and F1 over all known pairs."""
    detected = (scores >= threshold) & known
    positive = (targets > 0.5) & known
    tp = float(np.sum(detected & positive))
    precision = tp / max(float(detected.sum()), 1.0)
    recall = tp / max(float(positive.sum()), 1.0)
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    return {"precision": precision, "recall": recall, "f1": f1}


def per_class(scores: np.ndarray, targets: np.ndarray, known: np.ndarray, threshold: float, labels: Sequence[str]) -> dict[str, dict]:
    """{species: precision, recall, f1, support (known positive windows)}."""
    out = {}
    for i, name in enumerate(labels):
        figures = precision_recall(scores[:, i : i + 1], targets[:, i : i + 1], known[:, i : i + 1], threshold)
        out[name] = {**figures, "support": int(np.sum((targets[:, i] > 0.5) & known[:, i]))}
    return out


def no_call_windows(targets: np.ndarray, known: np.ndarray) -> np.ndarray:
    """[n] bool: windows known to hold no species at all."""
    return known.all(axis=1) & (targets < 0.5).all(axis=1)


def false_detection_rate(scores: np.ndarray, threshold: float, windows: np.ndarray) -> float:
    """Share of the given windows where any species scores at or above the threshold."""
    if not windows.any():
        return 0.0
    return float(np.mean((scores[windows] >= threshold).any(axis=1)))


def all_found_rate(scores: np.ndarray, targets: np.ndarray, known: np.ndarray, threshold: float, n_species: int) -> tuple[float, int]:
    """Among windows holding exactly n_species known species: share where every one is detected, and how many windows."""
    positive = (targets > 0.5) & known
    windows = positive.sum(axis=1) == n_species
    if not windows.any():
        return 0.0, 0
    found = ((scores[windows] >= threshold) | ~positive[windows]).all(axis=1)
    return float(found.mean()), int(windows.sum())


def recall_by_level(
    scores: np.ndarray, targets: np.ndarray, known: np.ndarray, level: np.ndarray, threshold: float, edges: Sequence[float]
) -> dict[str, dict[str, float]]:
    """Recall of the known present pairs by the level of their call (bins between edges; NaN levels skipped)."""
    positive = (targets > 0.5) & known & np.isfinite(level)
    out = {}
    for low, high in itertools.pairwise(edges):
        held = positive & (level >= low) & (level < high)
        if held.any():
            out[f"{low:g}..{high:g} dB"] = {"recall": float(np.mean(scores[held] >= threshold)), "pairs": int(held.sum())}
    return out


def recording_accuracy(scores: np.ndarray, recording: np.ndarray, recording_targets: np.ndarray) -> tuple[float, int]:
    """Among recordings with at least one species: share whose top species is one of theirs, and how many
    recordings. The top species is the one with the highest window score, as the service orders a
    recording's summary (its first species at min_confidence 0)."""
    correct = []
    for rec in np.flatnonzero(recording_targets.any(axis=1)):
        mask = recording == rec
        if mask.any():
            correct.append(recording_targets[rec, scores[mask].max(axis=0).argmax()] > 0.5)
    return (float(np.mean(correct)) if correct else 0.0), len(correct)


def detection_share(scores: np.ndarray, threshold: float, labels: Sequence[str]) -> tuple[dict[str, float], float]:
    """Share of windows where each species is detected, and share of windows with no detection."""
    detected = scores >= threshold
    shares = {name: round(float(detected[:, i].mean()), 6) for i, name in enumerate(labels)}
    return shares, round(float((~detected.any(axis=1)).mean()), 6)

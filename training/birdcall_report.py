"""The birdcall figures of one split and the training report (JSON figures, markdown, plots)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from training import detection_metrics as dm
from training.birdcall_data import Item, WindowSet
from training.plots import plot_detections

SNR_BINS = (0.0, 3.0, 6.0, 10.0, 15.0, 20.0, 30.0, 60.0)
"""Call-level bins (dB over everything else in the model's mel cells, generated data) for recall by level."""


def recording_targets(items: Sequence[Item], labels: Sequence[str]) -> np.ndarray:
    """[recordings, classes] 0/1: the species each recording's CSV row names."""
    index = {name: i for i, name in enumerate(labels)}
    out = np.zeros((len(items), len(labels)), np.float32)
    for r, item in enumerate(items):
        out[r, [index[name] for name in item.labels if name in index]] = 1.0
    return out


def split_figures(
    scores: np.ndarray, windows: WindowSet, rec_targets: np.ndarray, threshold: float, labels: Sequence[str]
) -> dict[str, Any]:
    """Every figure of one split at the given threshold (scores: calibrated, [windows, classes])."""
    t, k = windows.targets, windows.known
    background = ~rec_targets.any(axis=1)[windows.recording]
    no_call = dm.no_call_windows(t, k) & ~background
    micro = dm.precision_recall(scores, t, k, threshold)
    two, n_two = dm.all_found_rate(scores, t, k, threshold, 2)
    three, n_three = dm.all_found_rate(scores, t, k, threshold, 3)
    rec_acc, n_rec = dm.recording_accuracy(scores, windows.recording, rec_targets)
    figures = {
        "threshold": threshold,
        "windows": len(windows),
        "excluded_pairs": int((~k).sum()),
        "micro_precision": micro["precision"],
        "micro_recall": micro["recall"],
        "micro_f1": micro["f1"],
        "background_windows": int(background.sum()),
        "background_false_detection_rate": dm.false_detection_rate(scores, threshold, background),
        "no_call_windows_in_bird_recordings": int(no_call.sum()),
        "no_call_false_detection_rate": dm.false_detection_rate(scores, threshold, no_call),
        "two_species_windows": n_two,
        "two_species_both_found": two,
        "three_species_windows": n_three,
        "three_species_all_found": three,
        "recordings_with_species": n_rec,
        "recording_accuracy": rec_acc,
        "ece": dm.reliability(scores, t, k).ece,
        "ece_detection_range": dm.reliability(scores, t, k, min_score=0.1).ece,
        "recall_by_snr": dm.recall_by_level(scores, t, k, windows.snr_db, threshold, SNR_BINS),
        "per_class": dm.per_class(scores, t, k, threshold, labels),
    }
    return _rounded(figures)


def _rounded(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return round(value, 5) if isinstance(value, float) else value


def detection_matrix(
    scores: np.ndarray, windows: WindowSet, rec_targets: np.ndarray, threshold: float, labels: Sequence[str]
) -> tuple[np.ndarray, list[str]]:
    """Rows: windows holding exactly one species (per species), several species, no bird (background
    recordings); columns: each species detected, nothing detected. Share of the row's windows."""
    positive = (windows.targets > 0.5) & windows.known
    count = positive.sum(axis=1)
    clean = windows.known.all(axis=1)
    detected = scores >= threshold
    detected = np.concatenate([detected, ~detected.any(axis=1, keepdims=True)], axis=1)
    rows, names = [], []
    for i, name in enumerate(labels):
        rows.append(clean & (count == 1) & positive[:, i])
        names.append(name)
    rows.append(count >= 2)
    names.append("2-3 species")
    rows.append(~rec_targets.any(axis=1)[windows.recording])
    names.append("no bird (background)")
    matrix = np.array([detected[mask].mean(axis=0) if mask.any() else np.zeros(detected.shape[1]) for mask in rows])
    return matrix, [f"{n} ({int(m.sum())})" for n, m in zip(names, rows, strict=True)]


def plot_split(
    scores: np.ndarray, windows: WindowSet, rec_targets: np.ndarray, threshold: float, labels: Sequence[str], path: Path, title: str
) -> None:
    matrix, rows = detection_matrix(scores, windows, rec_targets, threshold, labels)
    plot_detections(matrix, rows, [*labels, "nothing"], path, title)


StopReason = Literal["clock", "patience", "epochs"]
"""What ended training's epoch loop (training.train_birdcall.FitOutcome.stopped_by)."""

STOPPED_BY: dict[StopReason, str] = {
    "clock": "the time budget ended them",
    "patience": "validation loss had stopped falling",
    "epochs": "all that were asked",
}
"""Each StopReason in the report's words."""


def markdown_report(metrics: dict[str, Any]) -> str:
    """The figures people read first, then per-class precision/recall on the test split."""
    cal = metrics["calibration"]
    lines = [
        f"# birdcall training report ({metrics['profile']})",
        "",
        f"{metrics['epochs_run']} epochs ({metrics['epochs_trained']:g} passes over the training windows;"
        f" best {metrics['best_epoch']}; {STOPPED_BY[metrics['stopped_by']]}),"
        f" {metrics['seconds']} s in all "
        f"({metrics['seconds_data']} s data, {metrics['seconds_training']} s training); windows {metrics['windows']}.",
        f"Calibration: {cal['method']}, T = {cal['temperature']}; default threshold {cal['threshold']} ({cal['threshold_rule']}).",
        *([f"Note: {metrics['short_budget_note']}"] if metrics.get("short_budget_note") else []),
        "",
        "| figure | val | test |",
        "|---|---|---|",
    ]
    rows = [
        ("window micro-F1", "micro_f1"),
        ("window micro-precision", "micro_precision"),
        ("window micro-recall", "micro_recall"),
        ("recording accuracy (top species)", "recording_accuracy"),
        ("false detections, background-only windows", "background_false_detection_rate"),
        ("false detections, call-free windows of bird recordings", "no_call_false_detection_rate"),
        ("2-species windows: both found", "two_species_both_found"),
        ("3-species windows: all found", "three_species_all_found"),
        ("ECE (15 bins, all pairs)", "ece"),
        ("ECE (pairs scoring >= 0.1)", "ece_detection_range"),
    ]
    for name, key in rows:
        lines.append(f"| {name} | {metrics['val'][key]:.4f} | {metrics['test'][key]:.4f} |")
    counts = ("windows", "background_windows", "two_species_windows", "three_species_windows", "recordings_with_species", "excluded_pairs")
    lines += ["", "Counts (test): " + ", ".join(f"{key} {metrics['test'][key]}" for key in counts) + ".", ""]
    if metrics["test"]["recall_by_snr"]:
        lines += ["| call level (dB over the rest, mel cells) | " + " | ".join(metrics["test"]["recall_by_snr"]) + " |"]
        lines += ["|---|" + "---|" * len(metrics["test"]["recall_by_snr"])]
        lines += [
            "| test recall (pairs) | "
            + " | ".join(f"{v['recall']:.3f} ({v['pairs']})" for v in metrics["test"]["recall_by_snr"].values())
            + " |",
            "",
        ]
    lines += ["| species | precision | recall | F1 | support (test windows) |", "|---|---|---|---|---|"]
    for name, row in metrics["test"]["per_class"].items():
        lines.append(f"| {name} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | {row['support']} |")
    lines += ["", "![curves](training_curves.png) ![reliability](reliability.png) ![detections](detection_matrix.png)", ""]
    return "\n".join(lines)

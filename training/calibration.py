"""Calibrate the detector on the validation split: one temperature for all species, one threshold.

Temperature scaling (sigmoid(logit / T)) keeps every species' ranking and the network's decisions'
order, has one parameter (safe on a few hundred validation windows, where per-class Platt
scaling or per-class thresholds would fit noise), and bakes into the ONNX graph as one division.
T is fitted by minimizing the binary cross-entropy of the known validation pairs. The default
decision threshold is then the one with the best validation micro-F1 among 0.5 and above.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import minimize_scalar

from training.detection_metrics import precision_recall, reliability

THRESHOLD_GRID = np.round(np.arange(0.5, 0.91, 0.05), 2)
"""Candidate default thresholds. Scores are calibrated, so below 0.5 a detection is more likely wrong
than right; and validation micro-F1 is flat from 0.25 to 0.6, so picking below 0.5 on a few hundred
windows followed their noise: of eight trainings, seven took 0.25-0.4, and every one of them had
better test F1 and fewer false detections on background at 0.5 (docs/training.md). Never so high
that quiet calls cannot pass."""


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def _bce(logits: np.ndarray, targets: np.ndarray) -> float:
    # log(1 + e^z) - t z, written to stay finite for large |z|.
    return float(np.mean(np.logaddexp(0.0, logits) - targets * logits))


def fit_temperature(logits: np.ndarray, targets: np.ndarray, known: np.ndarray) -> float:
    """T > 0 minimizing the cross-entropy of sigmoid(logits / T) on the known pairs."""
    z, t = logits[known].astype(np.float64), targets[known].astype(np.float64)
    result = minimize_scalar(lambda log_t: _bce(z / np.exp(log_t), t), bounds=(-3.0, 3.0), method="bounded")
    return float(np.exp(result.x))


def best_threshold(scores: np.ndarray, targets: np.ndarray, known: np.ndarray) -> float:
    """The grid threshold with the highest micro-F1 (the lower one on ties)."""
    f1 = [precision_recall(scores, targets, known, float(t))["f1"] for t in THRESHOLD_GRID]
    return float(THRESHOLD_GRID[int(np.argmax(f1))])


@dataclass(frozen=True)
class Calibration:
    """What calibration.json holds (see layout.artifacts.CALIBRATION)."""

    method: str
    temperature: float
    """Scores are sigmoid(logit / temperature); baked into the exported graph."""
    threshold: float
    """Default decision threshold: a species is detected in a window when its score is at least this."""
    threshold_rule: str
    ece: float
    """Expected calibration error on the validation split after calibration (15 bins, known pairs)."""
    ece_uncalibrated: float
    ece_detection_range: float
    """The same over pairs scoring >= 0.1 only, where decisions are made (the bulk near 0 dilutes the plain ECE)."""
    bins: int
    fitted_on: str
    windows: int

    def to_dict(self) -> dict:
        return asdict(self)


def calibrate(logits: np.ndarray, targets: np.ndarray, known: np.ndarray, bins: int = 15) -> Calibration:
    temperature = fit_temperature(logits, targets, known)
    scores = sigmoid(logits / temperature)
    return Calibration(
        method="temperature",
        temperature=round(temperature, 6),
        threshold=best_threshold(scores, targets, known),
        threshold_rule=f"best validation micro-F1 over {THRESHOLD_GRID[0]}..{THRESHOLD_GRID[-1]} in steps of 0.05",
        ece=round(reliability(scores, targets, known, bins).ece, 6),
        ece_uncalibrated=round(reliability(sigmoid(logits), targets, known, bins).ece, 6),
        ece_detection_range=round(reliability(scores, targets, known, bins, min_score=0.1).ece, 6),
        bins=bins,
        fitted_on="val",
        windows=len(logits),
    )

"""Temperature calibration, threshold choice and the detection figures."""

from __future__ import annotations

import numpy as np

from features.windows import WindowSpan
from service.models.birdcall import summarize
from training import detection_metrics as dm
from training.calibration import best_threshold, calibrate, fit_temperature, sigmoid


def _calibrated_pairs(n: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose sigmoid is the true probability of the target."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(-2.0, 3.0, size=(n, 4))
    targets = (rng.random(logits.shape) < sigmoid(logits)).astype(np.float32)
    return logits, targets


def test_temperature_undoes_overconfidence():
    logits, targets = _calibrated_pairs()
    known = np.ones_like(targets, dtype=bool)
    assert abs(fit_temperature(logits, targets, known) - 1.0) < 0.05
    assert abs(fit_temperature(logits * 2.5, targets, known) - 2.5) < 0.15
    calibration = calibrate(logits * 2.5, targets, known)
    assert calibration.ece < 0.01 < calibration.ece_uncalibrated
    assert 0.5 <= calibration.threshold <= 0.9


def test_default_threshold_is_never_below_one_half():
    # Every positive scores 0.3 and every negative 0.1: micro-F1 peaks at 0.3, but a calibrated
    # score under 0.5 is a detection more likely wrong than right.
    targets = np.array([[1, 0], [0, 1], [0, 0], [0, 0]], dtype=np.float32)
    scores = np.where(targets > 0, 0.3, 0.1)
    assert best_threshold(scores, targets, np.ones_like(targets, dtype=bool)) == 0.5
    assert best_threshold(np.where(targets > 0, 0.75, 0.1), targets, np.ones_like(targets, dtype=bool)) == 0.5
    assert best_threshold(np.where(targets > 0, 0.95, 0.62), targets, np.ones_like(targets, dtype=bool)) == 0.65


def test_unknown_pairs_do_not_move_the_fit():
    logits, targets = _calibrated_pairs()
    known = np.ones_like(targets, dtype=bool)
    poisoned = targets.copy()
    poisoned[:5000] = 1.0 - poisoned[:5000]
    known[:5000] = False
    assert abs(fit_temperature(logits, poisoned, known) - fit_temperature(logits[5000:], targets[5000:], known[5000:])) < 1e-6


def test_reliability_bins_and_ece():
    scores = np.array([[0.05, 0.95], [0.05, 0.95], [0.85, 0.15], [0.85, 0.15]])
    targets = np.array([[0, 1], [0, 1], [1, 0], [0, 0]], dtype=float)
    rel = dm.reliability(scores, targets, np.ones_like(targets, dtype=bool), bins=10)
    np.testing.assert_allclose(rel.confidence, [0.05, 0.15, 0.85, 0.95])
    np.testing.assert_allclose(rel.precision, [0.0, 0.0, 0.5, 1.0])
    np.testing.assert_allclose(rel.ece, (2 * 0.05 + 2 * 0.15 + 2 * 0.35 + 2 * 0.05) / 8)


def test_detection_figures():
    threshold = 0.5
    # window 0: owl; 1: owl + wren; 2: nothing; 3: nothing, but wren fires; 4: wren, cut (unknown) for owl.
    scores = np.array([[0.9, 0.1], [0.8, 0.3], [0.1, 0.2], [0.2, 0.7], [0.6, 0.9]])
    targets = np.array([[1, 0], [1, 1], [0, 0], [0, 0], [0, 1]], dtype=float)
    known = np.ones_like(targets, dtype=bool)
    known[4, 0] = False
    micro = dm.precision_recall(scores, targets, known, threshold)
    assert micro["precision"] == 3 / 4 and micro["recall"] == 3 / 4
    assert dm.all_found_rate(scores, targets, known, threshold, 2) == (0.0, 1)
    no_call = dm.no_call_windows(targets, known)
    np.testing.assert_array_equal(no_call, [False, False, True, True, False])
    assert dm.false_detection_rate(scores, threshold, no_call) == 0.5
    per_class = dm.per_class(scores, targets, known, threshold, ["owl", "wren"])
    assert per_class["owl"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}
    shares, none = dm.detection_share(scores, threshold, ["owl", "wren"])
    assert shares == {"owl": 0.6, "wren": 0.4} and none == 0.2
    # Recording 0 holds windows 0-1 (owl), recording 1 windows 2-4 (wren).
    accuracy, n = dm.recording_accuracy(scores, np.array([0, 0, 1, 1, 1]), np.array([[1, 0], [0, 1]]))
    assert (accuracy, n) == (1.0, 2)
    # One loud owl window against a wren heard faintly throughout: the owl tops the recording, by its
    # highest window as the service's summary orders species (the wren's mean is the higher).
    loud_once = np.array([[0.9, 0.4], [0.0, 0.4], [0.0, 0.4]])
    assert dm.recording_accuracy(loud_once, np.zeros(3, dtype=int), np.array([[1, 0]])) == (1.0, 1)


def test_the_service_summary_lists_first_the_species_recording_accuracy_counts():
    # Both species saturate: their scores round to the same 1.0, and the summary must still put the
    # one with the higher score first (not the alphabetical one), as recording_accuracy ranks them.
    scores = np.array([[0.9999996, 0.9999999], [0.2, 0.3]], dtype=np.float64)
    spans = [WindowSpan(0.0, 5.0), WindowSpan(2.5, 7.5)]
    summary = summarize(spans, scores, scores >= 0.5, ["alder_owl", "zebra_wren"])
    assert [s["label"] for s in summary] == ["zebra_wren", "alder_owl"]
    assert summary[0]["max_score"] == summary[1]["max_score"] == 1.0
    assert dm.recording_accuracy(scores, np.zeros(2, dtype=int), np.array([[0, 1]])) == (1.0, 1)

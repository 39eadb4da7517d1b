"""The parity gate's measures, on arrays: each limit named, none passing on nothing or on NaN."""

from __future__ import annotations

import numpy as np
import pytest

from export.parity import OutputKind, ParityError, Tolerance, check_parity


def test_check_parity_measures_and_names_each_limit():
    reference = np.array([[0.9, 0.1], [0.2, 0.7], [0.6, 0.3], [0.1, 0.45]])
    ok = check_parity("v", "y", reference, reference + 1e-5, Tolerance(max_abs_diff=1e-4), OutputKind.SCORES, threshold=0.5)
    assert ok.top1_agreement == 1.0 and ok.decision_agreement == 1.0
    flipped = reference.copy()
    flipped[0] = [0.1, 0.9]
    with pytest.raises(ParityError, match=r"top-1 agreement = 0\.75"):
        check_parity("v", "y", reference, flipped, Tolerance(min_top1_agreement=0.995))
    # Only the pair crossing the threshold counts: one of 8 pairs (window 3's wren is below 0.5 on both sides).
    nudged = reference.copy()
    nudged[3, 1] = 0.55
    with pytest.raises(ParityError, match=r"output 'y' decision agreement at 0.5 = 0.875 \(below the tolerance 0.995\)"):
        check_parity("v", "y", reference, nudged, Tolerance(min_decision_agreement=0.995), OutputKind.SCORES, threshold=0.5)
    result = check_parity("v", "y", reference, nudged, Tolerance(min_decision_agreement=0.8), OutputKind.SCORES, threshold=0.5)
    assert result.window_decision_agreement == 0.75
    with pytest.raises(ValueError, match="needs the decision threshold"):
        check_parity("v", "y", reference, reference, Tolerance(min_decision_agreement=0.9), OutputKind.SCORES)
    with pytest.raises(ParityError, match="share of finite values in the candidate = 0"):
        check_parity("v", "y", reference, reference * np.nan, Tolerance(max_abs_diff=1.0))


@pytest.mark.parametrize(
    ("reference", "candidate", "threshold", "words"),
    [
        # NaN >= 0.5 is False: NaN scores would "agree" with every pair below the threshold.
        (np.full((4, 2), 0.2), np.full((4, 2), np.nan), 0.5, "finite values in the candidate"),
        (np.full((4, 2), 0.2), np.full((4, 2), -np.inf), 0.5, "finite values in the candidate"),
        (np.full((4, 2), np.nan), np.full((4, 2), 0.2), 0.5, "finite values in the reference"),
        (np.empty((0, 2)), np.empty((0, 2)), 0.5, "held-out items = 0"),  # agreement over nothing
    ],
)
def test_the_decision_gate_cannot_pass_on_nothing_or_on_nan(reference, candidate, threshold, words):
    """Tolerances without max_abs_diff (int8, fp16) must still refuse what no model should make."""
    with pytest.raises(ParityError, match=words):
        check_parity("int8", "scores", reference, candidate, Tolerance(min_decision_agreement=0.995), OutputKind.SCORES, threshold)
    with pytest.raises(ValueError, match=r"threshold must lie in \(0, 1\)"):
        check_parity("int8", "scores", np.full((4, 2), 0.2), np.full((4, 2), 0.2), Tolerance(min_decision_agreement=0.9), threshold=np.nan)


def test_check_parity_compares_embedding_directions():
    reference = np.random.default_rng(0).standard_normal((50, 8))
    scaled = check_parity("v", "e", reference, reference * 1.3, Tolerance(min_cosine=0.99), OutputKind.EMBEDDING)
    assert scaled.min_cosine == pytest.approx(1.0) and scaled.top1_agreement is None
    turned = reference.copy()
    turned[7] = -turned[7]
    with pytest.raises(ParityError, match=r"output 'e' min cosine similarity = -1 \(below the tolerance 0.99\)"):
        check_parity("v", "e", reference, turned, Tolerance(min_cosine=0.99), OutputKind.EMBEDDING)


def test_outputs_of_different_shapes_are_refused_before_any_measure():
    with pytest.raises(ParityError, match="shape mismatch"):
        check_parity("fp16", "scores", np.full((4, 2), 0.2), np.full((4, 3), 0.2), Tolerance(max_abs_diff=1.0))


def test_detection_agreement_counts_only_the_pairs_either_side_detects():
    # 100 windows x 10 species, 20 detections: one lost is 0.999 per pair but 19/20 of the detections.
    reference = np.full((100, 10), 0.1)
    reference[:20, 0] = 0.9
    candidate = reference.copy()
    candidate[0, 0] = 0.2
    lenient = Tolerance(min_decision_agreement=0.995)
    assert check_parity("int8", "scores", reference, candidate, lenient, OutputKind.SCORES, threshold=0.5).detection_agreement == 0.95
    with pytest.raises(ParityError, match=r"detection agreement at 0.5 = 0.95 \(below the tolerance 0.98\)"):
        check_parity("int8", "scores", reference, candidate, Tolerance(min_detection_agreement=0.98), OutputKind.SCORES, threshold=0.5)
    nothing = np.full((4, 2), 0.1)
    with pytest.raises(ParityError, match="no detections on either side"):
        check_parity("int8", "scores", nothing, nothing, Tolerance(min_detection_agreement=0.98), OutputKind.SCORES, threshold=0.5)

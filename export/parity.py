"""Parity gates: an exported variant is registered only if its outputs match the reference.

Like optimum's validate_model_outputs: every variant has named tolerances, the check runs on
held-out inputs, each output is checked as what it is (class scores, an embedding, any tensor),
and a failure raises a typed error naming the output, the measured difference and the tolerance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum

import numpy as np


class OutputKind(StrEnum):
    """What an output holds decides which checks apply to it."""

    SCORES = "scores"
    """[n, classes] per-class scores: top-1 and thresholded decisions are compared."""
    EMBEDDING = "embedding"
    """[n, d] vectors: directions are compared (cosine similarity)."""
    TENSOR = "tensor"
    """Anything else: element-wise differences only."""


class ParityError(ValueError):
    """An exported variant differs from its reference by more than its tolerance."""

    def __init__(self, variant: str, output: str, measure: str, value: float, tolerance: float, worse_if: str):
        self.variant, self.output, self.measure, self.value, self.tolerance = variant, output, measure, value, tolerance
        super().__init__(
            f"parity gate failed for variant {variant!r}: output {output!r} {measure} = {value:.6g} "
            f"({worse_if} the tolerance {tolerance:.6g}); nothing was registered"
        )


@dataclass(frozen=True)
class Tolerance:
    """Named limits for one variant, applied to every output they fit. None skips a check."""

    max_abs_diff: float | None = None
    """Largest |variant - reference| allowed on any element of any output."""
    min_top1_agreement: float | None = None
    """Scores: share of rows whose argmax equals the reference's argmax."""
    min_decision_agreement: float | None = None
    """Scores: share of (row, class) pairs on the same side of the decision threshold as the reference."""
    min_detection_agreement: float | None = None
    """Scores: of the (row, class) pairs detected by the reference or the variant, the share both detect.
    Per-pair agreement counts the many pairs neither detects: at 0.995 a variant may still lose or add
    one detection in twelve when detections are 6% of the pairs, as in the default birdcall test split."""
    min_cosine: float | None = None
    """Embeddings: the smallest cosine similarity between a row and its reference row."""


@dataclass(frozen=True)
class ParityResult:
    variant: str
    output: str
    max_abs_diff: float
    n_inputs: int
    top1_agreement: float | None = None
    decision_agreement: float | None = None
    """Per (row, class) pair, at the threshold below."""
    window_decision_agreement: float | None = None
    """Share of rows whose every class decision agrees (reported, not gated)."""
    detection_agreement: float | None = None
    """Of the pairs either side detects, the share both detect (None: neither detects any)."""
    decision_threshold: float | None = None
    min_cosine: float | None = None
    mean_cosine: float | None = None

    def to_dict(self) -> dict:
        return {k: (round(v, 7) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _cosines(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    a, b = reference.astype(np.float64), candidate.astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.sum(a * b, axis=1) / np.maximum(norms, 1e-12)


def check_parity(
    variant: str,
    output: str,
    reference: np.ndarray,
    candidate: np.ndarray,
    tolerance: Tolerance,
    kind: OutputKind = OutputKind.SCORES,
    threshold: float | None = None,
) -> ParityResult:
    """Compare candidate to reference outputs ([n, ...]); raise ParityError past any tolerance.

    threshold: where a score becomes a detection (needed for min_decision_agreement).
    """
    if reference.shape != candidate.shape:
        raise ParityError(variant, output, "shape mismatch (elements)", float(candidate.size), float(reference.size), "not equal to")
    # Every check below must be able to fail: none on no data, none on NaN (NaN >= t is False, so
    # NaN scores would "agree" with every reference below the threshold), none at a NaN threshold.
    if reference.size == 0:
        raise ParityError(variant, output, "held-out items", 0.0, 1.0, "below")
    for name, values in (("reference", reference), ("candidate", candidate)):
        finite = float(np.isfinite(values).mean())
        if finite < 1.0:
            raise ParityError(variant, output, f"share of finite values in the {name}", finite, 1.0, "below")
    if threshold is not None and not 0.0 < threshold < 1.0:
        raise ValueError(f"variant {variant!r}: the decision threshold must lie in (0, 1), got {threshold}")
    diff = float(np.max(np.abs(candidate.astype(np.float64) - reference.astype(np.float64))))
    measured: dict[str, float | None] = {}
    if kind == OutputKind.SCORES and reference.ndim == 2:
        measured["top1_agreement"] = float(np.mean(reference.argmax(1) == candidate.argmax(1)))
        if threshold is not None:
            same = (reference >= threshold) == (candidate >= threshold)
            measured["decision_agreement"] = float(same.mean())
            measured["window_decision_agreement"] = float(same.all(axis=1).mean())
            either = int(((reference >= threshold) | (candidate >= threshold)).sum())
            both = int(((reference >= threshold) & (candidate >= threshold)).sum())
            measured["detection_agreement"] = both / either if either else None
            measured["decision_threshold"] = threshold
    if kind == OutputKind.EMBEDDING and reference.ndim == 2:
        cosines = _cosines(reference, candidate)
        measured["min_cosine"] = float(cosines.min())
        measured["mean_cosine"] = float(cosines.mean())
    result = ParityResult(variant, output, diff, len(reference), **measured)
    if tolerance.max_abs_diff is not None and not diff <= tolerance.max_abs_diff:
        raise ParityError(variant, output, "max |difference|", diff, tolerance.max_abs_diff, "above")
    if tolerance.min_top1_agreement is not None and kind == OutputKind.SCORES:
        agreement = result.top1_agreement or 0.0
        if agreement < tolerance.min_top1_agreement:
            raise ParityError(variant, output, "top-1 agreement", agreement, tolerance.min_top1_agreement, "below")
    if tolerance.min_decision_agreement is not None and kind == OutputKind.SCORES:
        if threshold is None:
            raise ValueError(f"variant {variant!r}: a decision-agreement tolerance needs the decision threshold")
        agreement = result.decision_agreement or 0.0
        if agreement < tolerance.min_decision_agreement:
            raise ParityError(variant, output, f"decision agreement at {threshold:g}", agreement, tolerance.min_decision_agreement, "below")
    if tolerance.min_detection_agreement is not None and kind == OutputKind.SCORES:
        if threshold is None:
            raise ValueError(f"variant {variant!r}: a detection-agreement tolerance needs the decision threshold")
        # No detection on either side measures nothing: refused like the other checks on nothing.
        agreement = result.detection_agreement or 0.0
        if agreement < tolerance.min_detection_agreement:
            measure = f"detection agreement at {threshold:g}" + (
                "" if result.detection_agreement is not None else " (no detections on either side)"
            )
            raise ParityError(variant, output, measure, agreement, tolerance.min_detection_agreement, "below")
    if tolerance.min_cosine is not None and kind == OutputKind.EMBEDDING:
        cosine = result.min_cosine if result.min_cosine is not None else 0.0
        if not cosine >= tolerance.min_cosine:
            raise ParityError(variant, output, "min cosine similarity", cosine, tolerance.min_cosine, "below")
    return result

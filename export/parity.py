"""Parity gates: an exported variant is registered only if its outputs match the reference.

Like optimum's validate_model_outputs: every variant has named tolerances, the check runs on
held-out inputs, and a failure raises a typed error naming the output, the measured difference
and the tolerance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


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
    """Named limits for one variant. None skips a check."""

    max_abs_diff: float | None = None
    """Largest |variant - reference| allowed on any element of the output."""
    min_top1_agreement: float | None = None
    """Share of rows whose argmax equals the reference's argmax (classifiers)."""
    max_accuracy_drop: float | None = None
    """Reference accuracy minus variant accuracy, as a fraction (0.005 = 0.5 points)."""


@dataclass(frozen=True)
class ParityResult:
    variant: str
    output: str
    max_abs_diff: float
    top1_agreement: float | None
    accuracy: float | None
    reference_accuracy: float | None
    n_inputs: int

    def to_dict(self) -> dict:
        return {k: (round(v, 7) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def check_parity(
    variant: str,
    output: str,
    reference: np.ndarray,
    candidate: np.ndarray,
    tolerance: Tolerance,
    labels: np.ndarray | None = None,
) -> ParityResult:
    """Compare candidate to reference outputs ([n, ...]); raise ParityError past any tolerance."""
    if reference.shape != candidate.shape:
        raise ParityError(variant, output, "shape mismatch (elements)", float(candidate.size), float(reference.size), "not equal to")
    diff = float(np.max(np.abs(candidate.astype(np.float64) - reference.astype(np.float64)))) if reference.size else 0.0
    if not np.isfinite(candidate).all():
        diff = float("inf")
    agreement = accuracy = ref_accuracy = None
    if reference.ndim == 2:
        ref_top1, cand_top1 = reference.argmax(1), candidate.argmax(1)
        agreement = float(np.mean(ref_top1 == cand_top1))
        if labels is not None:
            ref_accuracy = float(np.mean(ref_top1 == labels))
            accuracy = float(np.mean(cand_top1 == labels))
    result = ParityResult(variant, output, diff, agreement, accuracy, ref_accuracy, len(reference))
    if tolerance.max_abs_diff is not None and not diff <= tolerance.max_abs_diff:
        raise ParityError(variant, output, "max |difference|", diff, tolerance.max_abs_diff, "above")
    if tolerance.min_top1_agreement is not None and (agreement is None or agreement < tolerance.min_top1_agreement):
        raise ParityError(variant, output, "top-1 agreement", agreement or 0.0, tolerance.min_top1_agreement, "below")
    if tolerance.max_accuracy_drop is not None and accuracy is not None and ref_accuracy - accuracy > tolerance.max_accuracy_drop:
        raise ParityError(variant, output, "accuracy drop", ref_accuracy - accuracy, tolerance.max_accuracy_drop, "above")
    return result

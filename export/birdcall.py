"""Export birdcall: fp32, int8 (network only; the mel front end stays numpy) and fp16 ONNX.

The exported graph is what serving needs and nothing more: input `features` [n, 1, n_mels,
n_frames] (normalized ln-mel windows), outputs `scores` [n, species] (calibrated independent
probabilities: sigmoid(logit / temperature), the temperature from calibration.json baked in) and
`embedding` [n, d_model] (the pooled vector the head reads).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from export.parity import OutputKind, Tolerance
from export.pipeline import ExportJob, already_registered, export_digest, run_export
from features import FrontEnd, FrontEndConfig, NormStats
from layout import artifacts
from layout.artifacts import CALIBRATION, CONFIG, LABELS, METRICS, NORM_STATS, WEIGHTS
from layout.workspace import Workspace
from training.birdcall_data import featurize, read_manifest
from training.birdcall_model import BirdCallArch, BirdCallNet
from training.checkpoint import Checkpoint, load_checkpoint, load_weights

INPUT = "features"
OUTPUTS = {"scores": OutputKind.SCORES, "embedding": OutputKind.EMBEDDING}
# Named tolerances per variant, measured on the held-out test split. fp32 is held to torch on both
# outputs; int8 and fp16 must keep fp32's detections at the calibrated threshold and its embeddings.
TOLERANCES = {
    "fp32": Tolerance(max_abs_diff=1e-3),
    "int8": Tolerance(min_decision_agreement=0.995, min_detection_agreement=0.98, min_cosine=0.99),
    "fp16": Tolerance(min_decision_agreement=0.995, min_detection_agreement=0.98, min_cosine=0.99),
}
VARIANTS = ("fp32", "int8", "fp16")


class ServedBirdCall(nn.Module):
    """The trained network with its calibration: features -> (scores, embedding)."""

    inverse_temperature: torch.Tensor

    def __init__(self, net: BirdCallNet, temperature: float):
        super().__init__()
        self.net = net
        self.register_buffer("inverse_temperature", torch.tensor(1.0 / temperature))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, embedding = self.net.logits_and_embedding(features)
        return torch.sigmoid(logits * self.inverse_temperature), embedding


def _served_parts(checkpoint: Checkpoint) -> tuple[list[str], dict[str, list[float]], dict[str, Any]]:
    """The checkpoint's labels, normalization statistics and calibration, which serving needs beside the weights."""
    if checkpoint.labels is None or checkpoint.norm_stats is None or checkpoint.calibration is None:
        raise FileNotFoundError(
            f"{checkpoint.directory} lacks {LABELS}, {NORM_STATS} or {CALIBRATION}: retrain with this version (chorus train birdcall)"
        )
    return checkpoint.labels, checkpoint.norm_stats, checkpoint.calibration


def held_out_inputs(checkpoint: Checkpoint, limit: int | None = None) -> np.ndarray:
    """Normalized test-split windows of the training data, via the shared front end."""
    csv_path = Path(checkpoint.metrics["data_csv"])
    if not csv_path.exists():
        raise FileNotFoundError(f"the training data {csv_path} is gone; the parity gate needs its test split")
    labels, norm_stats, _ = _served_parts(checkpoint)
    items = [item for item in read_manifest(csv_path) if item.split == "test"][:limit]
    if not items:
        raise FileNotFoundError(f"{csv_path} has no test split any more; the parity gate compares the variants on it")
    config = FrontEndConfig.from_dict(checkpoint.config[artifacts.FRONTEND])
    windows = featurize(items, labels, config, desc="features test")
    frontend = FrontEnd(config, NormStats.from_dict(norm_stats))
    return frontend.normalize(windows.log_mels)


def export_birdcall(
    workspace: Workspace,
    *,
    variants: tuple[str, ...] = VARIANTS,
    tolerances: dict[str, Tolerance] | None = None,
    limit_test_recordings: int | None = None,
) -> dict[str, Any]:
    """Export, gate, time and register; returns the report. Raises ParityError and registers nothing on failure."""
    tolerances = {**TOLERANCES, **(tolerances or {})}
    checkpoint = load_checkpoint(workspace.checkpoint_dir("birdcall"))
    _, _, calibration = _served_parts(checkpoint)  # before the digest reads them: a missing one is said, not a bare FileNotFoundError
    digest = export_digest(checkpoint, (WEIGHTS, CONFIG, LABELS, NORM_STATS, CALIBRATION), variants, tolerances)
    reports = workspace.reports_dir("birdcall")
    if (report := already_registered("birdcall", digest, reports)) is not None:
        return report
    net = load_weights(BirdCallNet(BirdCallArch(**checkpoint.config[artifacts.ARCH])), checkpoint)
    job = ExportJob(
        name="birdcall",
        checkpoint=checkpoint,
        module=ServedBirdCall(net, calibration["temperature"]),
        inputs={INPUT: held_out_inputs(checkpoint, limit_test_recordings)},
        outputs=OUTPUTS,
        variants=variants,
        tolerances=tolerances,
        digest=digest,
        decision_threshold=calibration["threshold"],
        store_labels={"task": "audio-classification", "data_hash": str(checkpoint.metrics.get("data_hash", ""))[:16]},
        metadata={
            "labels": checkpoint.labels,
            "scores": "independent calibrated probability per species (sigmoid); a species is detected where score >= threshold",
            "threshold": calibration["threshold"],
            "calibration": checkpoint.calibration,
            artifacts.FRONTEND: checkpoint.config[artifacts.FRONTEND],
            artifacts.ARCH: checkpoint.config[artifacts.ARCH],
            "training_metrics": {k: v for k, v in checkpoint.metrics.items() if isinstance(v, (int, float, str))},
        },
        checkpoint_files=(CONFIG, LABELS, NORM_STATS, METRICS, CALIBRATION),
    )
    return run_export(job, reports)

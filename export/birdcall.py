"""Export birdcall: fp32, int8 (network only; the mel front end stays numpy) and fp16 ONNX."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from export.parity import Tolerance
from export.pipeline import ExportJob, already_registered, export_digest, run_export
from features import FrontEnd, FrontEndConfig, NormStats
from layout import artifacts
from layout.artifacts import CONFIG, LABELS, METRICS, NORM_STATS, WEIGHTS
from layout.workspace import Workspace
from training.birdcall_data import clip_filter, featurize, read_manifest
from training.birdcall_model import BirdCallArch, BirdCallNet
from training.checkpoint import Checkpoint, load_checkpoint, load_weights

INPUT, OUTPUT = "features", "logits"
# Named tolerances per variant, measured on the held-out test split.
TOLERANCES = {
    "fp32": Tolerance(max_abs_diff=1e-3, min_top1_agreement=0.999),
    "int8": Tolerance(min_top1_agreement=0.995, max_accuracy_drop=0.005),
    "fp16": Tolerance(max_abs_diff=0.1, min_top1_agreement=0.99, max_accuracy_drop=0.005),
}
VARIANTS = ("fp32", "int8", "fp16")


def held_out_inputs(checkpoint: Checkpoint, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Normalized test-split windows of the training data, with their labels, via the shared front end."""
    csv_path = Path(checkpoint.metrics["data_csv"])
    if not csv_path.exists():
        raise FileNotFoundError(f"the training data {csv_path} is gone; the parity gate needs its test split")
    items = [item for item in read_manifest(csv_path) if item.split == "test"][:limit]
    config = FrontEndConfig.from_dict(checkpoint.config[artifacts.FRONTEND])
    windows = featurize(items, checkpoint.labels, config, desc="features test")
    windows = windows.select(clip_filter(windows))
    frontend = FrontEnd(config, NormStats.from_dict(checkpoint.norm_stats))
    return frontend.normalize(windows.log_mels), windows.labels


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
    digest = export_digest(checkpoint, (WEIGHTS, CONFIG, LABELS, NORM_STATS), variants, tolerances)
    reports = workspace.reports_dir("birdcall")
    if (report := already_registered("birdcall", digest, reports)) is not None:
        return report
    model = load_weights(BirdCallNet(BirdCallArch(**checkpoint.config[artifacts.ARCH])), checkpoint)
    x, y = held_out_inputs(checkpoint, limit_test_recordings)
    job = ExportJob(
        name="birdcall",
        checkpoint=checkpoint,
        module=model,
        inputs={INPUT: x},
        output=OUTPUT,
        variants=variants,
        tolerances=tolerances,
        digest=digest,
        labels=y,
        store_labels={"task": "audio-classification", "data_hash": str(checkpoint.metrics.get("data_hash", ""))[:16]},
        metadata={
            "labels": checkpoint.labels,
            artifacts.FRONTEND: checkpoint.config[artifacts.FRONTEND],
            artifacts.ARCH: checkpoint.config[artifacts.ARCH],
            "training_metrics": {k: v for k, v in checkpoint.metrics.items() if isinstance(v, (int, float, str))},
        },
        checkpoint_files=(CONFIG, LABELS, NORM_STATS, METRICS),
    )
    return run_export(job, reports)

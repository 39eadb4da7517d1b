"""Checkpoints: safetensors weights + JSON files. Never a pickled model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from safetensors.torch import load_file, save_file
from torch import nn

from layout.artifacts import CALIBRATION, CONFIG, LABELS, METRICS, NORM_STATS, WEIGHTS, read_json


@dataclass
class Checkpoint:
    """What training leaves behind and export reads."""

    directory: Path
    config: dict[str, Any]
    """`model` name, `arch` kwargs, `frontend` config (birdcall), `training` facts."""
    labels: list[str] | None
    norm_stats: dict[str, list[float]] | None
    metrics: dict[str, Any]
    calibration: dict[str, Any] | None = None
    """How scores are calibrated and the default threshold (birdcall)."""

    @property
    def weights_path(self) -> Path:
        return self.directory / WEIGHTS


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def save_checkpoint(
    directory: Path,
    model: nn.Module,
    config: dict[str, Any],
    metrics: dict[str, Any],
    labels: list[str] | None = None,
    norm_stats: dict[str, list[float]] | None = None,
    calibration: dict[str, Any] | None = None,
) -> Checkpoint:
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, directory / WEIGHTS)
    _write_json(directory / CONFIG, config)
    _write_json(directory / METRICS, metrics)
    if labels is not None:
        _write_json(directory / LABELS, labels)
    if norm_stats is not None:
        _write_json(directory / NORM_STATS, norm_stats)
    if calibration is not None:
        _write_json(directory / CALIBRATION, calibration)
    return Checkpoint(directory, config, labels, norm_stats, metrics, calibration)


def load_checkpoint(directory: Path) -> Checkpoint:
    if not (directory / WEIGHTS).exists():
        raise FileNotFoundError(f"no checkpoint in {directory} (missing {WEIGHTS}); train first: chorus train")

    def read(name: str) -> Any:
        return read_json(directory, name) if (directory / name).exists() else None

    return Checkpoint(directory, read(CONFIG), read(LABELS), read(NORM_STATS), read(METRICS) or {}, read(CALIBRATION))


Module = TypeVar("Module", bound=nn.Module)


def load_weights(model: Module, checkpoint: Checkpoint) -> Module:
    model.load_state_dict(load_file(checkpoint.weights_path))
    return model.eval()

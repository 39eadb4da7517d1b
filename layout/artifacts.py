"""The model-artifact layout: the files a trained model is made of and the keys of its config.

Training writes a checkpoint in this layout, export copies it into the BentoML model store next to
the ONNX files, and the service and the benchmarks read it from there. One definition, so a file or
key renamed in one layer cannot leave another reading what is no longer written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

WEIGHTS = "model.safetensors"
"""torch state_dict (safetensors); training and export only, never served."""
CONFIG = "config.json"
"""Architecture, front end and schedule: see the keys below."""
LABELS = "labels.json"
"""Class names in output order (classifiers)."""
NORM_STATS = "norm_stats.json"
"""Per-mel-band mean and std of the training split (birdcall)."""
METRICS = "metrics.json"
"""Training facts and figures (optional when reading). birdcall: `threshold`, `validation_detection_share`
{species: share of validation windows detected at the default threshold}, `validation_no_detection_share`,
and the `val`/`test` figures (see docs/training.md)."""
CALIBRATION = "calibration.json"
"""How birdcall scores are calibrated (`method`, `temperature`, already inside the ONNX graph), the default
decision `threshold` (a species is detected where its score >= threshold) and the validation `ece`."""

# Keys of config.json.
ARCH = "arch"
"""Constructor arguments of the network."""
FRONTEND = "frontend"
"""features.FrontEndConfig as a dict (birdcall)."""
ALPHAS_CUMPROD = "alphas_cumprod"
"""The diffusion schedule, one float per training timestep (frames)."""
IMAGE_SIZE = "image_size"
"""Side of the square images, in pixels: a key of the `arch` section (frames)."""


def onnx_file(model: str, variant: str) -> str:
    """File name of one exported variant (fp32, int8, fp16) of a model."""
    return f"{model}.{variant}.onnx"


def read_json(directory: Path, name: str, default: Any = None) -> Any:
    """One JSON file of an artifact directory; `default` when the file is absent (None: it must exist)."""
    path = directory / name
    if default is not None and not path.exists():
        return default
    return json.loads(path.read_text())

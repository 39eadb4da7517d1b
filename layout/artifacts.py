"""The model-artifact layout: the files a trained model is made of and the keys of its config.

Training writes a checkpoint in this layout, export copies it into the BentoML model store next to
the ONNX files, and the service and the benchmarks read it from there. One definition, so a file or
key renamed in one layer cannot leave another reading what is no longer written.
"""

from __future__ import annotations

import hashlib
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


MANIFEST = "manifest.json"
"""sha256 and size of every other file of a stored model, written at export, checked at load."""


class ArtifactError(Exception):
    """A stored model's files are missing, changed or broken; the message lists what."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: Path) -> dict[str, dict[str, Any]]:
    """Record every file of `directory` (the manifest aside); returns what was recorded."""
    files = {
        path.name: {"sha256": _sha256(path), "bytes": path.stat().st_size}
        for path in sorted(directory.iterdir())
        if path.is_file() and path.name != MANIFEST
    }
    (directory / MANIFEST).write_text(json.dumps({"files": files}, indent=2) + "\n")
    return files


def verify_manifest(directory: Path, required: tuple[str, ...] = ()) -> list[str]:
    """Raise ArtifactError unless every file the manifest records is there with its digest, and
    every `required` file is among them (a file added later is not trusted either); returns their names."""
    manifest = directory / MANIFEST
    if not manifest.exists():
        raise ArtifactError(
            f"{directory} has no {MANIFEST}: it was exported before digests were recorded, or it was tampered with; export again"
        )
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{directory / MANIFEST} is unreadable ({exc}); export again") from None
    problems = [f"{name} is not recorded in the manifest" for name in required if name not in files]
    for name, expected in sorted(files.items()):
        path = directory / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif path.stat().st_size != expected["bytes"]:
            problems.append(f"{name} has {path.stat().st_size} bytes, {expected['bytes']} were exported (truncated or replaced)")
        elif _sha256(path) != expected["sha256"]:
            problems.append(f"{name} does not match its exported sha256 (changed after export)")
    if problems:
        raise ArtifactError(f"{directory}: " + "; ".join(problems))
    return sorted(files)

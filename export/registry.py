"""Register exported artifacts in the BentoML model store, once per distinct content."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import bentoml

from layout.artifacts import write_manifest

CONTENT_LABEL = "content_hash"


def content_hash(files: list[Path], settings: dict[str, Any]) -> str:
    """sha256 over the checkpoint files and the export settings: equal hash, equal artifacts."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for path in sorted(files):
        digest.update(str(path.name).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def git_sha() -> str:
    """The source revision, with '-dirty' when the work tree has uncommitted changes; 'unknown' outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout
        return sha + ("-dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def find_registered(name: str, digest: str) -> bentoml.Model | None:
    """The stored model of this name whose content hash label matches, if any."""
    try:
        models = bentoml.models.list(name)
    except bentoml.exceptions.NotFound:
        return None
    for model in models:
        if model.info.labels.get(CONTENT_LABEL) == digest:
            return model
    return None


def _without_none(value: Any) -> Any:
    """BentoML metadata refuses None anywhere: drop such entries (absent means 'not measured')."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_without_none(v) for v in value if v is not None]
    return value


def register(name: str, artifacts: Path, labels: dict[str, str], metadata: dict[str, Any], digest: str) -> tuple[str, bool]:
    """Copy every file under `artifacts` into a new model version; returns (tag, created).

    A model with the same content hash is reused instead of creating a needless new version. The
    version's manifest records each file's sha256, which the service checks before it serves.
    """
    existing = find_registered(name, digest)
    if existing is not None:
        return str(existing.tag), False
    with bentoml.models.create(name, labels={**labels, CONTENT_LABEL: digest}, metadata=_without_none(metadata)) as model:
        for path in artifacts.iterdir():
            if path.is_file():
                shutil.copy2(path, Path(model.path) / path.name)
        write_manifest(Path(model.path))
    return str(model.tag), True

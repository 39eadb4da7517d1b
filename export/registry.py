"""Register exported artifacts in the BentoML model store, once per distinct content."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import bentoml

from layout.artifacts import ArtifactError, verify_manifest, write_manifest

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
    here = Path(__file__).resolve().parents[1]  # this checkout's, wherever the command runs from
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=here).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, cwd=here).stdout
        return sha + ("-dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def find_registered(name: str, digest: str) -> bentoml.Model | None:
    """The stored model of this name whose content hash label matches, if any (the newest such)."""
    try:
        models = bentoml.models.list(name)
    except bentoml.exceptions.NotFound:
        return None
    matches = [model for model in models if model.info.labels.get(CONTENT_LABEL) == digest]
    return max(matches, key=lambda model: model.creation_time, default=None)


def reuse_registered(name: str, digest: str) -> tuple[str, bool] | None:
    """(tag, created) of a stored version with this content hash that `name:latest` now names; None
    when there is none. The latest version is reused as it is. An older one is copied into a new
    version: BentoML moves `latest` only when it creates a version, so reusing it in place (export
    A, export B, export A again) would report A while B is served."""
    existing = find_registered(name, digest)
    if existing is None:
        return None
    if bentoml.models.get(f"{name}:latest").tag == existing.tag:
        return str(existing.tag), False
    try:
        recorded = verify_manifest(Path(existing.path))  # a damaged copy would be blessed by the new manifest
    except ArtifactError:
        return None
    files = [Path(existing.path) / file for file in recorded]
    return _create(name, files, dict(existing.info.labels), dict(existing.info.metadata)), True


def _without_none(value: Any) -> Any:
    """BentoML metadata refuses None anywhere: drop such entries (absent means 'not measured')."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_without_none(v) for v in value if v is not None]
    return value


def register(name: str, artifacts: Path, labels: dict[str, str], metadata: dict[str, Any], digest: str) -> tuple[str, bool]:
    """Copy every file under `artifacts` into a new model version; returns (tag, created).

    A stored version with the same content hash is reused (reuse_registered) instead of creating a
    needless new one. The version's manifest records each file's sha256, which the service checks
    before it serves.
    """
    reused = reuse_registered(name, digest)
    if reused is not None:
        return reused
    files = [path for path in artifacts.iterdir() if path.is_file()]
    return _create(name, files, {**labels, CONTENT_LABEL: digest}, _without_none(metadata)), True


def _create(name: str, files: list[Path], labels: dict[str, str], metadata: dict[str, Any]) -> str:
    """A new version of `name` holding copies of `files` and their manifest."""
    with bentoml.models.create(name, labels=labels, metadata=metadata) as model:
        for path in files:
            shutil.copy2(path, Path(model.path) / path.name)
        write_manifest(Path(model.path))
    return str(model.tag)

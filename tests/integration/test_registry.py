"""The model store keeps one version per distinct export, and `latest` is always the last exported."""

from __future__ import annotations

from pathlib import Path

import bentoml
import pytest

from export.registry import register
from layout.artifacts import ArtifactError, verify_manifest


def _artifacts(folder: Path, content: str) -> Path:
    folder.mkdir()
    (folder / "model.onnx").write_text(content)
    return folder


def _export(name: str, folder: Path, digest: str) -> tuple[str, bool]:
    return register(name, folder, {"task": "test"}, {"report": {"digest": digest}}, digest)


def test_reexport_of_the_latest_reuses_it(tmp_path):
    first = _export("registry-same", _artifacts(tmp_path / "a", "A"), "digest-a")
    assert _export("registry-same", _artifacts(tmp_path / "a2", "A"), "digest-a") == (first[0], False)
    assert len(bentoml.models.list("registry-same")) == 1


def test_reexport_of_an_older_version_makes_it_latest_again(tmp_path):
    """Export A, export B, export A again: A must be what `latest` serves, not only what is reported."""
    name = "registry-back"
    a, created_a = _export(name, _artifacts(tmp_path / "a", "A"), "digest-a")
    b, _ = _export(name, _artifacts(tmp_path / "b", "B"), "digest-b")
    assert created_a and str(bentoml.models.get(f"{name}:latest").tag) == b
    again, created = _export(name, _artifacts(tmp_path / "a2", "A"), "digest-a")
    assert created and again not in (a, b)
    latest = bentoml.models.get(f"{name}:latest")
    assert str(latest.tag) == again
    assert (Path(latest.path) / "model.onnx").read_text() == "A"
    assert latest.info.labels["content_hash"] == "digest-a" and latest.info.metadata["report"] == {"digest": "digest-a"}
    verify_manifest(Path(latest.path))
    # And once more: now the latest, so reused as it is.
    assert _export(name, _artifacts(tmp_path / "a3", "A"), "digest-a") == (again, False)


def test_a_damaged_older_version_is_not_copied(tmp_path):
    name = "registry-damaged"
    a, _ = _export(name, _artifacts(tmp_path / "a", "A"), "digest-a")
    _export(name, _artifacts(tmp_path / "b", "B"), "digest-b")
    (Path(bentoml.models.get(a).path) / "model.onnx").write_text("tampered")
    with pytest.raises(ArtifactError):
        verify_manifest(Path(bentoml.models.get(a).path))
    again, created = _export(name, _artifacts(tmp_path / "a2", "A"), "digest-a")
    assert created and again != a
    assert (Path(bentoml.models.get(f"{name}:latest").path) / "model.onnx").read_text() == "A"

"""The export's digests: a stored model's files are served only as they were exported."""

from __future__ import annotations

import pytest

from layout.artifacts import MANIFEST, ArtifactError, verify_manifest, write_manifest


@pytest.fixture
def stored(tmp_path):
    (tmp_path / "m.fp32.onnx").write_bytes(b"\x08\x01" * 1000)
    (tmp_path / "labels.json").write_text('["a", "b"]')
    write_manifest(tmp_path)
    return tmp_path


def test_an_untouched_model_verifies(stored):
    verify_manifest(stored, required=("labels.json",))


@pytest.mark.parametrize(
    ("tamper", "words"),
    [
        (lambda d: (d / "m.fp32.onnx").write_bytes(b"\x08\x02" + b"\x08\x01" * 999), "does not match its exported sha256"),
        (lambda d: (d / "m.fp32.onnx").write_bytes(b"\x08\x01" * 500), "truncated or replaced"),
        (lambda d: (d / "labels.json").unlink(), "labels.json is missing"),
        (lambda d: (d / MANIFEST).unlink(), "has no manifest.json"),
        (lambda d: (d / MANIFEST).write_text("{not json"), "unreadable"),
    ],
)
def test_tampering_is_named(stored, tamper, words):
    tamper(stored)
    with pytest.raises(ArtifactError, match=words):
        verify_manifest(stored)


def test_a_required_file_added_after_export_is_not_trusted(stored):
    (stored / "norm_stats.json").write_text("{}")
    with pytest.raises(ArtifactError, match=r"norm_stats\.json is not recorded"):
        verify_manifest(stored, required=("norm_stats.json",))

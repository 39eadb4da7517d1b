"""A stored model is served only as it was exported: each kind of damage is refused at load, by name."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from layout import artifacts
from layout.artifacts import ArtifactError, write_manifest
from service.engine.loaded import open_model
from service.engine.runtime import CPU
from service.store import StoredModel

REQUIRED = (artifacts.CONFIG, artifacts.LABELS, artifacts.NORM_STATS)


@pytest.fixture
def stored_copy(tiny_exports, tmp_path) -> StoredModel:
    """A private copy of the exported tiny birdcall model, to damage."""
    original = StoredModel.resolve(tiny_exports["birdcall"]["tag"])
    shutil.copytree(original.path, tmp_path / "birdcall")
    return StoredModel(original.name, original.version, tmp_path / "birdcall")


def onnx_of(stored: StoredModel):
    return stored.path / artifacts.onnx_file(stored.name, "fp32")


def test_resolving_a_tag_finds_what_bentoml_finds(tiny_exports):
    """Plain tags are read from the store's folders, the rest through BentoML: the same answers."""
    import bentoml

    exact = tiny_exports["birdcall"]["tag"]
    for tag in (exact, "birdcall:latest", "birdcall", "BirdCall:latest", exact[: exact.index(":") + 5]):
        model = bentoml.models.get(tag)
        assert StoredModel.resolve(tag) == StoredModel(model.tag.name, model.tag.version or "", Path(model.path))


def test_an_intact_copy_loads(stored_copy):
    model = open_model(stored_copy, "fp32", [CPU], required=REQUIRED)
    assert model.info()["name"] == "birdcall"


def flip_4_kb(stored: StoredModel) -> None:
    path = onnx_of(stored)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = bytes(b ^ 0x5A for b in data[middle : middle + 4096])
    path.write_bytes(bytes(data))


def nan_weights(stored: StoredModel) -> None:
    """Weights made NaN and the manifest rewritten: a digest cannot catch what was exported so."""
    model = onnx.load(onnx_of(stored))
    biggest = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    values = numpy_helper.to_array(biggest).copy()
    values.flat[0] = np.nan
    biggest.CopyFrom(numpy_helper.from_array(values, biggest.name))
    onnx.save(model, onnx_of(stored))
    write_manifest(stored.path)


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (flip_4_kb, "birdcall.fp32.onnx does not match its exported sha256"),
        (lambda s: onnx_of(s).write_bytes(onnx_of(s).read_bytes()[:1000]), "truncated or replaced"),
        (lambda s: (s.path / artifacts.LABELS).unlink(), "labels.json is missing"),
        (lambda s: (s.path / artifacts.NORM_STATS).unlink(), "norm_stats.json is missing"),
        (lambda s: (s.path / artifacts.MANIFEST).unlink(), "has no manifest.json"),
        (nan_weights, "computes non-finite 'scores'|computes non-finite 'logits'"),
    ],
    ids=["flipped-bytes", "truncated", "no-labels", "no-norm-stats", "no-manifest", "nan-weights"],
)
def test_damage_is_refused_with_its_reason(stored_copy, damage, words):
    damage(stored_copy)
    with pytest.raises(ArtifactError, match=words):
        open_model(stored_copy, "fp32", [CPU], required=REQUIRED)

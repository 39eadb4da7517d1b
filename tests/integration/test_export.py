"""Export: ONNX variants, dynamic batch, the parity gate, and model store registration."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import bentoml
import numpy as np
import pytest
import torch

import export.pipeline
from export.birdcall import export_birdcall
from export.onnx_tools import cpu_session
from export.parity import ParityError, Tolerance, check_parity
from features import FrontEndConfig
from tests.conftest import TINY_TOLERANCES
from training.checkpoint import load_checkpoint

@pytest.fixture(scope="module")
def birdcall_report(tiny_exports):
    return tiny_exports["birdcall"]


def test_birdcall_export_registers_all_variants_with_metadata(birdcall_report, tiny_workspace):
    assert set(birdcall_report["variants"]) == {"fp32", "int8", "fp16"}
    fp32 = birdcall_report["variants"]["fp32"]
    assert fp32["parity"]["max_abs_diff"] <= 1e-3
    assert [row["batch"] for row in fp32["cpu_timing"]] == [1, 8, 32, 128]

    model = bentoml.models.get(birdcall_report["tag"])
    checkpoint = load_checkpoint(tiny_workspace.checkpoint_dir("birdcall"))
    files = {p.name for p in Path(model.path).iterdir()}
    assert {"birdcall.fp32.onnx", "birdcall.int8.onnx", "birdcall.fp16.onnx", "labels.json", "norm_stats.json", "config.json"} <= files
    # Labels and metadata round-trip through the store.
    assert model.info.labels["task"] == "audio-classification"
    assert model.info.labels["data_hash"] == checkpoint.metrics["data_hash"][:16]
    assert model.info.metadata["labels"] == checkpoint.labels
    assert model.info.metadata["frontend"] == checkpoint.config["frontend"]
    assert model.info.metadata["report"]["variants"]["int8"]["parity"]["top1_agreement"] >= 0.5
    assert json.loads((Path(model.path) / "norm_stats.json").read_text()) == checkpoint.norm_stats
    report_dir = tiny_workspace.reports_dir("birdcall")
    assert "| int8 |" in (report_dir / "export_report.md").read_text()
    assert json.loads((report_dir / "export_report.json").read_text())["tag"] == birdcall_report["tag"]


def test_reexport_of_the_same_checkpoint_reuses_the_version(birdcall_report, tiny_workspace):
    again = export_birdcall(tiny_workspace, tolerances=TINY_TOLERANCES)
    assert again["created"] is False
    assert again["tag"] == birdcall_report["tag"]
    assert len(bentoml.models.list("birdcall")) == 1


# Dynamic int8 quantizes activations with one scale per MatMul input tensor, i.e. per batch, so its
# per-item outputs move slightly with the batch they ride in; fp32 must not move at all.
@pytest.mark.parametrize(("variant", "atol"), [("fp32", 1e-4), ("int8", 0.1)])
def test_dynamic_batch_gives_the_same_per_item_outputs(birdcall_report, variant, atol):
    path = Path(bentoml.models.get(birdcall_report["tag"]).path) / f"birdcall.{variant}.onnx"
    session = cpu_session(path)
    x = np.random.default_rng(0).standard_normal((37, *FrontEndConfig().feature_shape)).astype(np.float32)
    batched = session.run(None, {"features": x})[0]
    single = np.concatenate([session.run(None, {"features": x[i : i + 1]})[0] for i in range(37)])
    assert batched.shape == (37, 12)
    np.testing.assert_allclose(batched, single, atol=atol)


def test_parity_gate_refuses_a_perturbed_model_and_registers_nothing(birdcall_report, tiny_workspace, monkeypatch):
    real_export = export.pipeline.export_onnx

    def export_perturbed(module, example, outputs, path):
        broken = copy.deepcopy(module)
        with torch.no_grad():
            broken.head.weight.add_(torch.randn_like(broken.head.weight))
        return real_export(broken, example, outputs, path)

    monkeypatch.setattr(export.pipeline, "export_onnx", export_perturbed)
    before = {str(m.tag) for m in bentoml.models.list("birdcall")}
    # A different tolerance set gives a different digest, so this is a fresh export, not a reuse.
    with pytest.raises(ParityError, match=r"variant 'fp32': output 'logits' max \|difference\| = [0-9.]+ \(above the tolerance 0.001\); nothing was registered") as info:
        export_birdcall(tiny_workspace, variants=("fp32",), tolerances=TINY_TOLERANCES)
    assert info.value.output == "logits" and info.value.value > info.value.tolerance
    assert {str(m.tag) for m in bentoml.models.list("birdcall")} == before


def test_check_parity_measures_and_names_each_limit():
    reference = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 1.0]])
    labels = np.array([0, 1, 0, 1])
    ok = check_parity("v", "y", reference, reference + 1e-5, Tolerance(max_abs_diff=1e-4), labels)
    assert ok.top1_agreement == 1.0 and ok.accuracy == ok.reference_accuracy == 1.0
    flipped = reference.copy()
    flipped[0] = [0.0, 5.0]
    with pytest.raises(ParityError, match="top-1 agreement = 0.75"):
        check_parity("v", "y", reference, flipped, Tolerance(min_top1_agreement=0.995), labels)
    with pytest.raises(ParityError, match="accuracy drop = 0.25"):
        check_parity("v", "y", reference, flipped, Tolerance(max_accuracy_drop=0.005), labels)
    with pytest.raises(ParityError, match="max"):
        check_parity("v", "y", reference, reference * np.nan, Tolerance(max_abs_diff=1.0))


def test_frames_export_registers_the_denoiser(tiny_exports):
    report = tiny_exports["frames"]
    assert set(report["variants"]) == {"fp32", "fp16"}
    assert report["variants"]["fp32"]["parity"]["max_abs_diff"] <= 1e-3
    model = bentoml.models.get(report["tag"])
    session = cpu_session(Path(model.path) / "frames.fp32.onnx")
    assert [i.name for i in session.get_inputs()] == ["x_t", "t"]
    x = np.random.default_rng(0).standard_normal((5, 3, 16, 16)).astype(np.float32)
    t = np.array([0, 10, 500, 900, 999], np.float32)
    v = session.run(None, {"x_t": x, "t": t})[0]
    assert v.shape == x.shape and np.isfinite(v).all()
    config = json.loads((Path(model.path) / "config.json").read_text())
    assert len(config["alphas_cumprod"]) == 1000

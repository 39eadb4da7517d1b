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
from export.birdcall import ServedBirdCall, export_birdcall, held_out_inputs
from export.onnx_tools import cpu_session
from export.parity import OutputKind, ParityError, Tolerance
from features import FrontEndConfig
from tests.conftest import TINY_TOLERANCES
from training.birdcall_model import BirdCallArch, BirdCallNet
from training.checkpoint import load_checkpoint, load_weights


@pytest.fixture(scope="module")
def birdcall_report(tiny_exports):
    return tiny_exports["birdcall"]


def test_birdcall_export_registers_all_variants_with_metadata(birdcall_report, tiny_workspace):
    assert set(birdcall_report["variants"]) == {"fp32", "int8", "fp16"}
    fp32 = birdcall_report["variants"]["fp32"]
    assert set(fp32["parity"]) == {"scores", "embedding"}
    assert fp32["parity"]["scores"]["max_abs_diff"] <= 1e-3 and fp32["parity"]["embedding"]["max_abs_diff"] <= 1e-3
    assert [row["batch"] for row in fp32["cpu_timing"]] == [1, 8, 32, 128]

    model = bentoml.models.get(birdcall_report["tag"])
    checkpoint = load_checkpoint(tiny_workspace.checkpoint_dir("birdcall"))
    files = {p.name for p in Path(model.path).iterdir()}
    expected = {"birdcall.fp32.onnx", "birdcall.int8.onnx", "birdcall.fp16.onnx", "labels.json", "norm_stats.json", "config.json"}
    assert expected | {"calibration.json", "metrics.json"} <= files
    # Labels and metadata round-trip through the store.
    assert model.info.labels["task"] == "audio-classification"
    assert model.info.labels["data_hash"] == checkpoint.metrics["data_hash"][:16]
    assert model.info.metadata["labels"] == checkpoint.labels
    assert model.info.metadata["frontend"] == checkpoint.config["frontend"]
    assert model.info.metadata["threshold"] == checkpoint.calibration["threshold"]
    assert model.info.metadata["report"]["decision_threshold"] == checkpoint.calibration["threshold"]
    int8 = model.info.metadata["report"]["variants"]["int8"]["parity"]
    assert int8["scores"]["top1_agreement"] >= 0.5 and 0.0 <= int8["scores"]["decision_agreement"] <= 1.0
    assert -1.0 <= int8["embedding"]["min_cosine"] <= 1.0
    assert json.loads((Path(model.path) / "norm_stats.json").read_text()) == checkpoint.norm_stats
    assert json.loads((Path(model.path) / "calibration.json").read_text()) == checkpoint.calibration
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
    batched = session.run(None, {"features": x})
    single = [np.concatenate(parts) for parts in zip(*(session.run(None, {"features": x[i : i + 1]}) for i in range(37)), strict=True)]
    assert [b.shape for b in batched] == [(37, 12), (37, 64)]
    for b, s in zip(batched, single, strict=True):
        np.testing.assert_allclose(b, s, atol=atol)


def test_onnx_outputs_calibrated_scores_and_the_embedding(birdcall_report, tiny_workspace):
    session = cpu_session(Path(bentoml.models.get(birdcall_report["tag"]).path) / "birdcall.fp32.onnx")
    assert [o.name for o in session.get_outputs()] == ["scores", "embedding"]
    checkpoint = load_checkpoint(tiny_workspace.checkpoint_dir("birdcall"))
    x = held_out_inputs(checkpoint, limit=3)
    scores, embedding = session.run(None, {"features": x})
    assert scores.shape == (len(x), len(checkpoint.labels)) and ((scores >= 0) & (scores <= 1)).all()
    # The temperature is inside the graph: scores are sigmoid(logits / T) of the trained network.
    net = load_weights(BirdCallNet(BirdCallArch(**checkpoint.config["arch"])), checkpoint)
    with torch.inference_mode():
        logits = net(torch.from_numpy(x)).numpy()
        expected = ServedBirdCall(net, checkpoint.calibration["temperature"])(torch.from_numpy(x))
    np.testing.assert_allclose(scores, 1 / (1 + np.exp(-logits / checkpoint.calibration["temperature"])), atol=1e-5)
    np.testing.assert_allclose(embedding, expected[1].numpy(), atol=1e-4)


def test_parity_gate_refuses_a_perturbed_model_and_registers_nothing(birdcall_report, tiny_workspace, monkeypatch):
    real_export = export.pipeline.export_onnx

    def export_perturbed(module, example, outputs, path):
        broken = copy.deepcopy(module)
        with torch.no_grad():
            broken.net.head.weight.add_(torch.randn_like(broken.net.head.weight))
        return real_export(broken, example, outputs, path)

    monkeypatch.setattr(export.pipeline, "export_onnx", export_perturbed)
    before = {str(m.tag) for m in bentoml.models.list("birdcall")}
    # A different tolerance set gives a different digest, so this is a fresh export, not a reuse.
    message = r"variant 'fp32': output 'scores' max \|difference\| = [0-9.]+ \(above the tolerance 0.001\); nothing was registered"
    with pytest.raises(ParityError, match=message) as info:
        export_birdcall(tiny_workspace, variants=("fp32",), tolerances=TINY_TOLERANCES)
    assert info.value.output == "scores" and info.value.value > info.value.tolerance
    assert {str(m.tag) for m in bentoml.models.list("birdcall")} == before


def test_frames_export_registers_the_denoiser(tiny_exports):
    report = tiny_exports["frames"]
    assert set(report["variants"]) == {"fp32", "fp16"}
    assert report["variants"]["fp32"]["parity"]["v"]["max_abs_diff"] <= 1e-3
    model = bentoml.models.get(report["tag"])
    session = cpu_session(Path(model.path) / "frames.fp32.onnx")
    assert [i.name for i in session.get_inputs()] == ["x_t", "t"]
    x = np.random.default_rng(0).standard_normal((5, 3, 16, 16)).astype(np.float32)
    t = np.array([0, 10, 500, 900, 999], np.float32)
    v = session.run(None, {"x_t": x, "t": t})[0]
    assert v.shape == x.shape and np.isfinite(v).all()
    config = json.loads((Path(model.path) / "config.json").read_text())
    assert len(config["alphas_cumprod"]) == 1000


def test_one_held_out_item_still_exports_a_graph_of_any_batch(birdcall_report, tiny_workspace, tmp_path):
    """From an example batch of one the exporter fixes the batch size at 1; a model that then takes
    batches of one only must not pass (it would fail at serving's first batch)."""
    checkpoint = load_checkpoint(tiny_workspace.checkpoint_dir("birdcall"))
    net = load_weights(BirdCallNet(BirdCallArch(**checkpoint.config["arch"])), checkpoint)
    job = export.pipeline.ExportJob(
        name="one-row-birdcall",  # not birdcall: the other tests' birdcall:latest stays theirs
        checkpoint=checkpoint,
        module=ServedBirdCall(net, checkpoint.calibration["temperature"]),
        inputs={"features": held_out_inputs(checkpoint, limit=1)[:1]},
        outputs={"scores": OutputKind.SCORES, "embedding": OutputKind.EMBEDDING},
        variants=("fp32",),
        tolerances={"fp32": Tolerance(max_abs_diff=1e-3)},
        digest="one-row-birdcall",
        bench_batch_sizes=(1, 8),
    )
    report = export.pipeline.run_export(job, tmp_path / "reports")
    session = cpu_session(Path(bentoml.models.get(report["tag"]).path) / "one-row-birdcall.fp32.onnx")
    x = np.zeros((5, *FrontEndConfig().feature_shape), np.float32)
    assert session.run(None, {"features": x})[0].shape[0] == 5
    label = bentoml.models.get(report["tag"]).info.labels["git_sha"]
    assert report["git_sha"] != "unknown" and label == report["git_sha"][:12] + ("-dirty" if report["git_sha"].endswith("-dirty") else "")

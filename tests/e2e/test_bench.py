"""`chorus bench` end to end on the tiny models, with short levels: every configuration runs without
errors and the report (markdown table, JSON, plots) says what it measured. Speed goals live in the
benchmark's own output, never here."""

from __future__ import annotations

import json

import onnxruntime as ort
import pytest

from benchmarks.run import providers_for, run_bench


def test_bench_runs_every_configuration_and_writes_its_report(tiny_exports, tiny_workspace, tmp_path, monkeypatch):
    monkeypatch.setenv("CHORUS_HOME", str(tiny_workspace.home))  # the baseline apps load these checkpoints
    result = run_bench(tmp_path, seconds=0.5, steps=5, levels=(1, 2), frames_levels=(1, 2), overhead_rounds=1)

    bird, frames = result["birdcall"], result["frames"]
    for rows in (bird["served_batching"], bird["served_no_batching"], bird["baseline_fastapi_torch"], frames["served"]):
        assert [r["concurrency"] for r in rows] == [1, 2]
        assert all(r["errors"] == 0 and r["throughput"] > 0 for r in rows), rows
    assert set(bird["ratios"]) == {
        "served_over_raw",
        "served_batching_gain",
        "engine_batching_gain",
        "chorus_over_baseline",
        "overhead_ms_at_c1_p50",
        "batching_gain_share",
    }
    overhead = bird["overhead_at_c1"]
    assert overhead["requests"] == 12  # one round over the 12 recordings
    assert 0 < overhead["engine_work_ms_p50"] < overhead["served_ms_p50"]
    assert overhead["http_floor_ms_p50"] > 0 and overhead["engine_hop_ms_p50"] > 0 and overhead["http_in_out_ms_p50"] > 0
    assert overhead["bentoml_hop_floor"]["batched_ms_p50"] > 0 and overhead["bentoml_hop_floor"]["plain_ms_p50"] > 0
    assert {"decode", "resample", "features", "inference", "total"} <= set(bird["stages_ms_at_best"])
    assert frames["ratios"]["served_over_eager"] > 0 and frames["torch_eager_sequential"]["images_per_s"] > 0

    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["meta"]["device"] == "cpu" and saved["meta"]["engine_provider"] == "CPUExecutionProvider"
    markdown = (tmp_path / "results.md").read_text()
    for name in (
        "chorus, batching on",
        "chorus, batching off",
        "FastAPI + torch eager",
        "chorus /generate",
        "served_over_eager",
        "HTTP floor",
        "hop floor",
    ):
        assert name in markdown
    for plot in ("birdcall_latency_throughput.png", "frames_latency_throughput.png"):
        assert (tmp_path / plot).stat().st_size > 10_000


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="this host can run the GPU bench")
def test_gpu_bench_refuses_to_fall_back_to_cpu():
    with pytest.raises(RuntimeError, match="onnxruntime-gpu"):
        providers_for("cuda")


def test_memory_bench_reports_bombs_held_bodies_and_a_soak(tiny_exports, tmp_path):
    from benchmarks.memory import run_memory
    from tests.conftest import isolated_bentoml_home

    home = isolated_bentoml_home(tmp_path / "bentoml")
    # Two bombs, not the bench's eight: each decoded in full costs ~5 s of CPU, and two at once
    # still share the API worker's decode threads.
    result = run_memory(tmp_path / "memory", soak_minutes=0.3, warmup_minutes=0.1, home=home, bombs_at_once=2, held_clients=8)

    refused, decoded = result["bombs"]["default limits"], result["bombs"]["decoded-sample limit lifted"]
    assert len(refused["statuses"]) == len(decoded["statuses"]) == 2
    assert set(refused["statuses"]) == {413}  # refused from the header
    assert set(decoded["statuses"]) <= {200, 503}  # decoded block by block (503: the engine queue was full)
    assert {"api", "engine"} == set(refused["peak_rss_mb"]) == set(decoded["peak_rss_mb"])
    # Eight bodies of 30.7 MB: four fit under 128 MiB, the others are refused before they are read.
    bounded, lifted = result["held_bodies"]["bound 128 MiB"], result["held_bodies"]["bound lifted"]
    assert (bounded["statuses"], lifted["statuses"]) == ({"200": 4, "503": 4}, {"200": 8})

    def growth(run: dict) -> int:
        return run["rss_all_waiting_mb"] - run["rss_before_mb"]

    assert growth(bounded) < growth(lifted)
    soak = result["soak"]
    assert soak["requests"] > 0 and set(soak["growth_after_warmup_percent"]) == {"api", "engine"}
    assert (tmp_path / "memory" / "soak_rss.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "memory" / "memory.json").read_text())["soak"]["minutes"] == 0.3


def test_gpu_parity_checks_every_variant_and_names_a_failure(tiny_exports, tiny_workspace, tmp_path, monkeypatch):
    """benchmarks/gpu/parity.py, with the CPU standing in for the GPU: the held-out inputs it carries,
    one row per model, variant and output, and a failed gate reported (exit 1) after every check ran."""
    from benchmarks.gpu import parity
    from export.parity import Tolerance

    monkeypatch.setenv("CHORUS_HOME", str(tiny_workspace.home))
    inputs = tmp_path / "parity.npz"
    parity.save_inputs(inputs)
    with pytest.raises(SystemExit, match="did not open on the CUDA provider"):  # no quiet CPU fallback
        parity.check_on_gpu(inputs)

    monkeypatch.setattr(parity, "CUDA", "CPUExecutionProvider")
    monkeypatch.setattr(
        parity, "GPU_TOLERANCES", {"birdcall": Tolerance(min_decision_agreement=0.0), "frames": Tolerance(max_abs_diff=0.0)}
    )
    out = tmp_path / "gpu_parity.json"
    assert parity.main(["check", str(inputs), str(out)]) == 1
    rows = json.loads(out.read_text())
    assert [(r["model"], r["variant"], r["output"]) for r in rows] == [
        *(("birdcall", v, o) for v in ("fp32", "int8", "fp16") for o in ("scores", "embedding")),
        ("frames", "fp32", "v"),
        ("frames", "fp16", "v"),
    ]
    failed = [r for r in rows if not r["passed"]]
    assert [(r["model"], r["variant"]) for r in failed] == [("frames", "fp16")]  # fp32 on the same device is exact
    assert "max |difference|" in failed[0]["failure"]

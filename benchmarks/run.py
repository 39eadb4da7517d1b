"""`chorus bench`: every configuration in one run on one machine; table, plot and ratios."""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path

from benchmarks import birdcall, frames
from benchmarks.hop_floor import hop_floor
from layout.workspace import Workspace
from service.settings import ServiceSettings
from service.store import StoredModel

LEVELS = (1, 2, 4, 8, 16)
FRAMES_LEVELS = (1, 4, 8, 16)


def providers_for(device: str) -> list[str]:
    """ONNX Runtime providers for a bench device; a GPU bench refuses to fall back to CPU quietly."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    import onnxruntime as ort
    import torch

    if "CUDAExecutionProvider" not in ort.get_available_providers() or not torch.cuda.is_available():
        raise RuntimeError(
            f"--device cuda needs onnxruntime-gpu and a CUDA torch (ORT providers: {ort.get_available_providers()}, "
            f"torch CUDA: {torch.cuda.is_available()})"
        )
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def served_settings(device: str, api_workers: int = 0) -> dict[str, str]:
    """The environment of the bench's servers: the engine on `device`; `api_workers` API processes
    (0: the server's own default). On a GPU host the API workers' decoding is what feeds the engine."""
    return {"CHORUS_PROVIDERS": device, **({"CHORUS_API_WORKERS": str(api_workers)} if api_workers else {})}


def _table(rows: list[tuple[str, list[dict]]], unit: str) -> str:
    lines = [f"| configuration | concurrency | {unit}/s | p50 ms | p99 ms | errors |", "|---|---|---|---|---|---|"]
    for name, results in rows:
        for r in results:
            lines.append(f"| {name} | {r['concurrency']} | {r['throughput']:.2f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['errors']} |")
    return "\n".join(lines)


def _plot(rows: list[tuple[str, list[dict]]], path: Path, title: str, unit: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=False)
    for name, results in rows:
        x = [r["throughput"] for r in results]
        for ax, key in zip(axes, ("p50_ms", "p99_ms"), strict=True):
            ax.plot(x, [r[key] for r in results], marker="o", label=name)
            for r in results:
                ax.annotate(str(r["concurrency"]), (r["throughput"], r[key]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    for ax, key in zip(axes, ("p50", "p99"), strict=True):
        ax.set_xlabel(f"throughput ({unit}/s)")
        ax.set_ylabel(f"{key} latency (ms)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{title} (labels: concurrency)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_bench(
    out_dir: Path,
    seconds: float = 8.0,
    steps: int = 20,
    device: str = "cpu",
    api_workers: int = 0,
    levels: tuple[int, ...] = LEVELS,
    frames_levels: tuple[int, ...] = FRAMES_LEVELS,
    overhead_rounds: int = 5,
) -> dict:
    """Every configuration on `device` (cpu or cuda: the engine, the raw engine and both torch
    baselines); `seconds` is the time per concurrency level and per in-process measurement."""
    out_dir.mkdir(parents=True, exist_ok=True)
    providers = providers_for(device)
    served_env = served_settings(device, api_workers)
    workspace = Workspace.from_env()
    bird_stored = StoredModel.resolve("birdcall:latest")
    frames_stored = StoredModel.resolve("frames:latest")
    pool = birdcall.bench_pool()

    engine = birdcall.RawEngine(bird_stored, providers)
    raw = birdcall.raw_engine(engine, pool, seconds)
    on, overhead = birdcall.served(pool, levels, seconds, overhead_rounds=overhead_rounds, **served_env)
    overhead["bentoml_hop_floor"] = hop_floor(calls=12 * overhead_rounds)
    on = [r.row() for r in on]
    off = [r.row() for r in birdcall.served(pool, levels, seconds, CHORUS_BIRDCALL_MAX_BATCH_SIZE="1", **served_env)[0]]
    base = [r.row() for r in birdcall.baseline(pool, levels, seconds, device)]
    best = lambda rows: max(rows, key=lambda r: r["throughput"])  # noqa: E731
    by_c = lambda rows, c: next(r for r in rows if r["concurrency"] == c)  # noqa: E731
    top = levels[-1]
    bird = {
        "raw_engine": raw,
        "served_batching": on,
        "served_no_batching": off,
        "baseline_fastapi_torch": base,
        "overhead_at_c1": overhead,
        "ratios": {
            "served_over_raw": round(best(on)["throughput"] / raw["recordings_per_s"], 3),
            "served_batching_gain": round(by_c(on, top)["throughput"] / by_c(off, top)["throughput"], 3),
            "engine_batching_gain": raw["network_batching_gain"],
            "chorus_over_baseline": round(best(on)["throughput"] / best(base)["throughput"], 3),
            "overhead_ms_at_c1_p50": overhead["overhead_ms_p50"],
        },
        "stages_ms_at_best": best(on)["stage_ms"],
    }
    bird["ratios"]["batching_gain_share"] = round(bird["ratios"]["served_batching_gain"] / bird["ratios"]["engine_batching_gain"], 3)

    frames_served = [r.row() for r in frames.served(steps, frames_levels, seconds, **served_env)]
    frames_rows = [("chorus /generate", frames_served)]
    unpadded = []
    if device == "cuda":  # the engine pads denoiser batches on a GPU (CHORUS_FRAMES_PAD_BATCHES auto): the same without
        unpadded = [r.row() for r in frames.served(steps, frames_levels, seconds, **served_env, CHORUS_FRAMES_PAD_BATCHES="off")]
        frames_rows.append(("chorus /generate, batches not padded", unpadded))
    frames_raw = frames.raw_engine(frames_stored, steps, providers, seconds)
    frames_eager = frames.torch_eager(workspace.checkpoint_dir("frames"), steps, device, seconds)
    frame = {
        "steps": steps,
        "raw_engine": frames_raw,
        "served": frames_served,
        **({"served_not_padded": unpadded} if unpadded else {}),
        "torch_eager_sequential": frames_eager,
        "ratios": {
            "served_over_eager": round(best(frames_served)["throughput"] / frames_eager["images_per_s"], 3),
            "served_over_raw_best": round(best(frames_served)["throughput"] / max(frames_raw.values()), 3),
        },
    }
    bird_rows = [("chorus, batching on", on), ("chorus, batching off", off), ("FastAPI + torch eager", base)]
    _plot(bird_rows, out_dir / "birdcall_latency_throughput.png", "birdcall: recordings of 10-60 s, WAV + MP3", "recordings")
    _plot(frames_rows, out_dir / "frames_latency_throughput.png", f"frames: {steps} DDIM steps", "images")
    meta = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or platform.system()}",
        "command": "uv run chorus bench"
        + (f" --device {device}" if device != "cpu" else "")
        + (f" --api-workers {api_workers}" if api_workers else ""),
        "device": device,
        "api_workers": api_workers or ServiceSettings().api_workers,
        "engine_provider": engine.runner.provider,
        "seconds_per_level": seconds,
    }
    markdown = "\n".join(
        [
            f"# chorus bench, {meta['date']} ({meta['machine']}; {meta['engine_provider']})",
            "",
            f"`{meta['command']}`; {seconds:g} s per concurrency level, closed loop, client on the same machine;"
            f" {meta['api_workers']} API worker(s).",
            "",
            f"## birdcall (recordings/s; raw engine {raw['recordings_per_s']} rec/s, {raw['windows_per_s']} windows/s,"
            f" p50 {raw['p50_ms']} ms)",
            "",
            _table(bird_rows, "recordings"),
            "",
            "| ratio | value |",
            "|---|---|",
            *[f"| {k} | {v} |" for k, v in bird["ratios"].items()],
            "",
            f"Network alone, windows/s by batch: {raw['network_windows_per_s']}",
            "",
            f"Per-request overhead at concurrency 1, {overhead['requests']} requests (the client's latency minus the"
            " engine's work on the request: decode, resample, features, ONNX Runtime; from its own timings_ms):",
            "",
            "| p50 | ms |",
            "|---|---|",
            f"| served latency; the engine's work in it | {overhead['served_ms_p50']}; {overhead['engine_work_ms_p50']} |",
            f"| **overhead** | {overhead['overhead_ms_p50']} |",
            f"| of which HTTP in and out (client latency minus the server's total) | {overhead['http_in_out_ms_p50']} |",
            f"| of which the API -> engine hop (round trip minus ONNX Runtime) | {overhead['engine_hop_ms_p50']} |",
            f"| of which the rest in the server (thread hand-offs, post-processing) | {overhead['rest_in_server_ms_p50']} |",
            f"| HTTP floor: a bare uvicorn + Starlette echo of the same body | {overhead['http_floor_ms_p50']} |",
            f"| overhead above that floor | {overhead['overhead_above_http_floor_ms_p50']} |",
            "| hop floor: BentoML's call of a trivial service with a 12-window array, batchable; plain |"
            f" {overhead['bentoml_hop_floor']['batched_ms_p50']}; {overhead['bentoml_hop_floor']['plain_ms_p50']} |",
            "",
            "Mean time per stage at the best served level (ms): " + ", ".join(f"{k} {v}" for k, v in bird["stages_ms_at_best"].items()),
            "",
            f"## frames ({steps} DDIM steps, images/s)",
            "",
            _table(frames_rows, "images"),
            "",
            f"raw engine (ORT + numpy DDIM in-process): {frames_raw}; torch eager sequential: {frames_eager}",
            "",
            "| ratio | value |",
            "|---|---|",
            *[f"| {k} | {v} |" for k, v in frame["ratios"].items()],
            "",
        ]
    )
    (out_dir / "results.md").write_text(markdown)
    result = {"meta": meta, "birdcall": bird, "frames": frame}
    (out_dir / "results.json").write_text(json.dumps(result, indent=2))
    print(markdown, flush=True)
    return result

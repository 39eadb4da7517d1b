"""birdcall: raw engine vs chorus served (batching on/off) vs the seed-style baseline."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.load import LevelResult, sweep
from chorus.local_server import ROOT, free_port, serve, wait_ready
from loadtests.recordings import recording_pool
from service.models import birdcall_frontend, make_session


def bench_pool(n: int = 12) -> list:
    """Recordings of realistic length (10-60 s), WAV and MP3 alternating, several rates."""
    return recording_pool(n, seed=11, min_seconds=10, max_seconds=60, formats=("wav", "mp3"))


def raw_engine(model_path: Path, pool: list, seconds: float = 10.0) -> dict:
    """The ceiling: shared front end + ORT in one process, each recording's windows in one batch."""
    frontend, _ = birdcall_frontend(model_path)
    session = make_session(model_path / "birdcall.fp32.onnx", ["CPUExecutionProvider"], 0)
    # The network alone at each batch size, on real features: the engine's own batching gain.
    _, wave = frontend.load(pool[0].data)
    feats = frontend.features(frontend.windows(wave)[0])
    network = {}
    for batch in (1, 8, 32, 64):
        x = np.resize(feats, (batch, *feats.shape[1:]))
        session.run(None, {"features": x})
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < 1.5:
            session.run(None, {"features": x})
            n += batch
        network[batch] = n / (time.perf_counter() - start)
    latencies, windows, done = [], 0, 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        rec = pool[done % len(pool)]
        t0 = time.perf_counter()
        _, wave = frontend.load(rec.data)
        x = frontend.features(frontend.windows(wave)[0])
        for i in range(0, len(x), 64):
            session.run(None, {"features": x[i : i + 64]})
        latencies.append((time.perf_counter() - t0) * 1e3)
        windows += len(x)
        done += 1
    elapsed = time.perf_counter() - start
    best = max(network, key=network.get)
    return {
        "recordings_per_s": round(done / elapsed, 2),
        "windows_per_s": round(windows / elapsed, 1),
        "p50_ms": round(float(np.median(latencies)), 1),
        "network_windows_per_s": {str(k): round(v, 1) for k, v in network.items()},
        "network_best_batch": best,
        "network_batching_gain": round(network[best] / network[1], 2),
    }


def _stage_times(response) -> dict[str, float]:
    return response.json()["timings_ms"]


def served(pool: list, levels: tuple[int, ...], seconds: float, **env: str) -> list[LevelResult]:
    requests = [("/classify?timeline=false", {"content": rec.data}) for rec in pool]
    with serve(**env) as url:
        return sweep(url, requests, levels, seconds, _stage_times)


@contextlib.contextmanager
def baseline_server():
    """The seed-style FastAPI + torch eager app in its own process."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "benchmarks.baseline_app:app", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT,
        env={**os.environ},
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, path="/docs")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def baseline(pool: list, levels: tuple[int, ...], seconds: float) -> list[LevelResult]:
    requests = [("/classify", {"content": rec.data}) for rec in pool]
    with baseline_server() as url:
        return sweep(url, requests, levels, seconds)

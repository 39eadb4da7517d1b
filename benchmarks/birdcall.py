"""birdcall: raw engine vs chorus served (batching on/off) vs the seed-style baseline."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from benchmarks.load import LevelResult, sweep
from chorus.local_server import ROOT, free_port, serve, wait_ready
from loadtests.recordings import recording_pool
from service.models import birdcall_frontend, open_runner


def bench_pool(n: int = 12) -> list:
    """Recordings of realistic length (10-60 s), WAV and MP3 alternating, several rates."""
    return recording_pool(n, seed=11, min_seconds=10, max_seconds=60, formats=("wav", "mp3"))


class RawEngine:
    """The ceiling: the shared front end + ORT (run as the engine runs it) in this process, no server."""

    def __init__(self, model_path: Path, providers: list[str]):
        self.frontend, _ = birdcall_frontend(model_path)
        self.runner = open_runner(model_path / "birdcall.fp32.onnx", providers)

    def classify(self, data: bytes) -> int:
        """Decode, resample, features, network, as /classify does; returns the window count."""
        _, wave = self.frontend.load(data)
        x = self.frontend.features(self.frontend.windows(wave)[0])
        for i in range(0, len(x), 64):
            self.runner.run({"features": x[i : i + 64]})
        return len(x)


def raw_engine(engine: RawEngine, pool: list, seconds: float = 10.0) -> dict:
    frontend, runner = engine.frontend, engine.runner
    # The network alone at each batch size, on real features: the engine's own batching gain.
    _, wave = frontend.load(pool[0].data)
    feats = frontend.features(frontend.windows(wave)[0])
    network = {}
    for batch in (1, 8, 32, 64):
        x = np.resize(feats, (batch, *feats.shape[1:]))
        runner.run({"features": x})
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < min(1.5, seconds):
            runner.run({"features": x})
            n += batch
        network[batch] = n / (time.perf_counter() - start)
    latencies, windows, done = [], 0, 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        windows += engine.classify(pool[done % len(pool)].data)
        latencies.append((time.perf_counter() - t0) * 1e3)
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


PAUSE_SECONDS = 0.05


def _queue_wait_totals(http: httpx.Client) -> tuple[float, float]:
    """(sum of seconds, count) of chorus_queue_wait_seconds for birdcall, from /metrics."""
    text = http.get("/metrics").text
    totals = []
    for part in ("sum", "count"):
        match = re.search(rf'^chorus_queue_wait_seconds_{part}\{{model="birdcall"\}} (\S+)$', text, re.M)
        totals.append(float(match.group(1)) if match else 0.0)
    return totals[0], totals[1]


def _paired_overhead(url: str, floor_url: str, engine: RawEngine, pool: list, rounds: int) -> dict:
    """Served minus in-process latency of the same recording, run back to back, and its parts.

    Pairing per recording, in a random order each time, keeps the mix of lengths and formats, the
    machine's drift and any order effect out of the difference: p50 of the pairs is the
    per-request cost of serving. A pause after each run lets the server's after-response work
    finish (it slowed the next in-process run by ~25 ms when measured back to back without one).
    Each recording also goes to a bare HTTP echo
    (benchmarks/echo_app.py): the floor no ASGI server goes below here. The engine hop is the
    mean of chorus_queue_wait_seconds over the pairs: the engine round trip minus ONNX Runtime time.
    """
    served_ms, raw_ms, floor_ms = [], [], []
    order = np.random.default_rng(0)
    with httpx.Client(base_url=url, timeout=60) as http, httpx.Client(base_url=floor_url, timeout=60) as floor:
        wait_before = _queue_wait_totals(http)
        for _ in range(rounds):
            for rec in pool:
                runs = [(None, raw_ms), (http, served_ms), (floor, floor_ms)]
                for i in order.permutation(len(runs)):  # no run always goes first or after another
                    client, times = runs[i]
                    start = time.perf_counter()
                    if client is None:
                        engine.classify(rec.data)
                    else:
                        client.post("/classify?timeline=false", content=rec.data).raise_for_status()
                    times.append((time.perf_counter() - start) * 1e3)
                    time.sleep(PAUSE_SECONDS)
        wait_after = _queue_wait_totals(http)
    diffs = np.subtract(served_ms, raw_ms)
    waits = wait_after[1] - wait_before[1]
    return {
        "pairs": len(diffs),
        "overhead_ms_p50": round(float(np.median(diffs)), 2),
        "served_ms_p50": round(float(np.median(served_ms)), 1),
        "raw_ms_p50": round(float(np.median(raw_ms)), 1),
        "http_floor_ms_p50": round(float(np.median(floor_ms)), 2),
        "overhead_above_http_floor_ms_p50": round(float(np.median(diffs - np.asarray(floor_ms))), 2),
        "engine_hop_ms_mean": round((wait_after[0] - wait_before[0]) / waits * 1e3, 2) if waits else None,
    }


def served(
    pool: list,
    levels: tuple[int, ...],
    seconds: float,
    overhead_of: RawEngine | None = None,
    overhead_rounds: int = 5,
    **env: str,
) -> tuple[list[LevelResult], dict | None]:
    """The sweep, and with overhead_of the paired per-request overhead at concurrency 1."""
    requests = [("/classify?timeline=false", {"content": rec.data}) for rec in pool]
    with serve(**env) as url:
        results = sweep(url, requests, levels, seconds, _stage_times)
        if overhead_of is None:
            return results, None
        with uvicorn_app("benchmarks.echo_app:app", "/readyz", "--http", "httptools", "--loop", "uvloop") as floor_url:
            return results, _paired_overhead(url, floor_url, overhead_of, pool, overhead_rounds)


@contextlib.contextmanager
def uvicorn_app(app: str, ready_path: str, *options: str, **env: str):
    """An ASGI app (module:attribute) under uvicorn in its own process; yields its URL once ready."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", *options],
        cwd=ROOT,
        env={**os.environ, **env},
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, path=ready_path)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def baseline(pool: list, levels: tuple[int, ...], seconds: float, device: str = "cpu") -> list[LevelResult]:
    """The seed-style FastAPI + torch eager app in its own process, its model on `device`."""
    requests = [("/classify", {"content": rec.data}) for rec in pool]
    with uvicorn_app("benchmarks.baseline_app:app", "/docs", CHORUS_BASELINE_DEVICE=device) as url:
        return sweep(url, requests, levels, seconds)

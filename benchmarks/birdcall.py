"""birdcall: raw engine vs chorus served (batching on/off) vs the seed-style baseline."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time

import httpx
import numpy as np

from benchmarks.load import LevelResult, check_served_device, sweep
from loadtests.recordings import recording_pool
from service.engine.runtime import open_runner
from service.local_server import ROOT, free_port, serve, wait_ready
from service.models.birdcall import stored_frontend
from service.settings import ServiceSettings
from service.store import StoredModel


def bench_pool(n: int = 12) -> list:
    """Recordings of realistic length (10-60 s), WAV and MP3 alternating, several rates."""
    return recording_pool(n, seed=11, min_seconds=10, max_seconds=60, formats=("wav", "mp3"))


class RawEngine:
    """The ceiling: the shared front end + ORT (run as the engine runs it) in this process, no server."""

    def __init__(self, stored: StoredModel, providers: list[str]):
        self.frontend = stored_frontend(stored)
        engine = ServiceSettings()  # run ORT exactly as the engine does
        self.runner = open_runner(stored.onnx_path("fp32"), providers, engine.ort_threads, engine.ort_lanes, engine.ort_max_run_items)

    def classify(self, data: bytes) -> int:
        """Decode, resample, features, network, as /classify does; returns the window count."""
        x = self.frontend.analyze(data).windows.features
        for i in range(0, len(x), 64):
            self.runner.run({"features": x[i : i + 64]})
        return len(x)


def raw_engine(engine: RawEngine, pool: list, seconds: float = 10.0) -> dict:
    frontend, runner = engine.frontend, engine.runner
    # The network alone at each batch size, on real features: the engine's own batching gain.
    feats = frontend.analyze(pool[0].data).windows.features
    network = {}
    for batch in (1, 8, 32, 64):
        x = np.resize(feats, (batch, *feats.shape[1:]))
        runner.run({"features": x})
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < min(1.5, seconds):
            runner.run({"features": x})
            n += batch
        network[batch] = n / (time.perf_counter() - start)
    engine.classify(pool[0].data)  # untimed: the first decode and front end pay their set-up
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
ENGINE_WORK = ("decode", "resample", "features", "model")


def _p50(values) -> float:
    return round(float(np.median(values)), 2)


def _overhead_at_c1(url: str, floor_url: str, pool: list, rounds: int) -> dict:
    """Per-request overhead at concurrency 1, and where it goes.

    Overhead of a request = its latency at the client minus the engine's work on it (decode,
    resample, features and ONNX Runtime time, from the request's own timings_ms), so no second
    run of the same recording, with its own noise, enters the difference. Each recording also goes
    to a bare HTTP echo (benchmarks/echo_app.py) in a random order with the served request: the
    floor no ASGI server goes below here. A pause after each request lets the server's
    after-response work finish before the next one.
    """
    parts: dict[str, list[float]] = {k: [] for k in ("served", "work", "http", "hop", "in_server", "floor")}
    order = np.random.default_rng(0)
    with httpx.Client(base_url=url, timeout=60) as http, httpx.Client(base_url=floor_url, timeout=60) as floor:
        for _ in range(rounds):
            for rec in pool:
                for client in (http, floor)[:: order.choice([1, -1])]:
                    start = time.perf_counter()
                    response = client.post("/classify?timeline=false", content=rec.data).raise_for_status()
                    elapsed = (time.perf_counter() - start) * 1e3
                    time.sleep(PAUSE_SECONDS)
                    if client is floor:
                        parts["floor"].append(elapsed)
                        continue
                    t = _stage_times(response)
                    parts["served"].append(elapsed)
                    parts["work"].append(sum(t[k] for k in ENGINE_WORK))
                    parts["http"].append(elapsed - t["total"])
                    parts["hop"].append(t["inference"] - t["model"])
                    parts["in_server"].append(t["total"] - sum(t[k] for k in ("decode", "resample", "features", "inference")))
    p = {k: np.asarray(v) for k, v in parts.items()}
    overhead = p["served"] - p["work"]
    return {
        "requests": len(overhead),
        "overhead_ms_p50": _p50(overhead),
        "served_ms_p50": _p50(p["served"]),
        "engine_work_ms_p50": _p50(p["work"]),
        "http_in_out_ms_p50": _p50(p["http"]),
        "engine_hop_ms_p50": _p50(p["hop"]),
        "rest_in_server_ms_p50": _p50(p["in_server"]),
        "http_floor_ms_p50": _p50(p["floor"]),
        "overhead_above_http_floor_ms_p50": _p50(overhead - p["floor"]),
    }


def served(
    pool: list,
    levels: tuple[int, ...],
    seconds: float,
    overhead_rounds: int = 0,
    **env: str,
) -> tuple[list[LevelResult], dict | None]:
    """The sweep, then with overhead_rounds > 0 the per-request overhead at concurrency 1."""
    requests = [("/classify?timeline=false", {"content": rec.data}) for rec in pool]
    with serve(**env) as url:
        check_served_device(url, *requests[0], env.get("CHORUS_PROVIDERS"))
        results = sweep(url, requests, levels, seconds, _stage_times)
        if not overhead_rounds:
            return results, None
        with uvicorn_app("benchmarks.echo_app:app", "/readyz", "--http", "httptools", "--loop", "uvloop") as floor_url:
            return results, _overhead_at_c1(url, floor_url, pool, overhead_rounds)


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

"""A closed-loop HTTP load generator: `concurrency` clients, each sending its next request when the last returns."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import numpy as np

PROVIDER_OF = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def require_provider(answer: dict, device: str | None) -> None:
    """Refuse a served answer whose model ran elsewhere than `device` (cpu or cuda; anything else:
    no check): an engine that cannot open CUDA serves on the CPU with only a warning in its log."""
    provider = answer["model"]["provider"]
    if device in PROVIDER_OF and provider != PROVIDER_OF[device]:
        raise RuntimeError(
            f"the served model runs on {provider}, not on {device}: the engine could not open its provider (see the server's log)"
        )


def check_served_device(url: str, path: str, request: dict, device: str | None) -> None:
    """One request to the server before it is measured, held to `device` (require_provider)."""
    require_provider(httpx.post(url + path, timeout=120, **request).raise_for_status().json(), device)


@dataclass
class LevelResult:
    concurrency: int
    completed: int
    errors: int
    seconds: float
    latencies_ms: list[float] = field(repr=False)
    stage_ms: dict[str, float]
    """Mean server-reported time per stage (chorus responses only)."""

    @property
    def throughput(self) -> float:
        return self.completed / self.seconds

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    def row(self) -> dict:
        return {
            "concurrency": self.concurrency,
            "throughput": round(self.throughput, 2),
            "p50_ms": round(self.percentile(50), 1),
            "p99_ms": round(self.percentile(99), 1),
            "errors": self.errors,
            "stage_ms": {k: round(v, 2) for k, v in self.stage_ms.items()},
        }


# (path, request kwargs) for one call; chosen round-robin from a pool.
RequestSpec = tuple[str, dict]


async def _run_level(url: str, requests: list[RequestSpec], concurrency: int, seconds: float, timings: Callable | None) -> LevelResult:
    order = itertools.cycle(range(len(requests)))
    latencies: list[float] = []
    stages: dict[str, list[float]] = {}
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal errors
        async with httpx.AsyncClient(base_url=url, timeout=300) as http:
            while time.perf_counter() < deadline:
                path, kwargs = requests[next(order)]
                start = time.perf_counter()
                response = await http.post(path, **kwargs)
                elapsed = (time.perf_counter() - start) * 1e3
                if response.status_code != 200:
                    errors += 1
                    continue
                latencies.append(elapsed)
                if timings is not None:
                    for stage, ms in timings(response).items():
                        stages.setdefault(stage, []).append(ms)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return LevelResult(concurrency, len(latencies), errors, elapsed, latencies, {k: float(np.mean(v)) for k, v in stages.items()})


def sweep(
    url: str, requests: list[RequestSpec], levels: tuple[int, ...], seconds: float, timings: Callable | None = None
) -> list[LevelResult]:
    """One warm-up pass, then each concurrency level for `seconds` (bounded, loopback only)."""
    asyncio.run(_run_level(url, requests, 1, min(2.0, seconds), None))
    return [asyncio.run(_run_level(url, requests, c, seconds, timings)) for c in levels]

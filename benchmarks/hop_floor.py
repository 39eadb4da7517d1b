"""The floor under chorus' API -> engine hop: BentoML's own service-to-service call, no model.

`Caller` sends `Echo` the same [n, 1, 64, 321] float32 array chorus sends its engine and gets an
answer as wide as the default model's back (ANSWER_COLUMNS), through a batchable method (as the
engine's birdcall_windows) and a plain one,
with the engine's settings (no access log or tracing on the callee, long-lived connections). What
chorus' hop costs above this is its own.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

import bentoml
import httpx
import numpy as np
from bentoml.validators import ContentType

from features import FrontEndConfig
from service.local_server import serve

Answer = Annotated[np.ndarray, ContentType("application/json")]
ANSWER_COLUMNS = 15 + 64 + 1
"""The default model's engine rows: 15 species' scores, the 64-wide embedding, the batch's seconds (TimedRows)."""


@bentoml.service(
    workers=1,
    logging={"access": {"enabled": False}},
    tracing={"excluded_urls": ["."]},
    runner_connection={"max_requests": 2**62, "max_age": 10.0**12},
)
class Echo:
    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=64, max_latency_ms=1000)
    def batched(self, windows: np.ndarray) -> Answer:
        return np.zeros((len(windows), ANSWER_COLUMNS), np.float32)

    @bentoml.api
    async def plain(self, windows: np.ndarray) -> Answer:
        return np.zeros((len(windows), ANSWER_COLUMNS), np.float32)


@bentoml.service(workers=1)
class Caller:
    echo = bentoml.depends(Echo)

    @bentoml.api
    async def round_trips(self, windows: int, calls: int, method: str) -> list[float]:
        """Seconds per call, one call at a time with a pause between, as at concurrency 1."""
        x = np.zeros((windows, *FrontEndConfig().feature_shape), np.float32)
        call = getattr(self.echo.to_async, method)
        seconds = []
        for _ in range(calls):
            start = time.perf_counter()
            await call(x)
            seconds.append(time.perf_counter() - start)
            await asyncio.sleep(0.05)
        return seconds


def hop_floor(windows: int = 12, calls: int = 60) -> dict:
    """p50 ms of BentoML's round trip for `windows` windows, batchable and plain (first 10 calls dropped)."""
    result = {"windows": windows}
    with serve("benchmarks.hop_floor:Caller") as url, httpx.Client(base_url=url, timeout=120) as http:
        for method in ("batched", "plain"):
            response = http.post("/round_trips", json={"windows": windows, "calls": calls, "method": method})
            seconds = response.raise_for_status().json()[min(10, calls - 1) :]
            result[f"{method}_ms_p50"] = round(float(np.median(seconds)) * 1e3, 2)
    return result

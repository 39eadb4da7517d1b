"""`chorus loadtest`: Locust headless against a running server, CSV + HTML reports, SLO verdict."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


@dataclass(frozen=True)
class SLO:
    p99_ms: float = 2000.0
    """Aggregated 99th percentile response time, in ms."""
    max_error_ratio: float = 0.0
    """Share of requests allowed to fail (unexpected status), 0 = none."""


def run_locust(host: str, users: int, spawn_rate: float, seconds: int, out_dir: Path) -> Path:
    """Run Locust headless for a bounded time; returns the CSV prefix."""
    # Never import the locustfile here: locust's gevent monkey-patching belongs in its own process.
    from loadtests.recordings import POOL_SEED, cached_pool, pool_dir, pool_size

    out_dir.mkdir(parents=True, exist_ok=True)
    cached_pool(pool_dir(), pool_size(), POOL_SEED)  # synthesize before the clock starts
    prefix = out_dir / "locust"
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        host,
        "--users",
        str(users),
        "--spawn-rate",
        str(spawn_rate),
        "--run-time",
        f"{seconds}s",
        "--csv",
        str(prefix),
        "--html",
        str(out_dir / "locust.html"),
        "--only-summary",
        "--stop-timeout",
        "30",
    ]
    # Locust exits 1 when any request failed; the SLO verdict below is what decides.
    subprocess.run(command, check=False, env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=Path(__file__).resolve().parent.parent)
    return prefix


def _number(text: str) -> float:
    """Locust writes N/A for percentiles of routes that saw no request."""
    try:
        return float(text)
    except ValueError:
        return 0.0


def read_summary(prefix: Path) -> dict:
    with open(f"{prefix}_stats.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    per_route = {
        row["Name"]: {
            "requests": int(row["Request Count"]),
            "failures": int(row["Failure Count"]),
            "p50_ms": _number(row["50%"]),
            "p99_ms": _number(row["99%"]),
            "rps": round(float(row["Requests/s"]), 2),
        }
        for row in rows
    }
    total = per_route.pop("Aggregated")
    return {"total": total, "routes": per_route}


def verdict(summary: dict, slo: SLO) -> dict:
    total = summary["total"]
    error_ratio = total["failures"] / max(total["requests"], 1)
    broken = []
    if total["requests"] == 0:
        broken.append("no request completed")
    if total["p99_ms"] > slo.p99_ms:
        broken.append(f"p99 {total['p99_ms']:.0f} ms > {slo.p99_ms:.0f} ms")
    if error_ratio > slo.max_error_ratio:
        broken.append(f"error ratio {error_ratio:.4f} > {slo.max_error_ratio}")
    return {"slo": asdict(slo), "error_ratio": round(error_ratio, 5), "slo_held": not broken, "broken": broken}

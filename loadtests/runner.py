"""`chorus loadtest`: Locust headless against a running server, CSV + HTML reports, SLO verdict."""

from __future__ import annotations

import csv
import json
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
        "--json-file",  # written at shutdown, unlike the CSVs, which lag up to a second behind the run
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


def percentile(response_times: dict[float, int], fraction: float) -> float:
    """Locust's percentile of a response-time histogram ({rounded ms: count}): the time at which the
    requests slower than it are no more than (1 - fraction) of all; 0 without requests."""
    total = sum(response_times.values())
    allowed_faster = int(total * fraction)
    slower = 0
    for milliseconds in sorted(response_times, reverse=True):
        slower += response_times[milliseconds]
        if total - slower <= allowed_faster:
            return milliseconds
    return 0.0


def _route(entries: list[dict]) -> dict:
    times: dict[float, int] = {}
    for entry in entries:
        for milliseconds, count in entry["response_times"].items():
            times[float(milliseconds)] = times.get(float(milliseconds), 0) + count
    requests = sum(entry["num_requests"] for entry in entries)
    start = min(entry["start_time"] for entry in entries)
    last = max(entry["last_request_timestamp"] or start for entry in entries)
    return {
        "requests": requests,
        "failures": sum(entry["num_failures"] for entry in entries),
        "p50_ms": percentile(times, 0.5),
        "p99_ms": percentile(times, 0.99),
        "rps": round(requests / (last - start), 2) if last > start else 0.0,
    }


def read_summary(prefix: Path) -> dict:
    """Per route and in total, from the stats Locust saved at its end (`<prefix>.json`), and how many
    exceptions the load test's own tasks raised (their traffic never ran)."""
    entries = json.loads(Path(f"{prefix}.json").read_text())
    by_name: dict[str, list[dict]] = {}
    for entry in entries:
        by_name.setdefault(entry["name"], []).append(entry)
    empty = {"requests": 0, "failures": 0, "p50_ms": 0.0, "p99_ms": 0.0, "rps": 0.0}
    exceptions = Path(f"{prefix}_exceptions.csv")
    with exceptions.open(newline="") if exceptions.exists() else open(os.devnull) as f:
        raised = sum(int(row["Count"]) for row in csv.DictReader(f))
    routes = {name: _route(group) for name, group in by_name.items()}
    return {"total": _route(entries) if entries else empty, "routes": routes, "exceptions": raised}


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
    if summary.get("exceptions"):
        broken.append(f"{summary['exceptions']} exception(s) in the load test's own tasks (locust_exceptions.csv): their traffic never ran")
    return {"slo": asdict(slo), "error_ratio": round(error_ratio, 5), "slo_held": not broken, "broken": broken}

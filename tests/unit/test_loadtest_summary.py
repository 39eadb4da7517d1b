"""The load test's summary comes from the stats Locust saves at its end, with its exceptions."""

from __future__ import annotations

import io
import json

import soundfile as sf

from loadtests.recordings import FORMATS, RATES, recording_pool
from loadtests.runner import SLO, percentile, read_summary, verdict


def entry(name: str, times: dict[int, int], failures: int = 0) -> dict:
    return {
        "name": name,
        "method": "POST",
        "num_requests": sum(times.values()),
        "num_failures": failures,
        "response_times": {str(ms): n for ms, n in times.items()},  # JSON keys are strings
        "start_time": 100.0,
        "last_request_timestamp": 110.0,
    }


def test_percentiles_are_locusts():
    times = {10.0: 90, 200.0: 9, 3000.0: 1}
    # 90 at 10 ms: no more than 10% are slower than 200 ms, so that is the 90th percentile (as Locust reports it).
    assert percentile(times, 0.5) == 10.0 and percentile(times, 0.9) == 200.0 and percentile(times, 0.95) == 200.0
    assert percentile(times, 0.99) == 3000.0 and percentile(times, 1.0) == 3000.0
    assert percentile({}, 0.99) == 0.0


def test_the_summary_counts_every_request_and_the_tasks_exceptions(tmp_path):
    prefix = tmp_path / "locust"
    (tmp_path / "locust.json").write_text(json.dumps([entry("/classify", {20: 95, 900: 5}, failures=1), entry("/generate", {4000: 2})]))
    (tmp_path / "locust_exceptions.csv").write_text('Count,Message,Traceback,Nodes\n13,"ValueError(...)","...",local\n')
    summary = read_summary(prefix)
    assert summary["total"] == {"requests": 102, "failures": 1, "p50_ms": 20.0, "p99_ms": 4000.0, "rps": 10.2}
    assert summary["routes"]["/classify"]["p99_ms"] == 900.0 and summary["exceptions"] == 13
    result = verdict(summary, SLO(p99_ms=10_000, max_error_ratio=0.05))
    assert not result["slo_held"] and result["broken"] == [
        "13 exception(s) in the load test's own tasks (locust_exceptions.csv): their traffic never ran"
    ]


def test_the_traffic_pool_holds_every_format_at_every_rate():
    pool = recording_pool(len(FORMATS) * len(RATES), min_seconds=0.3, max_seconds=0.4)
    pairs = {(rec.mime, sf.info(io.BytesIO(rec.data)).samplerate) for rec in pool}
    assert len(pairs) == len(FORMATS) * len(RATES), sorted(pairs)

"""`chorus loadtest`: a short bounded Locust run against the test server, SLO verdict and reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from loadtests.runner import SLO, verdict


def test_loadtest_holds_a_slo_against_the_server(server_url, tmp_path):
    env = {**os.environ, "CHORUS_LOAD_POOL": "4", "CHORUS_LOAD_POOL_DIR": str(tmp_path / "pool")}
    command = [
        sys.executable,
        "-m",
        "chorus.cli",
        "loadtest",
        "--host",
        server_url,
        "--users",
        "4",
        "--spawn-rate",
        "4",
        "--duration",
        "8",
        "--p99-ms",
        "10000",
        "--out",
        str(tmp_path / "report"),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0, result
    assert result["slo_held"] and result["total"]["requests"] > 10 and result["total"]["failures"] == 0
    bad_input = result["routes"]["bad input (expects 4xx)"]
    assert bad_input["requests"] >= 4 and bad_input["failures"] == 0  # every user starts with one
    assert (tmp_path / "report" / "locust.html").exists() and (tmp_path / "report" / "locust_stats.csv").exists()


def test_verdict_names_what_broke():
    summary = {"total": {"requests": 100, "failures": 2, "p99_ms": 3000.0}}
    result = verdict(summary, SLO(p99_ms=2000, max_error_ratio=0.01))
    assert not result["slo_held"]
    assert result["broken"] == ["p99 3000 ms > 2000 ms", "error ratio 0.0200 > 0.01"]
    assert verdict({"total": {"requests": 0, "failures": 0, "p99_ms": 0.0}}, SLO())["broken"] == ["no request completed"]

"""A real Prometheus scraping the service and loading chorus' rules."""

from __future__ import annotations

import contextlib
import subprocess
import time

import httpx

from tests.conftest import free_port
from tests.integration.test_monitoring import MONITORING, PROMETHEUS, need_prometheus


@need_prometheus
def test_real_prometheus_scrapes_chorus(server_url, tmp_path):
    target = server_url.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{MONITORING / 'alerts.yml'}']\n"
        f"scrape_configs:\n  - job_name: chorus\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    port = free_port()
    process = subprocess.Popen(
        [
            PROMETHEUS or "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        api = f"http://127.0.0.1:{port}/api/v1/query"
        deadline = time.monotonic() + 90
        result = []
        while time.monotonic() < deadline and not result:
            with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
                result = httpx.get(api, params={"query": 'chorus_model_info{name="birdcall"}'}, timeout=5).json()["data"]["result"]
            if not result:
                time.sleep(0.5)
        assert result, "Prometheus never saw chorus_model_info"
        assert result[0]["metric"]["job"] == "chorus" and result[0]["value"][1] == "1"
        rules = httpx.get(f"http://127.0.0.1:{port}/api/v1/rules", timeout=5).json()["data"]["groups"]
        assert {g["name"] for g in rules} == {"chorus-recording", "chorus-alerts"}
    finally:
        process.terminate()
        process.wait(timeout=30)

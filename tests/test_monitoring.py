"""Prometheus config and alert rules (promtool), a real Prometheus scraping the service, the dashboard."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time

import httpx
import pytest

from tests.conftest import ROOT, free_port

MONITORING = ROOT / "monitoring"
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
need_prometheus = pytest.mark.skipif(
    PROMTOOL is None and not os.environ.get("CI"),
    reason="promtool/prometheus not installed (apt-get install prometheus); .ci/run installs them",
)


@need_prometheus
@pytest.mark.parametrize(
    "args",
    [
        ["check", "rules", "alerts.yml"],
        ["check", "config", "prometheus.yml"],
        ["test", "rules", "tests/alerts_test.yml"],
    ],
    ids=["check-rules", "check-config", "test-rules"],
)
def test_promtool(args):
    result = subprocess.run([PROMTOOL or "promtool", *args], cwd=MONITORING, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@need_prometheus
@pytest.mark.integration
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
        [PROMETHEUS or "prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        api = f"http://127.0.0.1:{port}/api/v1/query"
        deadline = time.monotonic() + 90
        result = []
        while time.monotonic() < deadline and not result:
            try:
                result = httpx.get(api, params={"query": 'chorus_model_info{name="birdcall"}'}, timeout=5).json()["data"]["result"]
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            if not result:
                time.sleep(0.5)
        assert result, "Prometheus never saw chorus_model_info"
        assert result[0]["metric"]["job"] == "chorus" and result[0]["value"][1] == "1"
        rules = httpx.get(f"http://127.0.0.1:{port}/api/v1/rules", timeout=5).json()["data"]["groups"]
        assert {g["name"] for g in rules} == {"chorus-recording", "chorus-alerts"}
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_dashboard_queries_only_metrics_that_exist():
    dashboard = json.loads((MONITORING / "grafana" / "dashboards" / "chorus.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 8
    known = (ROOT / "service" / "metrics.py").read_text() + "bentoml_service_request_total bentoml_service_adaptive_batch_size"
    recorded = [line.split(":", 1)[1].strip() for line in (MONITORING / "alerts.yml").read_text().splitlines() if "- record:" in line]
    known += " " + " ".join(recorded)
    for expr in exprs:
        words = re.split(r"[\s(){}\[\],/*]+", expr)
        names = [w for w in words if w.startswith(("chorus_", "chorus:", "bentoml_"))]
        assert names, expr
        for name in names:
            base = name.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum")
            assert base in known, f"{name} in {expr!r} is not a chorus or BentoML metric"
    provisioning = (MONITORING / "grafana" / "provisioning").rglob("*.yml")
    assert len(list(provisioning)) == 2

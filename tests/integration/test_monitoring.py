"""Prometheus config and alert rules (promtool) and the dashboard."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from tests.conftest import ROOT

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

"""A server whose stored model was changed after export never becomes ready, and says why."""

from __future__ import annotations

import httpx
import pytest

from layout import artifacts
from service.local_server import serve_process, wait_ready
from tests.conftest import isolated_bentoml_home


def test_a_tampered_model_keeps_the_server_not_ready_with_the_reason(tiny_exports, tmp_path):
    home = isolated_bentoml_home(tmp_path / "bentoml")
    name, version = tiny_exports["birdcall"]["tag"].split(":")
    stored = tmp_path / "bentoml" / "models" / name / version
    onnx_path = stored / artifacts.onnx_file("birdcall", "fp32")
    data = bytearray(onnx_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx_path.write_bytes(bytes(data))
    log = tmp_path / "server.log"
    with serve_process("service.service:Chorus", log, ready=False, BENTOML_HOME=home) as served:
        url = served.url
        # /readyz says no wait will help, so waiting for readiness stops at once with the reason.
        with pytest.raises(RuntimeError, match=r"will not become ready: .*birdcall\.fp32\.onnx does not match its exported sha256"):
            wait_ready(url, timeout=120)
        answer = httpx.get(f"{url}/readyz", timeout=5)
        assert answer.status_code == 503 and answer.json()["permanent"] is True
        assert httpx.get(f"{url}/livez", timeout=5).status_code == 200
    assert "does not match its exported sha256" in log.read_text()

"""A server whose stored model was changed after export never becomes ready, and says why."""

from __future__ import annotations

import time

import httpx

from layout import artifacts
from service.local_server import serve_process
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
        deadline, answer = time.monotonic() + 120, None
        while time.monotonic() < deadline:
            try:
                answer = httpx.get(f"{url}/readyz", timeout=5)
            except httpx.HTTPError:
                answer = None
            if answer is not None and "failed to load" in answer.text:
                break
            time.sleep(0.5)
        assert answer is not None and answer.status_code == 503, answer and answer.text
        assert "birdcall.fp32.onnx does not match its exported sha256" in answer.json()["reason"]
        assert httpx.get(f"{url}/livez", timeout=5).status_code == 200
    assert "does not match its exported sha256" in log.read_text()

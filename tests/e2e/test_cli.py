"""`chorus serve` is the server itself: stopping the process it started as stops the server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from service.local_server import free_port, wait_ready
from tests.conftest import isolated_bentoml_home


def _refused(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/livez", timeout=2)
        except httpx.ConnectError:
            return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


def test_terminating_chorus_serve_stops_the_server(tiny_exports, tmp_path):
    port, grpc_port = free_port(), free_port()
    env = {**os.environ, "BENTOML_HOME": isolated_bentoml_home(tmp_path / "bentoml")}
    chorus = Path(sys.executable).with_name("chorus")
    command = [str(chorus), "serve", "--host", "127.0.0.1", "--port", str(port), "--grpc-port", str(grpc_port)]
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        # Its own session, so that a server that does not stop is killed whole below.
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        process.terminate()  # SIGTERM to the pid the user started
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            tree = subprocess.run(
                ["ps", "-o", "pid,ppid,stat,etime,args", "--sid", str(process.pid)], capture_output=True, text=True
            ).stdout
            pytest.fail(f"chorus serve still running 60 s after SIGTERM\n{tree}\n{log_path.read_text(errors='replace')[-4000:]}")
        assert _refused(url, timeout=30), "the server outlived the chorus process"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)

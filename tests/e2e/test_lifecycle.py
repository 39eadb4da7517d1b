"""The server's life around requests: slow clients, a dying engine, shutdown, and where gRPC listens.

One server in its own process serves this module, as `bentoml serve` runs in a container; the
shutdown test stops it, so it comes last.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import httpx
import numpy as np
import psutil
import pytest

from service.local_server import serve_process, wait_ready
from tests.conftest import encode, isolated_bentoml_home, scrape, server_grpc_port, value

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def served(tiny_exports, tmp_path_factory):
    home = isolated_bentoml_home(tmp_path_factory.mktemp("lifecycle") / "bentoml")
    log = tmp_path_factory.mktemp("lifecycle-log") / "server.log"
    not_a_folder = tmp_path_factory.mktemp("lifecycle-jobs") / "a-file"
    not_a_folder.write_text("")
    env = {
        "BENTOML_HOME": home,
        "CHORUS_HEADER_TIMEOUT_SECONDS": "1",
        "CHORUS_READ_TIMEOUT_SECONDS": "1",
        "CHORUS_DRAIN_SECONDS": "60",
        "CHORUS_JOBS_HOME": str(not_a_folder / "jobs"),  # a jobs folder that cannot be made, as on a read-only file system
    }
    with serve_process("service.service:Chorus", log, **env) as server:
        yield server


def listening_addresses(port: int) -> set[str]:
    """Addresses with a socket listening on `port`, read from the kernel's tables (no traffic sent).
    IPv4-mapped IPv6 addresses (gRPC binds 127.0.0.1 so) are given as IPv4."""
    found = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        with open(table) as lines:
            for line in list(lines)[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.split(":")
                if state != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                    continue
                raw = bytes.fromhex(address)  # 32-bit words in host (little-endian) order
                packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                text = socket.inet_ntop(family, packed)
                found.add(text.removeprefix("::ffff:"))
    return found


def test_grpc_listens_where_http_does(server_url):
    assert listening_addresses(server_grpc_port(server_url)) == {"127.0.0.1"}


def test_a_server_whose_jobs_folder_cannot_be_made_serves_and_says_jobs_are_off(served, chirp):
    assert httpx.get(f"{served.url}/readyz", timeout=30).status_code == 200
    assert httpx.post(f"{served.url}/classify", content=encode(chirp, 16_000, "WAV", "PCM_16"), timeout=30).status_code == 200
    listed = httpx.get(f"{served.url}/jobs", timeout=30)
    submitted = httpx.post(f"{served.url}/analyze/submit", json={"path": "."}, timeout=30)
    for response in (listed, submitted):
        assert response.status_code == 503 and "set CHORUS_JOBS_HOME to a writable folder" in response.json()["error"]["message"]
    assert "analysis jobs are off" in served.log.read_text()


def test_a_request_head_that_does_not_come_is_cut_off(served):
    host, port = served.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as slow:
        slow.sendall(b"POST /classify HTTP/1.1\r\nHost: chorus\r\n")  # and never the rest
        started = time.monotonic()
        answer = slow.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 5
        assert slow.recv(4096) == b""  # closed


def test_a_body_that_stops_coming_is_a_408(served):
    host, port = served.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as slow:
        slow.sendall(b"POST /classify HTTP/1.1\r\nHost: chorus\r\nContent-Length: 100000\r\n\r\nRIFF")
        answer = b""
        while b"arrived" not in answer and (chunk := slow.recv(4096)):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408") and b"no part of the request body arrived" in answer


def engine_process(server) -> psutil.Process:
    for child in psutil.Process(server.process.pid).children(recursive=True):
        if "chorus-engine" in " ".join(child.cmdline()):
            return child
    raise AssertionError("no engine process")


def test_an_engine_crash_is_logged_counted_and_recovered(served, chirp):
    """The engine killed (as by the OOM killer) while a request waits on it: that request is a
    retryable 503, never a 500, and the engine comes back."""
    result: dict = {}

    def call() -> None:
        result["response"] = httpx.post(f"{served.url}/generate", json={"steps": 250, "count": 4}, timeout=120)

    thread = threading.Thread(target=call)
    thread.start()
    with httpx.Client(base_url=served.url) as c:  # kill only once the engine holds the request's images
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and value(scrape(c), "chorus_engine_pending_items", model="frames") < 1:
            time.sleep(0.05)
    engine_process(served).kill()
    thread.join(timeout=120)
    assert result["response"].status_code == 503, result["response"].text
    assert result["response"].json()["error"]["type"] == "engine_unavailable" and result["response"].headers["retry-after"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and "started again" not in served.log.read_text():
        time.sleep(0.2)
    wait_ready(served.url)
    with httpx.Client(base_url=served.url, timeout=60) as client:
        assert client.post("/classify", content=encode(chirp, 44_100, "WAV", "PCM_16")).status_code == 200
        assert value(scrape(client), "chorus_engine_starts_total") == 2
    assert "the engine process started again (1 before it" in served.log.read_text()


def test_sigterm_drains_in_flight_requests_and_refuses_new_ones_with_503(served):
    result: dict = {}

    def long_generate() -> None:
        result["response"] = httpx.post(f"{served.url}/generate", json={"steps": 250, "count": 16}, timeout=120)

    thread = threading.Thread(target=long_generate)
    thread.start()
    with httpx.Client(base_url=served.url, timeout=30) as client:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and value(scrape(client), "chorus_in_flight_requests") < 1:
            time.sleep(0.05)
        os.kill(served.process.pid, signal.SIGTERM)
        refused = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and refused is None:
            response = client.post("/generate", json={"steps": 5})
            if response.status_code == 503:
                refused = response
            time.sleep(0.05)
    assert refused is not None and refused.json()["error"]["type"] == "shutting_down", refused and refused.text
    assert refused.headers["retry-after"] == "1" and refused.headers["connection"] == "close"
    thread.join(timeout=120)
    assert result["response"].status_code == 200, result["response"].text  # finished: the engine waited for it
    assert served.process.wait(timeout=120) is not None
    assert "API worker: drained in" in served.log.read_text()


def test_the_workers_stop_when_the_server_process_is_killed(tiny_exports, tmp_path):
    """BentoML starts each worker in a session of its own: a `kill -9` of `bentoml serve` (or the
    OOM killer choosing it) left them serving on, holding the port, the models and any job's lock.
    With jobs queued, the API worker waited for ever on the ones waiting for the engine, which had
    stopped with it."""
    env = {
        "BENTOML_HOME": isolated_bentoml_home(tmp_path / "bentoml"),
        "CHORUS_DRAIN_SECONDS": "5",
        "CHORUS_JOBS_HOME": str(tmp_path / "jobs"),
    }
    recording = encode((0.1 * np.random.default_rng(4).standard_normal(16_000 * 300)).astype(np.float32), 16_000, "WAV", "PCM_16")
    with serve_process("service.service:Chorus", tmp_path / "server.log", **env) as server:
        workers = psutil.Process(server.process.pid).children(recursive=True)
        assert len(workers) >= 2  # the API worker and the engine
        for _ in range(3):  # one running, two queued behind it
            upload = httpx.post(f"{server.url}/jobs/uploads", params={"name": "a.wav"}, content=recording, timeout=60)
            submitted = httpx.post(f"{server.url}/analyze/submit", json={"upload_id": upload.json()["upload_id"]}, timeout=60)
            assert submitted.status_code == 200, submitted.text
        server.process.kill()
        server.process.wait(timeout=30)
        _, alive = psutil.wait_procs(workers, timeout=60)
        assert not alive, f"workers still running after their server was killed: {alive}"
        port = int(server.url.rsplit(":", 1)[1])
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))  # free again: the next start can listen on it

"""Analysis jobs through BentoML's task API on the real server: a job killed with its server resumes
from its journal when the server starts again, and its tables equal those of a job never stopped."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from service.local_server import ServedProcess, serve_process
from tests.conftest import encode, isolated_bentoml_home

pytestmark = pytest.mark.timeout(900)
FILES, SECONDS = 12, 120  # long enough that the job cannot finish between the check and the kill


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("field")
    rng = np.random.default_rng(5)
    for i in range(FILES):
        audio = (0.05 * rng.standard_normal(16_000 * SECONDS)).astype(np.float32)
        (folder / f"20240517_{i:02d}0000.wav").write_bytes(encode(audio, 16_000, "WAV", "PCM_16"))
    return folder


@pytest.fixture(scope="module")
def server_env(tiny_exports, recordings, tmp_path_factory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("jobs-server")
    return {
        "BENTOML_HOME": isolated_bentoml_home(home / "bentoml"),
        "CHORUS_HOME": str(home / "chorus"),
        "CHORUS_ANALYZE_ROOT": str(recordings),
        "CHORUS_JOB_WINDOWS_PER_BATCH": "1",  # slow the job down enough to stop it half way
    }


def submit(server: ServedProcess) -> str:
    response = httpx.post(f"{server.url}/analyze/submit", json={"path": ".", "formats": ["csv", "raven", "raven-combined"]}, timeout=30)
    assert response.status_code == 200, response.text
    task_id = response.json()["task_id"]
    # Asked at once, before BentoML starts the task: the job is there already (it was a 404).
    at_once = httpx.get(f"{server.url}/analyze/status", params={"task_id": task_id}, timeout=30)
    assert at_once.status_code == 200 and at_once.json()["state"] in ("queued", "running"), at_once.text
    return task_id


def status(server: ServedProcess, task_id: str) -> dict:
    return httpx.get(f"{server.url}/analyze/status", params={"task_id": task_id}, timeout=30).json()


def wait_for(server: ServedProcess, task_id: str, done: callable, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = status(server, task_id)
        if done(state):
            return state
        time.sleep(0.1)
    raise AssertionError(f"job {task_id} never got there: {state}")


def tables(server: ServedProcess, task_id: str) -> dict[str, bytes]:
    view = httpx.get(f"{server.url}/jobs/{task_id}", timeout=30).json()
    return {name: httpx.get(f"{server.url}{link}", timeout=30).content for name, link in view["outputs"].items()}


def kill_9(server: ServedProcess) -> None:
    """The whole server at once, as a power cut would: the supervisor and every worker."""
    tree = [server.process.pid, *(child.pid for child in psutil.Process(server.process.pid).children(recursive=True))]
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):  # a job's decode workers die with their API worker
            os.kill(pid, signal.SIGKILL)
    server.process.wait(timeout=30)


def test_a_job_killed_with_its_server_resumes_and_gives_the_same_tables(server_env, tmp_path):
    with serve_process("service.service:Chorus", tmp_path / "first.log", **server_env) as first:
        reference_id = submit(first)
        reference_state = wait_for(first, reference_id, lambda s: s["state"] == "done")
        reference = tables(first, reference_id)
        interrupted = submit(first)
        wait_for(first, interrupted, lambda s: s["progress"]["files_done"] >= 3)
        kill_9(first)
    assert reference_state["summary"]["files_ok"] == FILES and "combined.selections.txt" in reference
    with serve_process("service.service:Chorus", tmp_path / "second.log", **server_env) as second:
        assert status(second, interrupted)["state"] in ("queued", "running")  # known after the restart
        final = wait_for(second, interrupted, lambda s: s["state"] == "done")
        assert final["summary"]["files_skipped"] >= 3  # resumed from its journal
        assert final["progress"]["files_done"] == final["progress"]["files_total"] == FILES
        assert tables(second, interrupted) == reference
        cancelled = submit(second)
        wait_for(second, cancelled, lambda s: s["state"] == "running")
        assert httpx.post(f"{second.url}/analyze/cancel", params={"task_id": cancelled}, timeout=30).status_code == 200
        assert wait_for(second, cancelled, lambda s: s["state"] == "cancelled")["status"] == "canceled"
        # top_k null means no limit (a missing top_k means 3), past the gate and BentoML's own parsing too.
        unlimited = httpx.post(f"{second.url}/analyze/submit", json={"path": ".", "formats": ["csv"], "top_k": None}, timeout=30)
        assert unlimited.status_code == 200, unlimited.text
        task_id = unlimited.json()["task_id"]
        wait_for(second, task_id, lambda s: "state" in s)  # BentoML runs the task body, which files the job, soon after
        job = Path(server_env["CHORUS_HOME"]) / "jobs" / task_id / "job.json"
        assert json.loads(job.read_text())["top_k"] is None
        httpx.post(f"{second.url}/analyze/cancel", params={"task_id": task_id}, timeout=30)
        wait_for(second, task_id, lambda s: s["state"] == "cancelled")
        # A finished job is deleted with its tables; BentoML's task routes then know it no more.
        assert httpx.delete(f"{second.url}/jobs/{reference_id}", timeout=30).status_code == 204
        assert httpx.get(f"{second.url}/analyze/status", params={"task_id": reference_id}, timeout=30).status_code == 404
        assert not (Path(server_env["CHORUS_HOME"]) / "jobs" / reference_id).exists()
        # Stopped (SIGTERM) with a job running, the server exits, leaving the job for the next start.
        stopped = submit(second)
        wait_for(second, stopped, lambda s: s["progress"]["files_done"] >= 1)
        second.process.send_signal(signal.SIGTERM)
        second.process.wait(timeout=60)  # it never exited: the job's engine call outlived the engine
    state = json.loads((Path(server_env["CHORUS_HOME"]) / "jobs" / stopped / "state.json").read_text())
    assert state["status"] == "running" and 1 <= state["files_done"] < FILES

"""Analysis jobs over the data plane: uploads streamed within their limit, submissions checked before
BentoML queues them (paths held inside the analyze root), durable state, a job run end to end on the
fake engine, cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import multiprocessing
import os
import shutil
import threading
import time
import urllib.parse
import uuid
from dataclasses import asdict, replace
from pathlib import Path

import httpx
import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse

from analyze.run import Progress, Start
from service import adapters
from service.adapters import jobs as jobs_adapter
from service.adapters.jobs import JobGate
from service.dataplane import Readiness
from service.jobs import runner, submit
from service.jobs import store as store_module
from service.jobs.runner import JobRunner
from service.jobs.store import PLACE_SECONDS, JobRequest, JobsFolderError, JobState, JobStore, TooManyJobs, open_job_store
from tests.api.conftest import LABELS
from tests.conftest import encode

pytestmark = pytest.mark.anyio


@pytest.fixture
def root(tmp_path) -> Path:
    """An analyze root with a recording, a folder, and links that lead out of it."""
    base = tmp_path / "recordings"
    (base / "site1").mkdir(parents=True)
    (base / "site1" / "20240517_053000.WAV").write_bytes(encode(np.zeros(16_000, np.float32), 16_000, "WAV", "PCM_16"))
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "other.wav").write_bytes(b"RIFF")
    os.symlink(outside, base / "escape")
    (base / "site2").mkdir()
    os.symlink(outside / "other.wav", base / "site2" / "linked.wav")
    return base


class FakeBentoTasks:
    """Stands in for BentoML's task routes: answers a submission with a new task id, then (as
    BentoML does, once its answer has gone) starts the task, which notes whether its job exists."""

    def __init__(self, store):
        self.store = store
        self.bodies: list[dict] = []
        self.job_there_when_the_task_started: dict[str, bool] = {}

    async def __call__(self, scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(json.loads(body))
        task_id = uuid.uuid4().hex
        await JSONResponse({"task_id": task_id, "status": "in_progress"})(scope, receive, send)
        self.job_there_when_the_task_started[task_id] = self.store.exists(task_id)


@pytest.fixture
def bentoml_tasks(store) -> FakeBentoTasks:
    return FakeBentoTasks(store)


@pytest.fixture
async def gate(plane, store, root, bentoml_tasks) -> httpx.AsyncClient:
    """JobGate in front of a stand-in for BentoML's task routes."""
    app = Starlette()
    app.state.plane, app.state.jobs = plane, store
    plane.settings.analyze_root = str(root)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=JobGate(bentoml_tasks, app.state)), base_url="http://chorus.test"
    ) as client:
        yield client


async def test_without_a_usable_jobs_folder_the_job_routes_say_so_and_nothing_else_changes(plane, tmp_path, wav):
    """A container's read-only file system: the server must still serve inference (found: the API
    worker failed to start, taking /classify down with it)."""
    (tmp_path / "a-file").write_text("")
    with pytest.raises(JobsFolderError, match="set CHORUS_JOBS_HOME to a writable folder"):
        open_job_store(tmp_path / "a-file" / "jobs")
    app = adapters.http_app()
    app.state.plane, app.state.jobs, app.state.jobs_off = plane, None, "its jobs folder /x cannot be used (Read-only file system)"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=JobGate(app, app.state)), base_url="http://chorus.test") as client:
        for method, path in (("GET", "/jobs"), ("POST", "/jobs/uploads"), ("POST", "/analyze/submit"), ("GET", "/analyze/status")):
            response = await client.request(method, path, json={"path": "x"} if path.endswith("submit") else None)
            error = response.json()["error"]
            assert response.status_code == 503 and error["type"] == "jobs_unavailable", (path, response.text)
            assert "analysis jobs are off on this server: its jobs folder /x cannot be used" in error["message"]
        assert (await client.post("/classify", content=wav)).status_code == 200


async def test_an_upload_is_streamed_to_disk_under_its_own_name(http, store, wav):
    response = await http.post("/jobs/uploads", params={"name": "../../20240517_053000.WAV"}, content=wav)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["name"] == "20240517_053000.WAV" and body["bytes"] == len(wav)
    assert (store.upload_path(body["upload_id"]) / "20240517_053000.WAV").read_bytes() == wav


async def test_an_upload_keeps_a_site_name_in_any_script(http, store, wav):
    response = await http.post("/jobs/uploads", params={"name": "Côte d'Ivoire/Forêt_Tanoé 20240517_053000.WAV"}, content=wav)
    assert response.status_code == 201, response.text
    name = response.json()["name"]
    assert name == "Forêt_Tanoé_20240517_053000.WAV"
    assert (store.upload_path(response.json()["upload_id"]) / name).read_bytes() == wav


async def test_an_upload_that_trickles_is_ended_and_leaves_nothing(http, plane, store, wav):
    """Uploads have no overall timeout (a large one takes as long as the link needs); a byte now and
    then, each inside the read timeout, would otherwise hold a pending upload's place for ever."""
    plane.settings.read_timeout_seconds = 0.2
    plane.settings.min_job_upload_bytes_per_second = 1000

    async def trickle():
        for _ in range(40):
            yield b"\0" * 10
            await asyncio.sleep(0.02)

    response = await http.post("/jobs/uploads", params={"name": "a.wav"}, content=trickle())
    assert response.status_code == 408 and "bytes/s on average, under the 1000 accepted" in response.json()["error"]["message"]
    assert list((store.home / "uploads").iterdir()) == []
    assert (await http.post("/jobs/uploads", params={"name": "a.wav"}, content=wav)).status_code == 201


async def test_an_upload_over_the_limit_is_refused_while_it_streams_and_leaves_nothing(http, plane, store):
    plane.settings.max_job_upload_bytes = 100_000
    sent = 0

    async def body():
        nonlocal sent
        for _ in range(200):
            sent += 65_536
            yield b"\0" * 65_536

    response = await http.post("/jobs/uploads", content=body())
    assert response.status_code == 413 and "100000" in response.json()["error"]["message"]
    assert sent < 1_000_000
    assert list((store.home / "uploads").iterdir()) == []


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"path": "../secret"}, 403, "outside the analyze root"),
        ({"path": "/etc"}, 403, "absolute"),
        ({"path": "escape"}, 403, "outside the analyze root"),
        ({"path": "escape/other.wav"}, 403, "outside the analyze root"),
        ({"path": "site2"}, 403, "links to outside"),
        ({"path": "nowhere"}, 404, "no file or folder"),
        ({"upload_id": "0123456789abcdef"}, 404, "no upload"),
        ({"upload_id": {"id": "0123"}}, 422, "upload_id must be the string"),
        ({"path": "site1", "upload_id": "x"}, 422, "exactly one"),
        ({"path": "site1", "formats": ["excel"]}, 422, "formats: unknown output format(s) excel; choose from raven"),
        ({"path": "site1", "formats": []}, 422, "formats: choose at least one output format"),
        ({"path": "site1", "species": ["dodo"]}, 422, "dodo"),
        ({"path": "site1", "min_confidence": 2}, 422, "min_confidence"),
        ({"path": "site1", "channels": "left"}, 422, "channels"),
        ({"path": "site1", "channels": "each", "formats": ["birdnet-csv"]}, 422, "no channel column"),
        ({"path": "site1", "shell": "rm -rf"}, 422, "unknown field"),
    ],
)
async def test_submissions_are_checked_before_bentoml_queues_them(gate, body, status, words):
    response = await gate.post("/analyze/submit", json=body)
    assert response.status_code == status and words in response.json()["error"]["message"], response.text


async def test_a_path_with_nothing_to_analyze_is_said_without_the_servers_folders(gate, root):
    (root / "empty").mkdir()
    response = await gate.post("/analyze/submit", json={"path": "empty"})
    message = response.json()["error"]["message"]
    assert response.status_code == 422 and "empty" in message and str(root) not in message, message


async def test_a_submission_is_posted(gate):
    response = await gate.get("/analyze/submit", params={"path": "site1"})
    assert response.status_code == 405 and response.headers["allow"] == "POST" and "POST the submission" in response.text


@pytest.mark.parametrize(
    "body",
    [
        b'{"path": "site1/\\ud800.wav"}',  # a lone surrogate: valid JSON, no file name
        b'{"path": "' + b"a" * 300 + b'"}',  # one name past the file system's 255 bytes
        b'{"path": "' + b"a/" * 3000 + b'x"}',  # past PATH_MAX
    ],
    ids=["lone-surrogate", "name-too-long", "path-too-long"],
)
async def test_a_path_the_file_system_cannot_hold_is_a_422(gate, bentoml_tasks, body):
    response = await gate.post("/analyze/submit", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422 and "no path this server's file system can hold" in response.text, response.text
    assert bentoml_tasks.bodies == []


@pytest.mark.parametrize("path", ["circle", "circle/x.wav", "circle/inner"])
async def test_a_loop_of_links_is_a_clear_4xx_not_a_500(gate, bentoml_tasks, root, path):
    (root / "circle").mkdir()
    (root / "circle" / "x.wav").symlink_to("x.wav")  # resolve() raises RuntimeError on it
    (root / "circle" / "inner").mkdir()
    (root / "circle" / "inner" / "y.wav").symlink_to("y.wav")
    response = await gate.post("/analyze/submit", json={"path": path})
    assert response.status_code in (403, 422) and "round a loop" in response.json()["error"]["message"], response.text
    assert bentoml_tasks.bodies == []


async def test_an_error_that_echoes_a_lone_surrogate_is_still_a_json_4xx(gate, bentoml_tasks):
    body = b'{"path": "site1", "formats": ["\\ud800"]}'  # valid JSON; the string it holds has no UTF-8
    response = await gate.post("/analyze/submit", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422 and "unknown output format" in response.json()["error"]["message"], response.text
    assert response.content.isascii() and bentoml_tasks.bodies == []


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [("GET", "/analyze/cancel", "PUT, POST"), ("DELETE", "/analyze/status", "GET, HEAD"), ("POST", "/analyze/get", "GET, HEAD")],
)
async def test_the_task_routes_take_their_methods_only(gate, store, method, path, allow):
    """A GET (a link prefetch, a crawler) must not cancel a job."""
    store.create("job1", JobRequest(sources=["x"], formats=["csv"]))
    response = await gate.request(method, path, params={"task_id": "job1"})
    assert response.status_code == 405 and response.headers["allow"] == allow, response.text
    assert store.state("job1").status == "queued" and not store.cancel_asked("job1")


@pytest.mark.parametrize(("method", "path"), [("GET", "/analyze/status"), ("GET", "/analyze/get"), ("PUT", "/analyze/cancel")])
async def test_a_task_route_without_a_task_id_says_it_needs_one(gate, method, path):
    response = await gate.request(method, path)
    assert response.status_code == 400 and "needs ?task_id=" in response.json()["error"]["message"], response.text


def test_jobs_are_listed_and_resumed_oldest_first(store, root):
    for job_id in ("zz_first", "aa_second", "mm_third"):
        store.create(job_id, JobRequest(sources=[str(root / "site1")], formats=["csv"]))
    os.utime(store.home / "zz_first" / "job.json", ns=(1, 1))  # filesystem times may tie within a test
    os.utime(store.home / "aa_second" / "job.json", ns=(2, 2))
    os.utime(store.home / "mm_third" / "job.json", ns=(3, 3))
    assert store.jobs() == ["zz_first", "aa_second", "mm_third"]


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded", "text/plain"])
async def test_a_submission_that_is_not_sent_as_json_is_refused_before_bentoml_reads_it_as_a_form(gate, content_type):
    headers = {} if content_type is None else {"content-type": content_type}
    response = await gate.post("/analyze/submit", content=json.dumps({"path": "site1"}), headers=headers)
    assert response.status_code == 415 and "Content-Type: application/json" in response.json()["error"]["message"]


async def test_a_large_folders_check_does_not_hold_up_other_requests(gate, monkeypatch):
    entered, release = threading.Event(), threading.Event()
    listing = submit.expand_sources

    def slow_listing(*args, **kwargs):  # a folder of 200,000 recordings
        entered.set()
        assert release.wait(10), "the other request was not answered while the folder was listed"
        return listing(*args, **kwargs)

    monkeypatch.setattr(submit, "expand_sources", slow_listing)
    pending = asyncio.create_task(gate.post("/analyze/submit", json={"path": "site1"}))
    assert await asyncio.to_thread(entered.wait, 10)  # the submission is being checked now
    other = await gate.get("/analyze/status", params={"task_id": "nothing"})
    assert other.status_code == 404
    release.set()
    assert (await pending).status_code == 200


async def test_a_good_submission_reaches_bentoml_unchanged(gate, bentoml_tasks):
    body = {"path": "site1", "formats": ["csv", "raven"], "species": [LABELS[0]], "merge": True}
    response = await gate.post("/analyze/submit", json=body)
    assert response.status_code == 200 and response.json()["status"] == "in_progress"
    assert bentoml_tasks.bodies == [body]


async def test_the_job_exists_before_its_task_id_is_answered_and_before_its_task_starts(plane, store, root, bentoml_tasks, wav):
    """BentoML starts a task after its answer has gone: a client that asked for the status at once
    got 404 for a job that then ran (the web page showed it as an error; found in a test run)."""
    app = Starlette()
    app.state.plane, app.state.jobs = plane, store
    plane.settings.analyze_root = str(root)
    upload_id, upload = store.new_upload()
    (upload / "20240517_053000.wav").write_bytes(wav)
    seen: list[tuple[int, bool]] = []

    async def client_side(message):  # what the client receives, and whether the job is there by then
        if message["type"] == "http.response.body":
            seen.append((len(message["body"]), store.exists(json.loads(message["body"])["task_id"])))

    submission = json.dumps({"upload_id": upload_id}).encode()
    messages = iter([{"type": "http.request", "body": submission, "more_body": False}])
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/analyze/submit",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(submission)).encode())],
        "query_string": b"",
    }
    await JobGate(bentoml_tasks, app.state)(scope, lambda: asyncio.sleep(0, next(messages)), client_side)
    assert len(seen) == 1 and seen[0][1], "the client learnt the task id before its job existed"
    [(task_id, there)] = bentoml_tasks.job_there_when_the_task_started.items()
    assert there
    assert store.state(task_id).status == "queued" and store.request(task_id).sources[0].startswith(str(store.folder(task_id)))
    assert not upload.exists()  # the job owns its recording from the submission on


async def test_a_job_that_cannot_be_made_is_an_error_and_its_task_never_starts(gate, store, bentoml_tasks, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "create", full_disk)
    response = await gate.post("/analyze/submit", json={"path": "site1"})
    assert response.status_code >= 500 and "error" in response.json()
    assert bentoml_tasks.job_there_when_the_task_started == {}


async def test_the_task_routes_need_the_token_and_answer_from_disk(gate, plane, store):
    plane.settings.api_token = "s3cret"
    assert (await gate.post("/analyze/submit", json={"path": "site1"})).status_code == 401
    auth = {"Authorization": "Bearer s3cret"}
    assert (await gate.get("/analyze/status", params={"task_id": "nope"}, headers=auth)).status_code == 404
    store.create("job1", JobRequest(sources=["x"], formats=["csv"]))
    status = (await gate.get("/analyze/status", params={"task_id": "job1"}, headers=auth)).json()
    assert status["status"] == "in_progress" and status["state"] == "queued"
    assert (await gate.get("/analyze/get", params={"task_id": "job1"}, headers=auth)).status_code == 400
    cancelled = await gate.post("/analyze/cancel", params={"task_id": "job1"}, headers=auth)
    assert cancelled.status_code == 200 and store.cancel_asked("job1")
    assert cancelled.json()["state"] == "cancelled" == store.state("job1").status  # queued: cancelled at once
    assert (await gate.post("/analyze", json={"path": "site1"}, headers=auth)).status_code == 400


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/jobs"),
        ("POST", "/jobs/uploads"),
        ("DELETE", "/jobs/uploads/{upload_id}"),
        ("GET", "/jobs/job1"),
        ("DELETE", "/jobs/job1"),
        ("POST", "/jobs/job1/cancel"),
        ("GET", "/jobs/job1/outputs/detections.csv"),
        ("POST", "/analyze/submit"),
        ("GET", "/analyze/status?task_id=job1"),
        ("GET", "/analyze/get?task_id=job1"),
        ("PUT", "/analyze/cancel?task_id=job1"),
        ("POST", "/analyze/cancel?task_id=job1"),
    ],
)
async def test_every_job_route_needs_the_token_and_without_it_changes_and_shows_nothing(
    http, gate, plane, store, bentoml_tasks, wav, method, path
):
    plane.settings.api_token = "s3cret"
    store.create("job1", JobRequest(sources=["x"], formats=["csv"]))
    store.save_state("job1", JobState(status="done"))
    (store.folder("job1") / "out" / "detections.csv").write_text("the job's detections")
    upload_id, upload = store.new_upload()
    (upload / "a.wav").write_bytes(wav)
    path = path.format(upload_id=upload_id)
    client = gate if path.startswith("/analyze") else http  # the task routes are the gate's, in front of BentoML's
    body = {"json": {"path": "site1"}} if path == "/analyze/submit" else {"content": wav} if path == "/jobs/uploads" else {}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}, {"Authorization": "Basic czNjcmV0"}):
        response = await client.request(method, path, headers=headers, **body)
        assert response.status_code == 401, (headers, response.text)
        error = response.json()["error"]
        assert error["type"] == "unauthorized" and "API token" in error["message"], (headers, error)
    assert store.state("job1").status == "done" and not store.cancel_asked("job1")
    assert [p.name for p in (store.home / "uploads").iterdir()] == [upload_id] and (upload / "a.wav").is_file()
    assert bentoml_tasks.bodies == []
    # The token is all that was missing: with it the same request is answered.
    answered = await client.request(method, path, headers={"Authorization": "Bearer s3cret"}, **body)
    assert answered.status_code < 300, answered.text


@pytest.mark.parametrize(
    "name",
    [
        "lock",
        "job.json",
        "state.json",
        ".chorus-analyze%2Fjournal.ndjson",  # in out/, but the journal's, not a table
        "..%2Flock",
        "..%2Fjob.json",
        "%2E%2E%2Fstate.json",
        "raven%2F..%2F..%2Fstate.json",
        "raven%2F..%2F..%2F..%2Fuploads",
        "{folder}%2Fjob.json",  # an absolute path: Path / "/x" is "/x"
    ],
)
async def test_only_a_jobs_tables_are_served_never_its_other_files_or_a_path_out_of_them(http, store, name):
    store.create("t1", JobRequest(sources=["x"], formats=["csv", "raven"]))
    store.save_state("t1", JobState(status="done"))
    out = store.folder("t1") / "out"
    (out / "raven").mkdir()
    (out / "raven" / "site1.selections.txt").write_text("a raven table")
    (out / ".chorus-analyze").mkdir()
    (out / ".chorus-analyze" / "journal.ndjson").write_text("{}")
    (store.folder("t1") / "lock").touch()  # as a run leaves it
    served = await http.get("/jobs/t1/outputs/raven%2Fsite1.selections.txt")
    assert served.status_code == 200 and served.text == "a raven table"  # a table in a folder is served
    name = name.format(folder=urllib.parse.quote(str(store.folder("t1")), safe=""))
    response = await http.get(f"/jobs/t1/outputs/{name}")
    assert response.status_code == 404, response.text
    error = response.json()["error"]
    # The name reached the route whole, decoded, its `..` and all: refused by the list of tables, not by the router.
    assert error["type"] == "not_found" and f"has no output {urllib.parse.unquote(name)!r}" in error["message"], error


async def test_a_job_runs_through_the_engine_and_leaves_its_tables(plane, store, engine, root):
    recording = root / "site1" / "20240517_053000.WAV"
    recording.write_bytes(encode((0.1 * np.random.default_rng(0).standard_normal(16_000 * 12)).astype(np.float32), 16_000, "WAV", "PCM_16"))
    plane.settings.analyze_root = str(root)
    store.create("job2", JobRequest(sources=[str(root / "site1")], formats=["csv", "raven"], min_confidence=0.0))
    state = await JobRunner(store, plane).run("job2")
    assert state.status == "done", state.error
    assert state.summary["files_ok"] == 1 and state.audio_seconds_done == state.audio_seconds_total == 12.0
    assert {"detections.csv", "errors.csv"} <= set(store.outputs("job2"))
    assert all(method == "birdcall_job_windows" for method, _ in engine.calls)
    assert "2024-05-17T05:30:00" in store.output("job2", "detections.csv").read_text()  # the clock time from the name
    store.save_state("job2", JobState())  # as if a restart had cut it short after its file
    saved: list[JobState] = []
    save_state = store.save_state
    store.save_state = lambda job_id, state: (saved.append(replace(state)), save_state(job_id, state))[1]
    resumed = await JobRunner(store, plane).run("job2")
    assert resumed.summary["files_skipped"] == 1 and resumed.files_done == resumed.files_total == 1
    # Its progress started from the journal, before the run's end said so.
    assert any(s.status == "running" and (s.files_done, s.audio_seconds_done) == (1, 12.0) for s in saved), saved


@pytest.mark.parametrize(
    "limit, container",
    [("max_job_audio_seconds", "WAV"), ("max_job_audio_samples", "FLAC")],
)
async def test_a_recording_past_the_jobs_decoded_limits_fails_alone_and_says_what_is_accepted(plane, store, root, limit, container):
    """Bytes do not bound decoding (a FLAC of silence holds days in megabytes): a job's recordings are
    held to a decoded length, and one past it is a failed file, not hours of a core."""
    plane.settings.analyze_root = str(root)
    setattr(plane.settings, limit, 8.0 if limit == "max_job_audio_seconds" else 8 * 16_000)
    suffix = container.lower()
    (root / "site1" / f"20240517_063000.{suffix}").write_bytes(encode(np.zeros(16_000 * 12, np.float32), 16_000, container, "PCM_16"))
    store.create("job9", JobRequest(sources=[str(root / "site1")], formats=["csv"], min_confidence=0.0))
    state = await JobRunner(store, plane).run("job9")
    assert state.status == "done", state.error
    assert state.summary["files_ok"] == 1 and state.summary["files_failed"] == 1
    if limit == "max_job_audio_seconds":  # the progress total counts what a run may decode: 1 s + at most 8 s
        assert state.audio_seconds_total == 9.0
    errors = store.output("job9", "errors.csv").read_text()
    assert "20240517_063000" in errors and ("at most 8 s is accepted" in errors or "at most 128,000 are accepted" in errors), errors


@pytest.mark.timeout(60)  # a FIFO opened for its header would wait for a writer for ever
async def test_links_out_of_the_root_made_after_submission_fail_the_job_and_a_fifo_fails_only_itself(plane, store, root):
    plane.settings.analyze_root = str(root)
    os.mkfifo(root / "site1" / "20240517_063000.wav")
    store.create("job4", JobRequest(sources=[str(root / "site1")], formats=["csv"], min_confidence=0.0))
    state = await JobRunner(store, plane).run("job4")
    assert state.status == "done", state.error
    assert state.summary["files_ok"] == 1 and state.summary["files_failed"] == 1
    assert "not a regular file" in store.output("job4", "errors.csv").read_text()
    os.symlink(root.parent / "secret", root / "site1" / "late")
    store.create("job5", JobRequest(sources=[str(root / "site1")], formats=["csv"]))
    state = await JobRunner(store, plane).run("job5")
    assert state.status == "failed" and "lead outside the analyze root, through links made since its submission" in state.error


async def test_a_cancelled_job_stops(plane, store, root):
    plane.settings.analyze_root = str(root)
    store.create("job3", JobRequest(sources=[str(root / "site1")], formats=["csv"]))
    store.ask_cancel("job3")
    state = await JobRunner(store, plane).run("job3")
    assert state.status == "cancelled" and store.state("job3").status == "cancelled"


async def test_a_job_folder_a_crash_left_half_made_is_ignored_not_fatal(plane, store, root):
    """Killed between a job's two files, the server must still start (resume_all) and count its jobs."""
    plane.settings.analyze_root = str(root)
    store.create("good1", JobRequest(sources=[str(root / "site1")], formats=["csv"]))
    (store.home / "half1").mkdir()
    (store.home / "half1" / "job.json").write_text((store.home / "good1" / "job.json").read_text())
    assert store.jobs() == ["good1"] and not store.exists("half1")
    assert store.counts()["queued"] == 1
    store.save_state("good1", JobState(status="done"))  # so that resuming starts nothing here
    JobRunner(store, plane).resume_all()  # raised FileNotFoundError on the half-made folder


async def test_a_queued_job_is_cancelled_at_once_and_never_runs(http, plane, store, engine, root):
    plane.settings.analyze_root = str(root)
    store.create("q1", JobRequest(sources=[str(root / "site1")], formats=["csv"]))
    response = await http.post("/jobs/q1/cancel")
    assert response.status_code == 200 and response.json()["state"] == "cancelled"
    state = await JobRunner(store, plane).run("q1")  # its turn comes: nothing to do
    assert state.status == "cancelled" and state.files_total == 0 and engine.calls == []


async def test_a_running_job_is_asked_to_stop_and_stays_running_until_it_does(http, plane, store, root):
    store.create("r1", JobRequest(sources=[str(root / "site1")], formats=["csv"]))
    store.save_state("r1", JobState(status="running"))
    with store.running("r1") as mine:  # another process runs it
        assert mine
        response = await http.post("/jobs/r1/cancel")
        assert response.json()["state"] == "running" and store.cancel_asked("r1")
        assert (await http.delete("/jobs/r1")).status_code == 409


async def test_after_a_restart_a_job_left_running_shows_queued_until_a_worker_takes_it(plane, store, root):
    plane.settings.analyze_root = str(root)
    store.create("left1", JobRequest(sources=[str(root / "site1")], formats=["csv"]))
    store.save_state("left1", JobState(status="running", files_total=1))  # the server died running it
    store.create("busy1", JobRequest(sources=[str(root / "site1")], formats=["csv"]))
    store.save_state("busy1", JobState(status="running"))
    runner = JobRunner(store, plane)
    with store.running("busy1"):  # another worker runs this one
        runner.resume_all()
        assert store.state("left1").status == "queued" and store.state("busy1").status == "running"
    assert (await runner.start("left1")).status == "done"
    store.save_state("busy1", JobState(status="done"))  # what the other worker would write
    assert (await runner.start("busy1")).status == "done"


async def test_a_finished_job_is_deleted_with_its_folder_and_an_unfinished_one_is_not(http, store, root):
    store.create("d1", JobRequest(sources=[str(root / "site1")], formats=["csv"]))
    refused = await http.delete("/jobs/d1")
    assert refused.status_code == 409 and "is queued; cancel it first" in refused.json()["error"]["message"]
    await http.post("/jobs/d1/cancel")
    assert (await http.delete("/jobs/d1")).status_code == 204
    assert not (store.home / "d1").exists() and sorted(p.name for p in store.home.iterdir()) == [".unfinished", "uploads"]
    assert list((store.home / ".unfinished").iterdir()) == []
    assert (await http.get("/jobs/d1")).status_code == 404 and (await http.delete("/jobs/d1")).status_code == 404
    assert (await http.get("/jobs")).json() == {"jobs": [], "next": None, "poll": "/jobs?limit=1000"}


async def test_an_upload_no_job_took_is_deleted_and_a_taken_one_belongs_to_its_job(http, store, wav):
    first = (await http.post("/jobs/uploads", params={"name": "a.wav"}, content=wav)).json()["upload_id"]
    second = (await http.post("/jobs/uploads", params={"name": "b.wav"}, content=wav)).json()["upload_id"]
    assert (await http.delete(f"/jobs/uploads/{first}")).status_code == 204
    assert not (store.home / "uploads" / first).exists()
    store.create("u1", JobRequest(sources=[], formats=["csv"]), store.upload_path(second))
    for gone in (first, second, "u1", "nope"):
        response = await http.delete(f"/jobs/uploads/{gone}")
        assert response.status_code == 404 and "waiting for a job" in response.json()["error"]["message"]
    assert (store.home / "u1" / "input" / "b.wav").is_file()


def test_a_delete_a_crash_cut_short_is_finished_at_the_next_start_and_never_listed(store, root):
    store.create("c1", JobRequest(sources=[str(root / "site1")], formats=["csv"]))
    (store.home / "c1").rename(store.home / ".deleted-c1-0123abcd")  # killed between rename and removal
    assert store.jobs() == [] and store.counts()["queued"] == 0
    type(store)(store.home)
    assert not (store.home / ".deleted-c1-0123abcd").exists()


async def test_finished_jobs_and_unclaimed_uploads_expire_after_the_keep_time_and_nothing_else_does(http, plane, store, root, wav):
    for job_id, status in (("old_done", "done"), ("old_failed", "failed"), ("old_queued", "queued"), ("new_done", "done")):
        store.create(job_id, JobRequest(sources=[str(root / "site1")], formats=["csv"]))
        store.save_state(job_id, JobState(status=status))
    old_upload = (await http.post("/jobs/uploads", params={"name": "a.wav"}, content=wav)).json()["upload_id"]
    hour_ago = time.time() - 3600
    for job_id in ("old_done", "old_failed", "old_queued"):
        state = store.state(job_id)
        state.updated = hour_ago
        (store.home / job_id / "state.json").write_text(json.dumps(asdict(state)))  # save_state would stamp it now
    folder = store.home / "uploads" / old_upload
    for path in (folder, *folder.iterdir()):
        os.utime(path, (hour_ago, hour_ago))
    new_upload = (await http.post("/jobs/uploads", params={"name": "b.wav"}, content=wav)).json()["upload_id"]
    assert sorted(store.expire(time.time() - 1800)) == sorted(["old_done", "old_failed", old_upload])
    assert sorted(store.jobs()) == ["new_done", "old_queued"] and [p.name for p in (store.home / "uploads").iterdir()] == [new_upload]
    assert store.expire(time.time() - 1800) == []


async def test_the_server_expires_jobs_periodically_when_a_keep_time_is_set(plane, store, root, monkeypatch):
    store.create("gone", JobRequest(sources=[str(root / "site1")], formats=["csv"]))
    store.save_state("gone", JobState(status="done"))
    swept = asyncio.Event()
    expire = store.expire
    monkeypatch.setattr(store, "expire", lambda before, uploads_before: (expire(before + 3600), swept.set())[0])  # as if an hour had passed
    task = asyncio.create_task(runner.expire_periodically(store, 0.5, plane.metrics))
    await asyncio.wait_for(swept.wait(), 10)
    task.cancel()
    assert store.jobs() == []
    assert await asyncio.wait_for(runner.expire_periodically(store, None, plane.metrics), 1) is None  # unset: nothing to do


async def test_uploads_no_job_took_expire_on_their_own_timer_with_finished_jobs_kept(http, plane, store, root, wav, monkeypatch):
    """The bounded room for uploads must free itself: a client that filled it and left would
    otherwise keep every other client's uploads out (a 429) for good."""
    store.create("kept", JobRequest(sources=[str(root / "site1")], formats=["csv"]))
    store.save_state("kept", JobState(status="done"))
    upload_id = (await http.post("/jobs/uploads", content=wav)).json()["upload_id"]
    swept = asyncio.Event()
    expire = store.expire

    def an_hour_later(before, uploads_before):
        assert before is None  # jobs are kept: CHORUS_JOBS_KEEP_HOURS is unset
        swept.set()
        return expire(None, uploads_before + 3600)

    monkeypatch.setattr(store, "expire", an_hour_later)
    task = asyncio.create_task(runner.expire_periodically(store, None, plane.metrics, uploads_keep_hours=1.0))
    await asyncio.wait_for(swept.wait(), 10)
    task.cancel()
    assert store.pending_uploads() == 0 and store.jobs() == ["kept"]
    with pytest.raises(KeyError):
        store.upload_path(upload_id)


async def test_a_job_deleted_between_its_listing_and_its_reading_is_skipped_or_a_404_never_a_500(http, plane, store, root, monkeypatch):
    """Another worker's delete or expiry may remove a job at any moment (found by review: 500s, and
    a worker that failed its start-up in resume_all)."""
    store.create("kept", JobRequest(sources=[str(root / "site1")], formats=["csv"]))
    listed = store.jobs
    monkeypatch.setattr(store, "jobs", lambda: ["gone", *listed()])
    monkeypatch.setattr(store, "exists", lambda job_id: True)
    assert [view["task_id"] for view in (await http.get("/jobs")).json()["jobs"]] == ["kept"]
    assert store.counts()["queued"] == 1
    for method, path in (("GET", "/jobs/gone"), ("POST", "/jobs/gone/cancel"), ("DELETE", "/jobs/gone")):
        response = await http.request(method, path)
        assert response.status_code == 404 and "deleted" in response.json()["error"]["message"], (method, response.text)
    store.save_state("kept", JobState(status="done"))
    JobRunner(store, plane).resume_all()  # raised FileNotFoundError


@pytest.fixture
def quick_polls(monkeypatch) -> None:
    """A waiting job looks again every 50 ms rather than every second: the tests that wait on it run faster."""
    monkeypatch.setattr(runner, "POLL_SECONDS", 0.05)


async def test_a_worker_that_finds_a_job_locked_for_a_moment_runs_it_once_the_lock_is_free(plane, store, root, monkeypatch, quick_polls):
    """A cancel, a 409'd delete or a restart's check holds a queued job's lock briefly; a worker
    that tried it then followed the job's state for ever, which nobody changed (found by review)."""
    plane.settings.analyze_root = str(root)
    store.create("brief", JobRequest(sources=[str(root / "site1")], formats=["csv"]))
    refused = asyncio.Event()
    running = store.running

    @contextlib.contextmanager
    def tried(job_id: str):
        with running(job_id) as mine:
            if not mine:
                refused.set()
            yield mine

    with store.running("brief"):
        monkeypatch.setattr(store, "running", tried)
        task = asyncio.create_task(JobRunner(store, plane).run("brief"))
        # Released only once the worker has found it held, or the test would not try what it is named for.
        await asyncio.wait_for(refused.wait(), 10)
    assert (await asyncio.wait_for(task, 30)).status == "done"


async def test_a_job_waiting_for_the_models_is_cancelled_within_a_second(plane, store, root, monkeypatch, quick_polls):
    store.create("waiting", JobRequest(sources=[str(root / "site1")], formats=["csv"]))
    waiting = asyncio.Event()

    async def loading() -> Readiness:
        waiting.set()
        return Readiness(False, "loading")

    monkeypatch.setattr(plane, "readiness", loading)
    task = asyncio.create_task(JobRunner(store, plane).run("waiting"))
    await asyncio.wait_for(waiting.wait(), 10)  # cancelled while it waits, not before it starts to
    store.ask_cancel("waiting")
    assert (await asyncio.wait_for(task, 5)).status == "cancelled"


async def test_jobs_waiting_when_the_server_stops_end_their_tasks_and_stay_queued(plane, store, root, monkeypatch, quick_polls):
    """The engine stops with the API workers (a killed server's workers all get SIGTERM at once), so
    it never gets ready again: jobs waiting for it, or queued behind the one the stop ended, must end
    their tasks, or the API worker's shutdown waits on them for ever (found: a worker that outlived
    its killed server by 15 minutes with three jobs submitted)."""
    for job_id in ("first", "second", "held"):
        store.create(job_id, JobRequest(sources=[str(root / "site1")], formats=["csv"]))

    waiting = asyncio.Event()

    async def stopped() -> Readiness:
        waiting.set()
        return Readiness(False, "the engine is not reachable")

    monkeypatch.setattr(plane, "readiness", stopped)
    runner = JobRunner(store, plane)
    # "held" is locked by another process the whole time: its task would follow it on disk for ever.
    with store.running("held") as mine:
        assert mine
        tasks = [runner.start("first"), runner.start("second"), runner.start("held")]
        await asyncio.wait_for(waiting.wait(), 10)  # the first waits for the models
        await asyncio.sleep(0)  # the others have had their turn: they wait behind the first
        assert runner._one_at_a_time.locked() and not any(task.done() for task in tasks)
        runner.stop()
        ended = await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert [state.status for state in ended] == ["queued", "queued", "queued"]
    assert {store.state(job_id).status for job_id in ("first", "second", "held")} == {"queued"}  # the next start runs them


async def test_a_failed_jobs_error_names_its_files_under_the_root_not_where_the_root_is(plane, store, root):
    plane.settings.analyze_root = str(root)
    (root / "emptied").mkdir()  # its recordings moved away after the submission was checked
    store.create("gone", JobRequest(sources=[str(root / "emptied")], formats=["csv"]))
    state = await JobRunner(store, plane).run("gone")
    assert state.status == "failed" and "emptied" in state.error and str(root) not in state.error, state.error
    assert str(store.home) not in state.error


def test_a_submission_whose_upload_was_deleted_meanwhile_is_a_failed_job_that_says_so(store, wav):
    upload_id, folder = store.new_upload()
    (folder / "a.wav").write_bytes(wav)
    store.delete_upload(upload_id)  # after the gate checked the submission, before the task filed it
    store.create("late", JobRequest(sources=[str(folder)], formats=["csv"]), folder)
    state = store.state("late")
    assert state.status == "failed" and "upload was deleted before the job started" in state.error


async def test_expiry_leaves_what_is_not_an_upload_and_survives_a_failing_pass(plane, store, root, monkeypatch):
    (store.home / "uploads" / "notes.txt").write_text("not an upload")
    assert store.expire(time.time() + 3600) == [] and (store.home / "uploads" / "notes.txt").exists()
    passes = []

    def flaky(before: float, uploads_before: float) -> list[str]:
        passes.append(before)
        if len(passes) == 1:
            raise OSError("the disk went away for a moment")
        return []

    monkeypatch.setattr(store, "expire", flaky)
    task = asyncio.create_task(runner.expire_periodically(store, 0.0001, plane.metrics))  # a pass every ~20 ms
    for _ in range(100):
        await asyncio.sleep(0.02)
        if len(passes) >= 2:
            break
    task.cancel()
    assert len(passes) >= 2


def test_progress_counts_the_files_a_resumed_job_took_from_its_journal(plane, store):
    state = JobState(status="running", files_total=10)
    store.create("p1", JobRequest(sources=[], formats=["csv"]))
    progress = JobRunner(store, plane)._progress("p1", state)
    progress(Progress(finished=None, done=2, total=4, audio_s=0.0, wall_s=0.0))  # 6 came from the journal
    assert state.files_done == 8 and store.state("p1").files_done == 8


def test_a_resumed_job_counts_from_what_its_journal_holds_not_from_what_its_last_run_saved(plane, store):
    # The last run saved 500 s, windows of a file it was cut short in among them; they are scored again now.
    state = JobState(status="running", files_total=10, audio_seconds_total=600.0, audio_seconds_done=500.0, files_done=7)
    store.create("p2", JobRequest(sources=[], formats=["csv"]))
    JobRunner(store, plane)._started("p2", state)(Start(to_analyze=4, from_journal=5, audio_s_from_journal=360.0))  # 1 unreadable
    saved = store.state("p2")
    assert (state.files_done, state.audio_seconds_done) == (saved.files_done, saved.audio_seconds_done) == (6, 360.0)


async def test_bentomls_own_paths_are_left_to_bentoml(http):
    response = await http.post("/healthz")
    assert response.status_code == 404 and response.headers["content-type"].startswith("text/plain")  # not the app's JSON


async def test_a_job_stopped_with_its_server_holds_its_lock_until_its_run_has_ended(plane, store, engine, root, monkeypatch):
    """At shutdown the job's task is cancelled while its run goes on in a thread: the lock must stay
    held until that run ends, or another server on the same jobs volume (a rolling update) takes the
    job and fails it on the journal the first run still holds (found by review)."""
    plane.settings.analyze_root = str(root)
    rng = np.random.default_rng(1)
    for i in range(6):
        audio = (0.1 * rng.standard_normal(16_000 * 30)).astype(np.float32)
        (root / "site1" / f"20240517_0{i}0000.wav").write_bytes(encode(audio, 16_000, "WAV", "PCM_16"))
    store.create("roll", JobRequest(sources=[str(root / "site1")], formats=["csv"]))
    scored = asyncio.Event()
    model = await plane.classifier()
    score = model.job_scores

    async def slow_scores(windows):
        scored.set()
        await asyncio.sleep(0.05)
        return await score(windows)

    monkeypatch.setattr(model, "job_scores", slow_scores)
    first = asyncio.create_task(JobRunner(store, plane).run("roll"))
    await asyncio.wait_for(scored.wait(), 30)
    first.cancel()  # the server stops
    with contextlib.suppress(asyncio.CancelledError):
        await first
    assert store.state("roll").status == "running"  # left for the next start to requeue
    state = await asyncio.wait_for(JobRunner(store, plane).run("roll"), 60)  # the next server
    assert state.status == "done", state.error
    assert state.summary["files_ok"] == 7


async def test_a_job_stops_with_the_server_even_when_the_engine_is_gone_and_stays_running_for_the_next_start(
    plane, store, root, monkeypatch
):
    """SIGTERM with a job running: the server never exited, the job's run waiting for ever on an
    engine call that the stopped engine would not answer (BentoML waited for the task in turn)."""
    plane.settings.analyze_root = str(root)
    store.create("stopped", JobRequest(sources=[str(root / "site1")], formats=["csv"]))
    model = await plane.classifier()
    asked = asyncio.Event()

    async def never_answers(windows):
        asked.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(model, "job_scores", never_answers)
    jobs = JobRunner(store, plane)
    task = asyncio.create_task(jobs.run("stopped"))
    await asyncio.wait_for(asked.wait(), 30)
    jobs.stop()  # what the API worker's drain does first
    assert (await asyncio.wait_for(task, 10)).status == "running"
    assert store.state("stopped").status == "running"
    with store.running("stopped") as free:
        assert free  # its lock is free for the next start


async def test_uploads_no_job_took_are_bounded_and_deleting_one_makes_room(http, plane, store, wav):
    plane.settings.max_pending_uploads = 2
    ids = [(await http.post("/jobs/uploads", content=wav)).json()["upload_id"] for _ in range(2)]
    refused = await http.post("/jobs/uploads", content=wav)
    assert refused.status_code == 429 and refused.json()["error"]["type"] == "too_many"
    assert "DELETE /jobs/uploads" in refused.json()["error"]["message"] and store.pending_uploads() == 2
    assert (await http.delete(f"/jobs/uploads/{ids[0]}")).status_code == 204
    assert (await http.post("/jobs/uploads", content=wav)).status_code == 201


async def test_unfinished_jobs_are_bounded_and_a_finished_one_makes_room(gate, plane, store, bentoml_tasks):
    plane.settings.max_unfinished_jobs = 1
    store.create("waiting", JobRequest(sources=["x"], formats=["csv"]))
    refused = await gate.post("/analyze/submit", json={"path": "site1"})
    assert refused.status_code == 429 and "1 jobs are queued or running" in refused.json()["error"]["message"]
    assert bentoml_tasks.bodies == []
    store.save_state("waiting", JobState(status="cancelled"))
    assert (await gate.post("/analyze/submit", json={"path": "site1"})).status_code == 200


def test_a_job_that_fails_to_be_made_gives_its_upload_back_and_leaves_no_folder(store, wav, monkeypatch):
    upload_id, folder = store.new_upload()
    (folder / "a.wav").write_bytes(wav)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "save_state", full_disk)
    with pytest.raises(OSError, match="No space"):
        store.create("doomed", JobRequest(sources=[str(folder)], formats=["csv"]), folder)
    assert (folder / "a.wav").read_bytes() == wav and store.upload_path(upload_id) == folder
    assert not store.folder("doomed").exists()


def _make_and_die(store: JobStore, job_id: str, upload: Path) -> None:
    """In a forked child: make a job and die (as a SIGKILL would) just before its job.json is written."""
    real_write = store_module.write_text

    def write_then_die(path: Path, text: str) -> None:
        if path.name == "job.json":
            os._exit(9)
        real_write(path, text)

    store_module.write_text = write_then_die
    store.create(job_id, JobRequest(sources=[], formats=["csv"]), upload)


def _age(folder: Path, seconds: float) -> None:
    then = time.time() - seconds
    for path in (folder, *folder.rglob("*")):
        os.utime(path, (then, then))


def test_a_job_its_process_died_making_gives_its_upload_back_at_the_next_start_and_leaves_nothing(store, wav):
    """Killed inside create, after the upload moved in: the folder is never a job, so without the sweep
    nothing would list, run or expire it, and the recording the client sent would be lost."""
    upload_id, upload = store.new_upload()
    (upload / "a.wav").write_bytes(wav)
    _age(upload, 7200)  # uploaded long before its submission
    child = multiprocessing.get_context("fork").Process(target=_make_and_die, args=(store, "dead1", upload))
    child.start()
    child.join()
    assert child.exitcode == 9 and (store.home / "dead1" / "input" / "a.wav").is_file() and not store.exists("dead1")
    assert store.sweep_half_made() == [] and (store.home / "dead1").is_dir()  # as young as one another worker is making
    _age(store.home / "dead1", PLACE_SECONDS + 1)
    type(store)(store.home)  # a start
    assert not (store.home / "dead1").exists() and store.upload_path(upload_id) == upload
    assert (upload / "a.wav").read_bytes() == wav and store.count_unfinished() == 0
    assert store.expire(None, time.time() - 3600) == [] and upload.is_dir()  # its keep time runs from its return
    assert list((store.home / ".unfinished").iterdir()) == [] and store.jobs() == []
    store.create("again", JobRequest(sources=[], formats=["csv"]), upload)  # the client submits it again
    assert store.request("again").sources == [str(store.home / "again" / "input" / "a.wav")]


def test_the_expiry_pass_sweeps_half_made_folders_and_leaves_jobs_and_young_ones(store):
    store.folder("no-upload").mkdir()  # killed before its state was written
    (store.home / "no-upload" / "out").mkdir()
    _age(store.home / "no-upload", PLACE_SECONDS + 1)
    store.folder("young").mkdir()
    _job_in_state(store, "old-job", "queued")
    _age(store.home / "old-job", PLACE_SECONDS + 1)
    store.folder("slow").mkdir()  # old, but its maker still holds its lock (a disk that hangs)
    (store.home / "slow" / "lock").touch()
    _age(store.home / "slow", PLACE_SECONDS + 1)
    with (store.home / "slow" / "lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert store.expire(None) == ["no-upload"]
    assert sorted(p.name for p in store.home.iterdir() if not p.name.startswith(".")) == ["old-job", "slow", "uploads", "young"]
    assert store.sweep_half_made() == ["slow"]  # its maker died: the lock went with it


async def test_a_job_another_process_holds_does_not_hold_up_the_next_one_here(plane, store, root):
    """After a restart every worker starts every job left: one each runs, the others are followed."""
    plane.settings.analyze_root = str(root)
    for job_id in ("held", "next"):
        store.create(job_id, JobRequest(sources=[str(root / "site1")], formats=["csv"]))
    job_runner = JobRunner(store, plane)
    with store.running("held"):  # another worker runs it
        held = job_runner.start("held")
        assert (await asyncio.wait_for(job_runner.start("next"), 10)).status == "done"
        assert not held.done()
    assert (await asyncio.wait_for(held, 10)).status == "done"  # its runner went away: this one takes it


async def test_a_cancel_asked_while_a_jobs_files_are_listed_ends_it_before_it_shows_running(plane, store, root, monkeypatch):
    plane.settings.analyze_root = str(root)
    store.create("big", JobRequest(sources=[str(root / "site1")], formats=["csv"]))
    list_files = runner.job_files

    def listed_while_cancelled(sources, allowed, most_seconds):
        store.ask_cancel("big")  # what the cancel route does while the runner holds the job's lock
        return list_files(sources, allowed, most_seconds)

    monkeypatch.setattr(runner, "job_files", listed_while_cancelled)
    saved, save = [], store.save_state
    monkeypatch.setattr(store, "save_state", lambda job_id, state: (saved.append(state.status), save(job_id, state))[1])
    state = await JobRunner(store, plane).run("big")
    assert state.status == "cancelled" and saved == ["cancelled"]


async def test_a_job_no_process_means_to_run_is_taken_up_by_another(plane, store, root):
    """A pod scaled down (or lost) leaves its running and queued jobs on the shared volume with no
    restart coming: the other workers find them (no one follows them) and take them up."""
    plane.settings.analyze_root = str(root)
    for i, job_id in enumerate(("was_running", "was_queued", "followed", "finished")):
        store.create(job_id, JobRequest(sources=[str(root / "site1")], formats=["csv"]))
        os.utime(store.folder(job_id) / "job.json", ns=(i * 10**9, i * 10**9))  # the order, whatever the clock's tick
    store.save_state("was_running", JobState(status="running", files_total=1))
    store.save_state("finished", JobState(status="done"))
    job_runner = JobRunner(store, plane)
    with store.follow("followed"):  # a live worker waits to run this one
        assert job_runner.orphans() == ["was_running", "was_queued"]
        assert store.state("was_running").status == "queued"  # until a worker takes it up
        assert not store.followed("was_queued")
        task = job_runner.start("was_queued")
        for _ in range(500):
            if store.followed("was_queued"):
                break
            await asyncio.sleep(0.01)
        assert job_runner.orphans() == ["was_running"]  # "was_queued" has a follower now
        assert (await asyncio.wait_for(task, 10)).status == "done"
    assert job_runner.orphans() == ["was_running", "followed"]  # its worker went away before running it
    job_runner.stop()
    assert job_runner.orphans() == []  # a stopping server takes up nothing


async def test_orphans_are_taken_up_periodically(plane, store, root):
    plane.settings.analyze_root = str(root)
    store.create("orphan", JobRequest(sources=[str(root / "site1")], formats=["csv"]))
    store.save_state("orphan", JobState(status="running"))
    job_runner = JobRunner(store, plane)
    adopting = asyncio.create_task(runner.adopt_orphans_periodically(job_runner, every=0.01))
    try:
        for _ in range(1000):
            if store.state("orphan").status == "done":
                break
            await asyncio.sleep(0.01)
        assert store.state("orphan").status == "done"
    finally:
        adopting.cancel()


async def test_a_busy_worker_leaves_orphans_to_idle_ones(plane, store, root):
    """Followed by a worker two hours into another job, a lost pod's job would wait those two hours
    while idle workers, seeing it followed, left it alone."""
    plane.settings.analyze_root = str(root)
    store.create("orphan", JobRequest(sources=[str(root / "site1")], formats=["csv"]))
    job_runner = JobRunner(store, plane)
    async with job_runner._one_at_a_time:  # this worker runs a long job
        adopting = asyncio.create_task(runner.adopt_orphans_periodically(job_runner, every=0.01))
        await asyncio.sleep(0.1)  # ten of its looks
        adopting.cancel()
        assert not store.followed("orphan") and job_runner._running == {}


async def test_a_runner_forgets_the_jobs_it_has_run(plane, store, root):
    plane.settings.analyze_root = str(root)
    store.create("brief", JobRequest(sources=[str(root / "site1")], formats=["csv"]))
    runner = JobRunner(store, plane)
    await runner.start("brief")
    await asyncio.sleep(0)  # the done callbacks run on the loop's next turn
    assert runner._running == {}


async def test_the_upload_and_job_bounds_hold_for_requests_arriving_together(http, gate, plane, store, wav):
    """Counted and taken in one step: twenty at once cannot all pass a count made before any is taken."""
    plane.settings.max_pending_uploads, plane.settings.max_unfinished_jobs = 2, 2
    uploads = await asyncio.gather(*(http.post("/jobs/uploads", content=wav) for _ in range(20)))
    assert sorted(r.status_code for r in uploads) == [201] * 2 + [429] * 18 and store.pending_uploads() == 2
    submissions = await asyncio.gather(*(gate.post("/analyze/submit", json={"path": "site1"}) for _ in range(20)))
    assert sorted(r.status_code for r in submissions) == [200] * 2 + [429] * 18
    assert store.counts()["queued"] + store.counts()["running"] <= 2


async def test_the_job_bound_holds_across_workers_sharing_the_jobs_folder(plane, store, root):
    """API workers are processes, each with its own gate: what bounds them is on disk."""
    plane.settings.analyze_root, plane.settings.max_unfinished_jobs = str(root), 3
    async with contextlib.AsyncExitStack() as stack:
        workers = []
        for _ in range(2):  # a gate and a store of its own each, over one jobs folder
            worker_store = JobStore(store.home)
            app = Starlette()
            app.state.plane, app.state.jobs = plane, worker_store
            transport = httpx.ASGITransport(app=JobGate(FakeBentoTasks(worker_store), app.state))
            workers.append(await stack.enter_async_context(httpx.AsyncClient(transport=transport, base_url="http://chorus.test")))
        submissions = await asyncio.gather(*(w.post("/analyze/submit", json={"path": "site1"}) for w in workers for _ in range(10)))
    assert sorted(r.status_code for r in submissions) == [200] * 3 + [429] * 17
    assert store.counts()["queued"] == 3 and store.places_held() == 0


async def test_a_place_taken_while_its_submission_is_cancelled_is_given_back(store, monkeypatch):
    """The place is taken on a thread, which a cancelled request (its timeout, a shutdown) cannot
    stop: it must not count against every worker's bound for PLACE_SECONDS (found by review)."""
    taken, go = threading.Event(), threading.Event()
    real = jobs_adapter.take_place_for_a_job

    def slow_take(*args):
        go.wait(10)
        place = real(*args)
        taken.set()
        return place

    monkeypatch.setattr(jobs_adapter, "take_place_for_a_job", slow_take)
    submission = asyncio.create_task(jobs_adapter._take_place(store, 5))
    await asyncio.sleep(0)  # its thread has started
    submission.cancel()
    go.set()
    with pytest.raises(asyncio.CancelledError):
        await submission
    assert await asyncio.to_thread(taken.wait, 10)
    for _ in range(500):  # given back by a callback on the loop, once the thread has ended
        if store.places_held() == 0:
            break
        await asyncio.sleep(0.01)
    assert store.places_held() == 0


def test_a_place_left_by_a_worker_that_died_stops_counting(store):
    place = store.take_place(1)
    with pytest.raises(TooManyJobs):
        store.take_place(1)
    long_ago = time.time() - PLACE_SECONDS - 1
    os.utime(place, (long_ago, long_ago))
    store.give_back_place(store.take_place(1))
    assert not place.exists() and store.places_held() == 0


def test_a_job_being_made_counts_once_not_as_a_job_and_its_place(store, monkeypatch):
    """At the bound: from the moment its job.json is on disk to the moment its place is given back, a
    job was counted twice, so a submission then could get a spurious 429."""
    place = store.take_place(2)
    seen = []
    real_give_back = store.give_back_place

    def give_back_once_on_disk(held):
        if store.exists("made"):  # the job is a job now and its place not given back yet
            seen.append(store.count_unfinished())
            store.give_back_place = real_give_back
            real_give_back(store.take_place(2))  # one job counted: a place for a second is left
        real_give_back(held)

    monkeypatch.setattr(store, "give_back_place", give_back_once_on_disk)
    store.create("made", JobRequest(sources=[], formats=["csv"]), place=place)
    assert seen == [1] and not place.exists() and store.places_held() == 0
    with pytest.raises(TooManyJobs) as full:
        store.take_place(1)
    assert full.value.args == (1,)


def test_a_job_whose_place_expired_meanwhile_is_still_made(store):
    place = store.take_place(1)
    place.unlink()  # removed by a count after PLACE_SECONDS
    store.create("late", JobRequest(sources=[], formats=["csv"]), place=place)
    assert store.exists("late") and store.places_held() == 0 and store.count_unfinished() == 1


def test_a_job_made_between_the_places_and_the_jobs_read_counts_once(store, monkeypatch):
    """A count lists the places, then reads the jobs: a job finished making (its place given back)
    between the two is counted by the second. Read the other way round it was counted by neither,
    and the bound let one job too many through."""
    claimed = store.take_place(5).rename(store.home / ".places" / "x")
    real_ids = store._unfinished_ids

    def read_then_finish_making():
        ids = real_ids()
        store.create("x", JobRequest(sources=[], formats=["csv"]))
        store.give_back_place(claimed)
        return ids

    monkeypatch.setattr(store, "_unfinished_ids", read_then_finish_making)
    with pytest.raises(TooManyJobs) as full:
        store.take_place(1)
    assert full.value.args == (1,)


def test_a_place_its_job_was_made_from_stops_counting_when_its_process_died_before_giving_it_back(store):
    place = store.take_place(2).rename(store.home / ".places" / "made")
    store.create("made", JobRequest(sources=[], formats=["csv"]))
    store.save_state("made", JobState(status="done"))
    store.give_back_place(store.take_place(1))  # the job is finished: nothing holds the one place
    assert not place.exists()


def _job_in_state(store, job_id, status):
    store.create(job_id, JobRequest(sources=[], formats=["csv"]))
    store.save_state(job_id, JobState(status=status))


def test_the_job_bound_reads_the_unfinished_jobs_not_every_job_kept(store, monkeypatch):
    """A server that keeps its finished jobs (no CHORUS_JOBS_KEEP_HOURS) has thousands: a submission
    counting under the lock must not read each one's state (10,000 took 0.7 s a submission)."""
    for i in range(30):
        _job_in_state(store, f"old{i}", ("done", "failed", "cancelled")[i % 3])
    _job_in_state(store, "waiting", "queued")
    _job_in_state(store, "busy", "running")
    read = []
    real_state = store.state
    monkeypatch.setattr(store, "state", lambda job_id: read.append(job_id) or real_state(job_id))
    place = store.take_place(3)
    with pytest.raises(TooManyJobs) as full:
        store.take_place(3)
    assert full.value.args == (3,) and sorted(set(read)) == ["busy", "waiting"]
    store.give_back_place(place)
    store.save_state("busy", JobState(status="done"))
    assert store.count_unfinished() == 1


def test_the_unfinished_index_drops_what_a_crash_or_a_delete_left_and_keeps_a_job_being_made(store):
    _job_in_state(store, "finished", "done")
    (store.home / ".unfinished" / "finished").touch()  # a crash between the finished state and the entry's removal
    _job_in_state(store, "deleted", "done")
    store.delete("deleted")
    (store.home / ".unfinished" / "deleted").touch()
    (store.home / ".unfinished" / "not a job's name").touch()
    store.folder("folder-only").mkdir()  # made, its state not written yet: its place counts it
    (store.home / ".unfinished" / "folder-only").touch()
    store.folder("state-only").mkdir()  # its state written, its job.json not yet (or never: its process died)
    store.save_state("state-only", JobState())
    assert store.count_unfinished() == 0
    assert sorted(p.name for p in (store.home / ".unfinished").iterdir()) == ["folder-only", "state-only"]
    store.create("state-only", JobRequest(sources=[], formats=["csv"]))  # however long its making took
    assert store.count_unfinished() == 1


def test_a_state_saved_under_a_name_that_is_no_jobs_writes_nothing(store):
    with pytest.raises(KeyError):
        store.save_state("../x", JobState())
    assert not (store.home / "x").exists() and list((store.home / ".unfinished").iterdir()) == []


def test_the_jobs_gauge_reads_a_finished_jobs_state_once(store, monkeypatch):
    """Recounted at every job's start and end: with thousands of finished jobs kept, reading each
    one's state every time took 0.8 s of a core per job (docs/benchmarks.md)."""
    for i in range(10):
        _job_in_state(store, f"old{i}", "done" if i % 2 else "failed")
    _job_in_state(store, "busy", "running")
    read = []
    real_state = store.state
    monkeypatch.setattr(store, "state", lambda job_id: read.append(job_id) or real_state(job_id))
    assert store.counts() == {"queued": 0, "running": 1, "done": 5, "failed": 5, "cancelled": 0} and len(read) == 11
    store.save_state("busy", JobState(status="cancelled"))
    store.delete("old0")  # (which reads its state)
    read.clear()
    assert store.counts() == {"queued": 0, "running": 0, "done": 5, "failed": 4, "cancelled": 1} and read == ["busy"]
    read.clear()
    assert store.counts()["cancelled"] == 1 and read == []


def test_a_job_made_again_under_the_name_it_deleted_is_looked_up_afresh(store):
    """The store keeps a finished job's status and listing key by id; ids are never used twice, but
    a delete forgets its own all the same."""
    made = time.time_ns() - 10**12
    _made_at(store, "a", "done", made)
    _made_at(store, "b", "done", made + 1)
    assert store.counts()["done"] == 2 and store.jobs() == ["a", "b"] and store.status("a") == "done"
    store.delete("a")
    _made_at(store, "a", "queued", made + 2)  # a folder restored from a backup, say
    assert store.counts()["queued"] == 1 and store.counts()["done"] == 1
    assert store.jobs() == ["b", "a"] and store.status("a") == "queued"


def test_the_jobs_gauge_enters_in_the_index_an_unfinished_job_it_lacks(store):
    """A job made by a version without the index (an old pod, during a rolling update), or whose
    entry a power cut lost, counts once the next job starts or ends (each recounts the gauge)."""
    _job_in_state(store, "old", "queued")
    (store.home / ".unfinished" / "old").unlink()
    assert store.count_unfinished() == 0
    assert store.counts()["queued"] == 1 and store.count_unfinished() == 1


def test_a_start_enters_in_the_index_the_unfinished_jobs_it_lacks(store):
    """Jobs made by a version without the index (or an entry a crash lost) count once the server starts."""
    _job_in_state(store, "a", "queued")
    _job_in_state(store, "b", "running")
    _job_in_state(store, "c", "done")
    shutil.rmtree(store.home / ".unfinished")
    store = JobStore(store.home)
    assert store.count_unfinished() == 0
    assert store.reindex() == ["a", "b"] and store.count_unfinished() == 2
    read = []
    real_state = store.state
    store.state = lambda job_id: read.append(job_id) or real_state(job_id)
    assert store.counts() == {"queued": 1, "running": 1, "done": 1, "failed": 0, "cancelled": 0}
    assert sorted(read) == ["a", "b"]  # the start's gauge count: the finished job was read by reindex


async def _pages(http, url):
    """Every page of a listing, following its next links."""
    pages = []
    while url is not None:
        page = (await http.get(url)).json()
        pages.append([view["task_id"] for view in page["jobs"]])
        url = page["next"]
    return pages


def _made_at(store, job_id, status, ns):
    """A job whose job.json says it was made at `ns` (what the listing orders by)."""
    _job_in_state(store, job_id, status)
    os.utime(store.folder(job_id) / "job.json", ns=(ns, ns))


async def test_the_job_listing_comes_in_pages_of_the_states_asked_for(http, store):
    made = time.time_ns() - 10**12
    names = ["g0", "f1", "e2", "d3", "c4", "b5", "a6"]  # their names sort against the order they were made in
    for i, (name, status) in enumerate(zip(names, ["done", "queued", "failed", "running", "done", "cancelled", "queued"], strict=True)):
        _made_at(store, name, status, made + i * 1000)
    everything = (await http.get("/jobs")).json()
    assert [v["task_id"] for v in everything["jobs"]] == names and everything["next"] is None
    assert await _pages(http, "/jobs?limit=3") == [["g0", "f1", "e2"], ["d3", "c4", "b5"], ["a6"]]
    assert await _pages(http, "/jobs?limit=7") == [names]  # a full last page has no next
    assert await _pages(http, "/jobs?limit=2&state=done,failed") == [["g0", "e2"], ["c4"]]
    assert await _pages(http, "/jobs?limit=2&state=done") == [["g0", "c4"], []]  # a full page's next may be empty
    assert await _pages(http, "/jobs?limit=3&state=done") == [["g0", "c4"]]  # a page not full is the last
    assert await _pages(http, "/jobs?state=cancelled") == [["b5"]]
    assert await _pages(http, "/jobs?state=done,,queued,") == [["g0", "f1", "c4", "a6"]]  # empty items: none
    assert await _pages(http, "/jobs?state=&limit=&after=") == [names]  # empty: not sent, as a form sends it
    first = (await http.get("/jobs?limit=2")).json()
    store.delete("g0")  # a job gone between two pages moves nothing after it
    assert [v["task_id"] for v in (await http.get(first["next"])).json()["jobs"]] == ["e2", "d3"]
    for name in ("tie-b", "tie-a"):  # made in one tick of a coarse clock: by name
        _made_at(store, name, "done", made + 10**6)
    assert await _pages(http, "/jobs?limit=7") == [["f1", "e2", "d3", "c4", "b5", "a6", "tie-a"], ["tie-b"]]


async def test_the_poll_link_comes_back_to_what_may_still_be_listed(http, store):
    """With only `next` (null on the last page) a client waiting for new jobs had to list everything again."""
    made = time.time_ns() - 10**12
    _made_at(store, "b0", "done", made)
    _made_at(store, "a1", "failed", made + 1000)
    last = (await http.get("/jobs?limit=5&state=done")).json()
    assert [v["task_id"] for v in last["jobs"]] == ["b0"] and last["next"] is None
    assert last["poll"] == f"/jobs?state=done&limit=5&after={made + 1000}-a1"  # past the failed job: it stays so
    assert (await http.get(last["poll"])).json() == {"jobs": [], "next": None, "poll": last["poll"]}  # nothing new
    _made_at(store, "d2", "queued", made + 2000)
    _made_at(store, "c3", "done", made + 3000)
    polled = (await http.get(last["poll"])).json()
    assert [v["task_id"] for v in polled["jobs"]] == ["c3"]
    assert polled["poll"] == last["poll"]  # not past d2, which may come to be done
    store.save_state("d2", JobState(status="done"))
    polled = (await http.get(polled["poll"])).json()
    assert [v["task_id"] for v in polled["jobs"]] == ["d2", "c3"]  # c3 again: a client skips what it has
    assert polled["poll"] == f"/jobs?state=done&limit=5&after={made + 3000}-c3"
    full = (await http.get("/jobs?limit=1")).json()
    assert full["poll"] == full["next"]


async def test_the_poll_link_stays_behind_the_jobs_just_made(http, store):
    """A job.json's time is a coarse clock's (ms apart, shared by jobs made together) and a job made
    meanwhile can show up after a later one: a poll past the newest job would miss it for good."""
    made = time.time_ns() - 10**12
    _made_at(store, "old", "done", made)
    _made_at(store, "new", "done", time.time_ns())
    page = (await http.get("/jobs")).json()
    assert [v["task_id"] for v in page["jobs"]] == ["old", "new"]
    assert page["poll"] == f"/jobs?limit=1000&after={made}-old"
    _made_at(store, "aa-tied", "done", (store.folder("new") / "job.json").stat().st_mtime_ns)  # same tick, sorts first
    assert [v["task_id"] for v in (await http.get(page["poll"])).json()["jobs"]] == ["aa-tied", "new"]


def test_a_listing_looks_up_each_jobs_key_once(store):
    """A page of 100 among 10,000 kept jobs took 0.3 s while every job.json was looked at each time."""
    made = time.time_ns() - 10**12
    for i, name in enumerate(["b", "a"]):
        _made_at(store, name, "done", made + i)
    assert store.jobs() == ["b", "a"]
    os.utime(store.folder("b") / "job.json", ns=(made + 5, made + 5))  # not looked at again
    store.delete("a")
    _made_at(store, "c", "queued", made + 2)
    assert store.jobs() == ["b", "c"] and store.listing_keys(unfinished_only=True) == [(made + 2, "c")]


async def test_a_listing_without_a_limit_is_a_page_of_the_most_one_answer_holds(http, store, monkeypatch):
    """Unbounded, a listing of thousands of kept jobs cost a second of a core per request."""
    monkeypatch.setattr(jobs_adapter, "MAX_LIST_LIMIT", 3)
    for i in range(5):
        _made_at(store, f"j{i}", "done", time.time_ns() - 10**12 + i)
    assert await _pages(http, "/jobs") == [["j0", "j1", "j2"], ["j3", "j4"]]
    too_many = await http.get("/jobs?limit=4")
    assert too_many.status_code == 422 and "limit must be from 1 to 3" in too_many.json()["error"]["message"]


async def test_the_next_link_keeps_the_path_the_server_is_mounted_under(plane, store):
    _job_in_state(store, "a", "done")
    _job_in_state(store, "b", "done")
    app = Starlette(routes=adapters.jobs.ROUTES)
    app.state.plane, app.state.jobs = plane, store
    transport = httpx.ASGITransport(app=app, root_path="/chorus")
    async with httpx.AsyncClient(transport=transport, base_url="http://chorus.test") as client:
        page = (await client.get("/jobs?limit=1")).json()
    assert page["next"].startswith("/chorus/jobs?limit=1&after=")


async def test_listing_the_unfinished_jobs_reads_none_of_the_finished_ones(http, store, monkeypatch):
    for i in range(20):
        _job_in_state(store, f"old{i}", "done")
    _job_in_state(store, "waiting", "queued")
    _job_in_state(store, "busy", "running")
    read = []
    real_state = store.state
    monkeypatch.setattr(store, "state", lambda job_id: read.append(job_id) or real_state(job_id))
    assert await _pages(http, "/jobs?state=running,queued") == [["waiting", "busy"]]
    assert set(read) == {"waiting", "busy"}


async def test_listing_a_finished_state_reads_each_finished_job_once(http, store, monkeypatch):
    for i in range(12):
        _job_in_state(store, f"old{i}", "done" if i % 3 else "failed")
    read = []
    real_state = store.state
    monkeypatch.setattr(store, "state", lambda job_id: read.append(job_id) or real_state(job_id))
    assert await _pages(http, "/jobs?state=cancelled") == [[]] and len(read) == 12
    read.clear()
    assert await _pages(http, "/jobs?state=cancelled") == [[]] and read == []
    assert len((await http.get("/jobs?state=failed")).json()["jobs"]) == 4 and len(read) == 4  # the views' own reads


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("state=finished", "unknown state(s) ['finished']; give one or more of ['queued', 'running', 'done', 'failed', 'cancelled']"),
        ("state=done,finished", "unknown state(s) ['finished']"),
        ("limit=0", "limit must be from 1 to 1000"),
        ("limit=many", "limit must be an integer"),
        ("limit=1001", "limit must be from 1 to 1000"),
        ("after=j1", "'j1' is not a cursor; pass the `next` link"),
        ("after=12-../x", "is not a cursor"),
        ("page=2", "unknown parameter(s) ['page']; GET /jobs takes ['state', 'limit', 'after']"),
        ("page=1&page=2", "unknown parameter(s) ['page']"),
        ("limit=2&limit=3", "parameter(s) ['limit'] given more than once"),
    ],
)
async def test_a_job_listing_asked_wrongly_is_a_422_saying_what_it_takes(http, store, query, says):
    _job_in_state(store, "j0", "done")
    response = await http.get(f"/jobs?{query}")
    assert response.status_code == 422 and says in response.json()["error"]["message"]


class RunsTheJobInItsCall(FakeBentoTasks):
    """As BentoML does: the task runs inside the submission's own ASGI call, after the answer (a
    Starlette BackgroundTask); here it runs until `finish` is set."""

    def __init__(self, store):
        super().__init__(store)
        self.answered, self.finish = asyncio.Event(), asyncio.Event()

    async def __call__(self, scope, receive, send):
        await super().__call__(scope, receive, send)
        self.answered.set()
        await self.finish.wait()


async def test_a_submitted_job_counts_once_against_the_bound_while_bentoml_runs_it(plane, store, root):
    """Found by review: counted as accepted until its run ended, and on disk as well, each job
    counted twice, and the bound let half as many in."""
    tasks, app = RunsTheJobInItsCall(store), Starlette()
    app.state.plane, app.state.jobs = plane, store
    plane.settings.analyze_root, plane.settings.max_unfinished_jobs = str(root), 2
    gate = JobGate(tasks, app.state)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gate), base_url="http://chorus.test") as client:
        running = []
        for _ in range(2):
            tasks.answered.clear()
            running.append(asyncio.create_task(client.post("/analyze/submit", json={"path": "site1"})))
            await asyncio.wait_for(tasks.answered.wait(), 10)
        refused = await client.post("/analyze/submit", json={"path": "site1"})
        assert refused.status_code == 429 and "2 jobs are queued or running" in refused.json()["error"]["message"]
        tasks.finish.set()
        assert [r.status_code for r in await asyncio.gather(*running)] == [200, 200]
    assert store.places_held() == 0

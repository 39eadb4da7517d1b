"""Analysis jobs over HTTP.

Submitting goes through BentoML's task API (`POST /analyze/submit`, the task declared on the API
service). BentoML keeps its task queue in memory and answers cancel with "not supported" on a
local server, so `JobGate` stands in front of that API: it checks a submission before BentoML
queues it (403, 404, 422), makes the job's folder before the client learns its task id (BentoML
runs the task only after its answer has gone, so a status asked at once would otherwise find no
job), and answers `/analyze/status`, `/analyze/get` and `/analyze/cancel` from the job's folder,
which survives a restart. The routes here upload a recording (streamed to
disk within CHORUS_MAX_JOB_UPLOAD_BYTES), and show, cancel, delete and download a job's tables.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import logging
import re
import time
import unicodedata
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.adapters.http import (
    authorize,
    body_chunks,
    check_content_length,
    check_known,
    error_response,
    json_errors,
    media_type,
    once_each,
    parse_int,
    parse_json,
    plane_of,
)
from service.auth import check_bearer
from service.errors import (
    BadRequest,
    Conflict,
    InvalidParameter,
    JobsUnavailable,
    MethodNotAllowed,
    NotFound,
    TooManyRequests,
    UnsupportedMedia,
    as_service_error,
)
from service.jobs.runner import recount_jobs
from service.jobs.store import FINISHED, STATES, JobBusyError, JobRequest, JobStore, TooManyUploads
from service.jobs.submit import check_submission, take_place_for_a_job
from service.metrics import Metrics

log = logging.getLogger("chorus.jobs")
TASK = "/analyze"
UPLOAD_PATH = "/jobs/uploads"
"""Where a job's recording is streamed to disk (no request timeout: service.adapters.request_timeout)."""
MAX_SUBMISSION_BYTES = 64 * 1024
MAX_NAME_BYTES = 200
BENTOML_STATUS = {"queued": "in_progress", "running": "in_progress", "done": "completed", "failed": "failed", "cancelled": "canceled"}


def job_view(store: JobStore, job_id: str) -> dict[str, Any]:
    """A job as clients see it: its state, progress and the links to its tables."""
    state = store.state(job_id)
    return {
        "task_id": job_id,
        "status": BENTOML_STATUS[state.status],
        "state": state.status,
        "progress": {
            "audio_seconds_done": round(state.audio_seconds_done, 3),
            "audio_seconds_total": state.audio_seconds_total,
            "files_done": state.files_done,
            "files_total": state.files_total,
        },
        "summary": state.summary,
        "error": state.error,
        "outputs": {name: f"/jobs/{job_id}/outputs/{name}" for name in store.outputs(job_id)},
    }


async def view_off_loop(store: JobStore, job_id: str) -> dict[str, Any]:
    """job_view in a thread: a job of many recordings has as many tables to list."""
    return await asyncio.to_thread(job_view, store, job_id)


@contextlib.contextmanager
def deleted_is_404(job_id: str) -> Iterator[None]:
    """A job deleted (by a client, or expired) between its check and its reading is not found, not a 500."""
    try:
        yield
    except FileNotFoundError:
        raise NotFound(f"no job {job_id!r} (deleted)") from None


def jobs_of(state: State) -> JobStore:
    """The server's job store; 503 when jobs are off (the server started without a usable jobs folder)."""
    store: JobStore | None = getattr(state, "jobs", None)
    if store is None:
        raise JobsUnavailable(f"analysis jobs are off on this server: {getattr(state, 'jobs_off', 'it has no jobs folder')}")
    return store


def store_of(request: Request) -> JobStore:
    return jobs_of(request.app.state)


def upload_name(raw: str | None) -> str:
    """The uploaded file's name, kept (it can carry the recording's start time and a site's name,
    accents and all) but never a path: what follows the last `/`, in letters, marks and digits of
    any script and `._+-`, anything else `_`. At most MAX_NAME_BYTES of UTF-8 (file systems allow
    255), cut before an extension of up to 15 characters; a name that is only an extension gets the
    stem `recording`, so that the job still finds its audio by the extension."""
    name = unicodedata.normalize("NFC", Path(raw or "recording").name)
    name = "".join(c if unicodedata.category(c)[0] in "LMN" or c in "._+-" else "_" for c in name)
    stem, dot, extension = name.rpartition(".")
    if not (dot and extension) or len(extension) > 15:  # no extension, or a dot inside a long name
        stem, dot, extension = name, "", ""
    room = MAX_NAME_BYTES - len((dot + extension).encode())
    stem = stem.lstrip(".").encode()[:room].decode(errors="ignore")  # never half a character
    return (stem or "recording") + dot + extension


@json_errors
async def upload(request: Request) -> Response:
    """The request body, written to disk as it arrives; refused (413) as soon as it passes the limit."""
    plane = plane_of(request)
    authorize(request)
    limit = plane.settings.max_job_upload_bytes
    check_content_length(request, limit)
    try:  # each one is disk (up to the upload limit) and an open file while it streams: bounded
        upload_id, folder = await asyncio.to_thread(store_of(request).new_upload, plane.settings.max_pending_uploads)
    except TooManyUploads as full:
        raise TooManyRequests(
            f"{full.args[0]} uploads wait for a job, the server's limit (CHORUS_MAX_PENDING_UPLOADS);"
            " submit them (POST /analyze/submit) or delete them (DELETE /jobs/uploads/{id}) first"
        ) from None
    target = folder / upload_name(request.query_params.get("name"))
    size = 0
    try:
        out = await asyncio.to_thread(target.open, "wb")
        try:
            chunks = body_chunks(
                request, limit, "the upload (a job's recording)", in_memory=False, min_rate=plane.settings.min_job_upload_bytes_per_second
            )
            async for chunk in chunks:
                size += len(chunk)
                await asyncio.to_thread(out.write, chunk)
        finally:
            await asyncio.to_thread(out.close)  # on a network file system, close writes back what the server lacks
        if size == 0:
            raise BadRequest("the upload is empty; send the recording as the request body")
    except BaseException:
        target.unlink(missing_ok=True)
        folder.rmdir()
        raise
    return JSONResponse({"upload_id": upload_id, "name": target.name, "bytes": size}, status_code=201)


LIST_PARAMETERS = ("state", "limit", "after")
MAX_LIST_LIMIT = 1000
"""Most jobs in one answer of GET /jobs, and how many it holds when `limit` is not given: with
thousands kept, an unbounded listing cost a second of a core per request (docs/benchmarks.md)."""
_CURSOR = re.compile(r"^([0-9]{1,20})-([A-Za-z0-9_-]{1,64})$")


@dataclass(frozen=True)
class Listing:
    """What GET /jobs was asked for: the states to list (None: all), at most `limit` jobs,
    those made after the `after` cursor (None: from the oldest); `root_path`: where the server is
    mounted, for the next page's link."""

    states: frozenset[str] | None = None
    limit: int = MAX_LIST_LIMIT
    after: tuple[int, str] | None = None
    root_path: str = ""

    @classmethod
    def from_query(cls, request: Request) -> Listing:
        pairs = list(request.query_params.multi_items())
        check_known(dict(pairs), LIST_PARAMETERS, "GET /jobs")
        params = {name: value for name, value in once_each(pairs).items() if value != ""}  # an empty value counts as not sent
        states = frozenset(name.strip() for name in params.get("state", "").split(",") if name.strip()) or None
        if states is not None and not states <= set(STATES):
            unknown = sorted(states - set(STATES))
            raise InvalidParameter(f"state: unknown state(s) {unknown}; give one or more of {list(STATES)}, comma-separated")
        limit = parse_int(params, "limit", MAX_LIST_LIMIT, 1, MAX_LIST_LIMIT)
        after = None
        if "after" in params:
            cursor = _CURSOR.match(params["after"])
            if cursor is None:
                raise InvalidParameter(f"after: {params['after']!r} is not a cursor; pass the `next` link of the page before")
            after = (int(cursor[1]), cursor[2])
        return cls(states, limit, after, request.scope.get("root_path", ""))

    def link_after(self, last: tuple[int, str] | None) -> str:
        """The link to the jobs after `last` (None: from the oldest), asking the same."""
        query: dict[str, Any] = {"state": ",".join(sorted(self.states))} if self.states is not None else {}
        query["limit"] = self.limit
        if last is not None:
            query["after"] = f"{last[0]}-{last[1]}"
        return f"{self.root_path}/jobs?" + urllib.parse.urlencode(query)


@json_errors
async def list_jobs(request: Request) -> Response:
    authorize(request)
    listing = Listing.from_query(request)
    store = store_of(request)
    # In a thread: each job is a state file read and an output folder listed, and the JSON of
    # thousands of them takes a while to write too.
    return await asyncio.to_thread(lambda: JSONResponse(job_page(store, listing)))


POLL_OVERLAP_NS = 5 * 10**9
"""How far behind the present a poll link stays. A job's place in the listing is its job.json's
time, which a coarse file-system clock gives several jobs at once, and a job made meanwhile can
show up after one made later than it: each poll lists the jobs of its last 5 s again (a client
skips the task_ids it has)."""


def job_page(store: JobStore, listing: Listing) -> dict[str, Any]:
    """The jobs asked for, oldest first; `next`, the link to the next page when this one is full
    (the next may be empty); and `poll`, for a client waiting for what comes later, there on the
    last page too: the link to the jobs after those that cannot come to be listed any more, so it
    stops before a job a state filter skipped while it was unfinished, and POLL_OVERLAP_NS behind
    the present. Only the jobs listed are read: queued and running ones from the index."""
    keys = store.listing_keys(unfinished_only=listing.states is not None and listing.states <= {"queued", "running"})
    if listing.after is not None:
        keys = keys[bisect.bisect_right(keys, listing.after) :]
    views: list[dict[str, Any]] = []
    went_through = settled = listing.after
    horizon, unsettled = time.time_ns() - POLL_OVERLAP_NS, False
    for key in keys:
        if len(views) == listing.limit:
            return {"jobs": views, "next": listing.link_after(went_through), "poll": listing.link_after(settled)}
        with contextlib.suppress(NotFound), deleted_is_404(key[1]):
            if listing.states is None or (status := store.status(key[1])) in listing.states:
                views.append(job_view(store, key[1]))
            elif status not in FINISHED:  # skipped now, it may come to match
                unsettled = True
        went_through = key
        unsettled = unsettled or key[0] >= horizon
        if not unsettled:
            settled = key
    return {"jobs": views, "next": None, "poll": listing.link_after(settled)}


def _job_id(request: Request) -> str:
    job_id = request.path_params["job_id"]
    if not store_of(request).exists(job_id):
        raise NotFound(f"no job {job_id!r}")
    return job_id


@json_errors
async def show_job(request: Request) -> Response:
    authorize(request)
    job_id = _job_id(request)
    with deleted_is_404(job_id):
        return JSONResponse(await view_off_loop(store_of(request), job_id))


async def cancel(store: JobStore, job_id: str, metrics: Metrics) -> Response:
    """The job after the cancel: "cancelled" at once when it was queued, still "running" until its
    next batch of windows when it was running."""
    with deleted_is_404(job_id):
        if store.cancel(job_id):  # a finished one has nothing to cancel, nor to recount
            await recount_jobs(store, metrics)
        return JSONResponse(await view_off_loop(store, job_id))


@json_errors
async def cancel_job(request: Request) -> Response:
    authorize(request)
    return await cancel(store_of(request), _job_id(request), plane_of(request).metrics)


@json_errors
async def delete_job(request: Request) -> Response:
    """A finished job's folder (input, journal, tables) removed; 409 while it is queued or running."""
    authorize(request)
    store, job_id = store_of(request), _job_id(request)
    try:
        with deleted_is_404(job_id):  # two deletes at once: one 204, one 404
            await asyncio.to_thread(store.delete, job_id)  # a job's tables may be many files
    except JobBusyError as exc:
        raise Conflict(f"{exc}; cancel it first (POST /jobs/{job_id}/cancel) and delete it once its state is cancelled") from None
    await recount_jobs(store, plane_of(request).metrics)
    return Response(status_code=204)


@json_errors
async def delete_upload(request: Request) -> Response:
    """An upload that no job took (a submitted one belongs to its job: delete the job)."""
    authorize(request)
    upload_id = request.path_params["upload_id"]
    try:
        await asyncio.to_thread(store_of(request).delete_upload, upload_id)
    except KeyError:
        raise NotFound(f"no upload {upload_id!r} waiting for a job (a submitted upload is deleted with its job)") from None
    return Response(status_code=204)


@json_errors
async def job_output(request: Request) -> Response:
    authorize(request)
    store, job_id = store_of(request), _job_id(request)
    try:
        with deleted_is_404(job_id):
            path = await asyncio.to_thread(store.output, job_id, request.path_params["name"])
    except KeyError:
        raise NotFound(f"job {job_id!r} has no output {request.path_params['name']!r}; GET /jobs/{job_id} lists its outputs") from None
    return FileResponse(path, filename=path.name)


ROUTES = [
    Route("/jobs", list_jobs, methods=["GET"]),
    Route(UPLOAD_PATH, upload, methods=["POST"]),
    Route("/jobs/uploads/{upload_id}", delete_upload, methods=["DELETE"]),
    Route("/jobs/{job_id}", show_job, methods=["GET"]),
    Route("/jobs/{job_id}", delete_job, methods=["DELETE"]),
    Route("/jobs/{job_id}/cancel", cancel_job, methods=["POST"]),
    Route("/jobs/{job_id}/outputs/{name:path}", job_output, methods=["GET"]),
]


@dataclass(frozen=True)
class CheckedSubmission:
    """A submission the gate accepted: the body BentoML reads, and the job it becomes."""

    body: bytes
    request: JobRequest
    upload: Path | None
    place: Path
    """Its place among the unfinished jobs (JobStore.take_place), given back once the job is on disk."""


class JobGate:
    """ASGI middleware in front of BentoML's task routes for the analyze task (see the module's doc)."""

    def __init__(self, app: ASGIApp, state: State):
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        plane = getattr(self.state, "plane", None)
        if scope["type"] != "http" or plane is None or not (path == TASK or path.startswith(TASK + "/")):
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            check_bearer(request.headers.get("authorization"), plane.settings.api_token, "'Authorization: Bearer <token>'")
            answer = await self._answer(request, path)
        except Exception as exc:
            await self._refuse(exc, path, scope, receive, send)
            return
        if isinstance(answer, Response):
            await answer(scope, receive, send)
            return
        # A checked submission: BentoML queues it, reading the body we already read.
        store, checked = jobs_of(self.state), answer
        creating: asyncio.Future | None = None

        async def make_job(task_id: str) -> None:
            nonlocal creating
            creating = asyncio.ensure_future(asyncio.to_thread(store.create, task_id, checked.request, checked.upload, checked.place))
            # create gives the place back once the job is on disk; if it failed before taking the
            # place over, its thread's end does, even if this call is cancelled meanwhile.
            creating.add_done_callback(lambda _: store.give_back_place(checked.place))
            await asyncio.shield(creating)

        holding = _HeldAnswer(send, make_job)
        try:
            await self.app(scope, _replay(answer.body), holding.send)
            if not holding.sent:
                raise RuntimeError("BentoML did not answer the submission")
        except Exception as exc:
            if holding.sent:  # the job's own run, after the answer: as BentoML would have it
                raise
            await self._refuse(exc, path, scope, receive, send)
        finally:
            if creating is None:  # BentoML refused it, or failed before its answer: no job will be made
                store.give_back_place(checked.place)

    async def _refuse(self, exc: Exception, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        """The JSON error answer for what the gate refused or could not do, counted in the metrics."""
        error = as_service_error(exc, log, path)
        self.state.plane.metrics.record_error("analyze", error.kind, error.status)
        await error_response(error)(scope, receive, send)

    async def _answer(self, request: Request, path: str) -> Response | CheckedSubmission:
        store = jobs_of(self.state)
        if path == TASK:
            raise BadRequest(f"analysis jobs run as tasks: POST {TASK}/submit, then GET {TASK}/status?task_id=...")
        if path == TASK + "/submit":
            if request.method != "POST":
                raise MethodNotAllowed(f"{request.method} is not allowed on {path}; POST the submission, a JSON object", "POST")
            media = media_type(request)
            if media != "application/json":
                # BentoML would read a form or text body as no fields at all: the gate's 200 would
                # become a task that fails on its own, with an id that never turns up.
                raise UnsupportedMedia(
                    f"a submission is a JSON object; send it with 'Content-Type: application/json', not {media or 'none'!r}"
                )
            what = f"a submission (a JSON object of at most {MAX_SUBMISSION_BYTES} bytes; upload recordings with POST /jobs/uploads)"
            chunks = body_chunks(request, MAX_SUBMISSION_BYTES, what, self.state.plane.settings.read_timeout_seconds)
            body = b"".join([chunk async for chunk in chunks])
            model = await self.state.plane.classifier()
            # In a thread: a path's check lists its folder and resolves every file in it (200,000
            # files took 8 s), which on the event loop would hold up every other request.
            submission = parse_json(body, "the submission")
            settings = self.state.plane.settings
            job, upload = await asyncio.to_thread(check_submission, submission, store, settings.analyze_root, model.labels)
            place = await _take_place(store, settings.max_unfinished_jobs)  # last: nothing after it fails
            return CheckedSubmission(body, job, upload, place)
        methods = _TASK_METHODS.get(path.removeprefix(TASK))
        if methods is None:
            raise NotFound(f"no route {path}; the analyze task has {TASK}/submit, /status, /get and /cancel")
        if request.method not in methods:
            raise MethodNotAllowed(f"{request.method} is not allowed on {path}; use {' or '.join(methods)}", ", ".join(methods))
        job_id = request.query_params.get("task_id", "")
        if not job_id:
            raise BadRequest(f"{path} needs ?task_id=, the id that {TASK}/submit answered")
        if not store.exists(job_id):
            raise NotFound(f"no job {job_id!r}")
        if path == TASK + "/status":
            with deleted_is_404(job_id):
                return JSONResponse(await view_off_loop(store, job_id))
        if path == TASK + "/get":
            with deleted_is_404(job_id):
                view = await view_off_loop(store, job_id)
            if view["state"] not in FINISHED:
                raise BadRequest(
                    f"job {job_id} is not finished yet ({view['state']}); GET {TASK}/status?task_id={job_id} says how far it is"
                )
            return JSONResponse(view)
        return await cancel(store, job_id, self.state.plane.metrics)  # /cancel: the last of _TASK_METHODS


async def _take_place(store: JobStore, max_unfinished: int) -> Path:
    """take_place_for_a_job off the event loop. Its thread cannot be stopped: cancelled meanwhile
    (the request's timeout, a shutdown), the place it takes is given back once it has one."""
    taking = asyncio.ensure_future(asyncio.to_thread(take_place_for_a_job, store, max_unfinished))
    try:
        return await asyncio.shield(taking)
    except asyncio.CancelledError:
        taking.add_done_callback(lambda done: done.cancelled() or done.exception() or store.give_back_place(done.result()))
        raise


_TASK_METHODS = {"/status": ("GET", "HEAD"), "/get": ("GET", "HEAD"), "/cancel": ("PUT", "POST")}
"""The methods of the task's routes after /submit (POST): BentoML's (cancel is its PUT), and POST for cancel too."""


class _HeldAnswer:
    """BentoML's answer to a submission, held back until the job it names exists.

    BentoML sends its answer and only then, after the body's last message, runs the task: making
    the job in between means the task finds it, and the client cannot ask about a task id before
    the job exists."""

    def __init__(self, send: Send, make_job: Callable[[str], Awaitable[None]]):
        self._send = send
        self._make_job = make_job
        self._start: Message | None = None
        self._body = b""
        self.sent = False

    async def send(self, message: Message) -> None:
        if self.sent or message["type"] not in ("http.response.start", "http.response.body"):
            await self._send(message)
            return
        if message["type"] == "http.response.start":
            self._start = message
            return
        self._body += message.get("body", b"")
        if message.get("more_body", False):
            return
        if self._start is None:
            raise RuntimeError("BentoML sent a body before its answer's status")
        if self._start["status"] == 200:
            await self._make_job(str(json.loads(self._body)["task_id"]))
        self.sent = True
        await self._send(self._start)
        await self._send({"type": "http.response.body", "body": self._body})


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the body was read whole: wait for the disconnect like a real receive
        return {"type": "http.disconnect"}

    return receive

"""The chorus API service: REST, KServe v2 over HTTP and over gRPC, thin over one data plane.

Run with `bentoml serve` from the repo root (bentofile.yaml names `service.service:Chorus`) or
`chorus up`. Pre-processing runs in these API workers; model calls go to the Engine service,
whose batchable methods batch across all requests and protocols. This module only declares the
BentoML service and wires its parts: the data plane (service/dataplane.py) over the engine
client (service/engine/client.py), the HTTP routes (service/adapters) and the gRPC server's
lifecycle.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from pathlib import Path
from typing import cast

import bentoml
import grpc
from threadpoolctl import threadpool_limits

from service.adapters import http_app
from service.adapters.connections import install_head_limits
from service.adapters.grpc.server import start_grpc_server
from service.adapters.health import ServingGate
from service.adapters.jobs import JobGate, job_view, jobs_of
from service.adapters.request_timeout import cancel_request_timers
from service.adapters.route_labels import label_metrics_by_route
from service.dataplane import DataPlane
from service.engine.client import BentoEngineClient
from service.engine_service import Engine
from service.heap import trim_periodically
from service.jobs.runner import JobRunner, adopt_orphans_periodically, expire_periodically
from service.jobs.store import JobsFolderError, default_home, open_job_store
from service.lifecycle import Drain, stop_with_the_server
from service.metrics import Metrics
from service.settings import ServiceSettings

# BentoML's server logging shows its own INFO lines and only WARNING from others: chorus' INFO
# lines (engine ready, gRPC listening, drains) belong in the same log.
logging.getLogger("chorus").setLevel(logging.INFO)
log = logging.getLogger("chorus.service")
settings = ServiceSettings()
install_head_limits(settings.header_timeout_seconds, settings.max_header_bytes)
label_metrics_by_route()
cancel_request_timers()
# The engine listens on loopback TCP, not a unix socket: on shutdown BentoML deletes the sockets'
# folder before it stops the workers, so a request still draining could not open a new engine
# connection (tests/e2e/test_lifecycle.py). Read by BentoML's supervisor, which imports this module.
os.environ.setdefault("BENTOML_NO_UDS", "1")
# BentoML mounts the app when this module is imported; each worker attaches its data plane at start.
app = http_app()


def http_listen_host() -> str | None:
    """The address BentoML's HTTP socket is bound to (bentoml serve --host): a worker inherits the
    socket as `--fd N` on its command line."""
    if "--fd" not in sys.argv:
        return None
    fd = int(sys.argv[sys.argv.index("--fd") + 1])
    with socket.socket(fileno=os.dup(fd)) as inherited:
        return str(inherited.getsockname()[0])


@bentoml.service(name="chorus", workers=settings.api_workers, traffic={"timeout": 300})
@bentoml.asgi_app(app, path="/")
class Chorus:
    engine = bentoml.depends(Engine)

    def __init__(self) -> None:
        stop_with_the_server()
        # Requests are featurized in parallel threads; a multi-threaded BLAS inside each of them
        # spins against the others (8 threads on 2 cores: 77 -> 205 log-mel calls/s with one BLAS thread).
        threadpool_limits(1, user_api="blas")
        metrics = Metrics()
        self.plane = DataPlane(BentoEngineClient(self.engine, metrics, settings.retry_after_seconds), settings, metrics)
        app.state.plane = self.plane
        # Without a usable jobs folder (a container's read-only file system) the server still
        # serves inference; the job routes answer 503 with the reason.
        self.runner: JobRunner | None = None
        try:
            app.state.jobs = open_job_store(Path(settings.jobs_home) if settings.jobs_home else default_home())
            self.runner = JobRunner(app.state.jobs, self.plane)
        except JobsFolderError as exc:
            app.state.jobs, app.state.jobs_off = None, str(exc)
            log.error("analysis jobs are off: %s", exc)
        self._grpc: grpc.aio.Server | None = None
        self._trimming: asyncio.Task[None] | None = None
        self._expiring: asyncio.Task[None] | None = None
        self._adopting: asyncio.Task[None] | None = None

    @bentoml.on_startup
    async def _start(self) -> None:
        Drain("API worker", self._drained, settings.drain_seconds, on_start=self._start_draining).install()
        self._trimming = asyncio.create_task(trim_periodically(settings.malloc_trim_seconds))
        if self.runner is not None:
            self._expiring = asyncio.create_task(
                expire_periodically(self.runner.store, settings.jobs_keep_hours, self.plane.metrics, settings.uploads_keep_hours)
            )
            self._adopting = asyncio.create_task(adopt_orphans_periodically(self.runner))
        if settings.grpc_port:
            host = settings.grpc_host or http_listen_host() or "0.0.0.0"
            self._grpc = await start_grpc_server(self.plane, host, settings.grpc_port)
        if self.runner is not None:
            self.runner.resume_all()

    @bentoml.task
    async def analyze(
        self,
        ctx: bentoml.Context,
        upload_id: str | None = None,
        path: str | None = None,
        formats: list[str] | None = None,
        min_confidence: float | None = None,
        top_k: int | None = 3,
        merge: bool = False,
        species: list[str] | None = None,
        exclude: list[str] | None = None,
        channels: str = "mix",
    ) -> dict:
        """Analyze a long recording (upload_id from POST /jobs/uploads) or a file or folder under
        CHORUS_ANALYZE_ROOT (path) into the tables of `chorus analyze`; see docs/jobs.md.

        The parameters are the submission's schema. JobGate (service.adapters.jobs) checked the body
        and made the job from it before BentoML queued this task, so the job's folder is what runs."""
        job_id = ctx.request.state.task_id
        store = jobs_of(app.state)  # JobGate answered 503 before BentoML queued it when jobs are off
        if not store.exists(job_id):  # made before BentoML's answer went out; deleted since
            raise RuntimeError(f"no job {job_id}: it was deleted before it started")
        assert self.runner is not None
        await self.runner.start(job_id)
        return job_view(store, job_id)

    def _start_draining(self) -> None:
        self.plane.start_draining()
        if self.runner is not None:
            self.runner.stop()

    async def _drained(self) -> bool:
        """Nothing in flight any more; then tell the engine, which waits for every API worker."""
        if self.plane.admission.in_flight:
            return False
        try:
            await self.engine.to_async.api_worker_drained()
        except Exception as exc:  # an engine already gone has nothing to wait for; anything else is only worth a line
            log.debug("telling the engine this worker drained failed: %r", exc)
        return True

    @bentoml.on_shutdown
    async def _stop_periodic_tasks(self) -> None:
        for task in (self._trimming, self._expiring, self._adopting):
            if task is not None:
                task.cancel()

    @bentoml.on_shutdown
    async def _stop_grpc(self) -> None:
        if self._grpc is not None:
            await self._grpc.stop(grace=5)  # in-flight calls finish first


# bentoml.service's type hints give back the class; at run time Chorus is a bentoml Service.
cast(bentoml.Service, Chorus).add_asgi_middleware(ServingGate, state=app.state)
cast(bentoml.Service, Chorus).add_asgi_middleware(JobGate, state=app.state)

"""The chorus API service: REST, KServe v2 over HTTP and over gRPC, thin over one data plane.

Run with `bentoml serve` from the repo root (bentofile.yaml names `service.service:Chorus`) or
`chorus up`. Pre-processing runs in these API workers; model calls go to the Engine service,
whose batchable methods batch across all requests and protocols. This module only declares the
BentoML service and wires its parts: the data plane (service/dataplane.py) over the engine
client (service/engine/client.py), the HTTP routes (service/adapters) and the gRPC server's
lifecycle.
"""

from __future__ import annotations

from typing import cast

import bentoml
from starlette.applications import Starlette
from threadpoolctl import threadpool_limits

from service.adapters import HTTP_ROUTES
from service.adapters.grpc.server import start_grpc_server
from service.adapters.health import ReadinessReasons
from service.dataplane import DataPlane
from service.engine.client import BentoEngineClient
from service.engine.service import Engine
from service.metrics import Metrics
from service.settings import ServiceSettings

settings = ServiceSettings()
# BentoML mounts the app when this module is imported; each worker attaches its data plane at start.
app = Starlette(routes=HTTP_ROUTES)


@bentoml.service(name="chorus", workers=settings.api_workers, traffic={"timeout": 300})
@bentoml.asgi_app(app, path="/")
class Chorus:
    engine = bentoml.depends(Engine)

    def __init__(self) -> None:
        # Requests are featurized in parallel threads; a multi-threaded BLAS inside each of them
        # spins against the others (8 threads on 2 cores: 77 -> 205 log-mel calls/s with one BLAS thread).
        threadpool_limits(1, user_api="blas")
        metrics = Metrics()
        self.plane = DataPlane(BentoEngineClient(self.engine, metrics, settings.retry_after_seconds), settings, metrics)
        app.state.plane = self.plane
        self._grpc = None

    @bentoml.on_startup
    async def _start_grpc(self) -> None:
        if settings.grpc_port:
            self._grpc = await start_grpc_server(self.plane, "0.0.0.0", settings.grpc_port)

    @bentoml.on_shutdown
    async def _stop_grpc(self) -> None:
        if self._grpc is not None:
            await self._grpc.stop(grace=5)  # in-flight calls finish first


# bentoml.service's type hints give back the class; at run time Chorus is a bentoml Service.
cast(bentoml.Service, Chorus).add_asgi_middleware(ReadinessReasons, state=app.state)

"""What the API service answers before any route: while it drains before stopping, 503 +
Retry-After to everything but the liveness probe and the metrics; a /readyz (and KServe's
/v2/health/ready) that says why it is not ready (BentoML's own answers 503 with a fixed text,
which leaves an operator looking for the one log line that names a missing or changed model
file); and a JSON 404 where BentoML's own file routes answer a plain-text one."""

from __future__ import annotations

from starlette.datastructures import State
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.adapters.http import WHERE_THE_ROUTES_ARE, ErrorJSONResponse, readiness_body
from service.errors import NotFound, ShuttingDown, error_body

READINESS = ("/readyz", "/v2/health/ready")
"""Readiness probes: not ready, they say why (draining too) in readiness_body's form."""
ALWAYS_OPEN = ("/livez", "/v2/health/live", "/metrics")
"""Answered while draining too: the process is alive (KServe's liveness probe included), and its
last metrics are worth a scrape."""
BENTOML_FILES = ("/static_content/", "/assets/")
"""BentoML's own file routes (its docs page's assets), whose missing files it answers in plain text."""


class ServingGate:
    """ASGI middleware on the API service, in front of BentoML's routes and chorus' own."""

    def __init__(self, app: ASGIApp, state: State):
        self.app = app
        self.state = state
        """The HTTP app's state, where each worker's BentoML service puts its data plane."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        plane = getattr(self.state, "plane", None)
        if scope["type"] != "http" or plane is None or scope["path"] in ALWAYS_OPEN:
            await self.app(scope, receive, send)
            return
        if scope["path"] in READINESS and scope["method"] in ("GET", "HEAD"):
            state = await plane.readiness()
            if not state.ready:
                # Draining: the load balancer is to close this connection and go elsewhere.
                headers = {"Retry-After": str(plane.settings.retry_after_seconds), "Connection": "close"} if plane.draining else None
                await JSONResponse(readiness_body(state), status_code=503, headers=headers)(scope, receive, send)
                return
        elif plane.draining:
            error = ShuttingDown("the server is shutting down; retry on another replica or later", plane.settings.retry_after_seconds)
            headers = {**error.headers, "Connection": "close"}
            kserve = scope["path"].startswith("/v2")  # the Open Inference Protocol's error shape there
            body = {"error": error.message, "type": error.kind} if kserve else error_body(error)
            await ErrorJSONResponse(body, status_code=error.status, headers=headers)(scope, receive, send)
            return
        elif scope["path"].startswith(BENTOML_FILES):
            await self.app(scope, receive, _json_not_found(scope, receive, send))
            return
        await self.app(scope, receive, send)


def _json_not_found(scope: Scope, receive: Receive, send: Send) -> Send:
    """`send`, but a 404 becomes chorus' JSON error: its start and body are held back, then replaced."""
    replaced = False

    async def relay(message: Message) -> None:
        nonlocal replaced
        if message["type"] == "http.response.start" and message["status"] == 404:
            replaced = True
        elif not replaced:
            await send(message)
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            error = NotFound(f"no file {scope['path']}; {WHERE_THE_ROUTES_ARE}")
            await ErrorJSONResponse(error_body(error), status_code=error.status)(scope, receive, send)

    return relay

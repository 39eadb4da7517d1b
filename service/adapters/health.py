"""/readyz that says why: BentoML's own answers 503 with a fixed text, which leaves an operator
looking for the one log line that names a missing or changed model file."""

from __future__ import annotations

from starlette.datastructures import State
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

READYZ = "/readyz"


class ReadinessReasons:
    """ASGI middleware on the API service: while the data plane is not ready, GET /readyz answers
    503 with {"ready": false, "reason": ...}; once it is, BentoML's own /readyz answers (it also
    checks the engine process)."""

    def __init__(self, app: ASGIApp, state: State):
        self.app = app
        self.state = state
        """The HTTP app's state, where each worker's BentoML service puts its data plane."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        plane = getattr(self.state, "plane", None)
        if scope["type"] == "http" and scope["path"] == READYZ and plane is not None:
            ready, reason = await plane.readiness()
            if not ready:
                await JSONResponse({"ready": False, "reason": reason}, status_code=503)(scope, receive, send)
                return
        await self.app(scope, receive, send)

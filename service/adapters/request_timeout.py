"""BentoML's request timeout (`traffic.timeout`) without its leak.

BentoML answers 504 when a request's response has not started within the timeout. Its middleware
(bentoml._internal.server.http.traffic.TimeoutMiddleware) schedules a timer per request and never
cancels it, so each request's timer and future stay alive for the whole timeout, answered or not:
20,000 requests to a missing path left 20,000 timers of ~0.5 KB for 300 s (a client at a few
thousand requests a second holds hundreds of MB). This one keeps the same contract and cancels its
timer once the response starts. BentoML imports the class from that module when each worker builds
its app, after importing the service; `cancel_request_timers` puts this one there.

A job's upload (POST /jobs/uploads) has no such timeout: it streams to disk for as long as the
recording takes to arrive (8 GiB at 100 Mbit/s is 11 minutes), paced by the read timeout of each
chunk instead, and answers only once the whole file is in.
"""

from __future__ import annotations

import asyncio

from bentoml._internal.server.http import traffic
from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send

from service.adapters.jobs import UPLOAD_PATH

UNTIMED = frozenset({("POST", UPLOAD_PATH)})
"""(method, path) of the requests the timeout leaves alone."""


class TimeoutMiddleware(traffic.TimeoutMiddleware):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or (scope.get("method"), scope["path"]) in UNTIMED:
            await self.app(scope, receive, send)
            return
        started = asyncio.Event()

        async def send_and_mark(message: Message) -> None:
            started.set()
            await send(message)

        app = asyncio.ensure_future(self.app(scope, receive, send_and_mark))
        answering = asyncio.ensure_future(started.wait())
        try:
            await asyncio.wait({app, answering}, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            app.cancel()
            raise
        finally:
            answering.cancel()
        if not started.is_set() and not app.done():
            app.cancel()
            await JSONResponse({"error": f"Not able to process the request in {self.timeout} seconds"}, status_code=504)(
                scope, receive, send
            )
            return
        await app


def cancel_request_timers() -> None:
    traffic.TimeoutMiddleware = TimeoutMiddleware  # type: ignore[misc]

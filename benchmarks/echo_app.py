"""The HTTP floor under the overhead figure: a bare Starlette app on uvicorn (httptools, uvloop, as
chorus runs) that reads the request body and answers a small JSON, with no model and no BentoML.

Posting the same recording here and to chorus shows how much of the per-request overhead is just
the client, the socket and an ASGI server. Run: uvicorn benchmarks.echo_app:app
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


async def classify(request: Request) -> Response:
    return JSONResponse({"bytes": len(await request.body())})


async def ready(request: Request) -> Response:
    return Response(status_code=200)


app = Starlette(routes=[Route("/classify", classify, methods=["POST"]), Route("/readyz", ready)])

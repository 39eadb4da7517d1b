"""Protocol adapters over the data plane: REST, KServe v2 over HTTP, KServe v2 over gRPC (grpc/)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Scope

from service.adapters import jobs, kserve_http, rest
from service.adapters.http import WHERE_THE_ROUTES_ARE, json_errors
from service.errors import MethodNotAllowed, NotFound

HTTP_ROUTES = [*rest.ROUTES, *kserve_http.ROUTES, *jobs.ROUTES]
"""Every HTTP route; the app serving them needs `app.state.plane` (a DataPlane) and `app.state.jobs` (a JobStore)."""


@json_errors
async def no_route(request: Request) -> Response:
    """A path no route has (404) or a method its route does not take (405), as a JSON error like
    every other. A route, not an exception handler: BentoML mounts the app so that a path none of
    its routes matches never reaches it, and answers such paths with a plain-text "Not Found"."""
    allowed = sorted(
        {method for route in HTTP_ROUTES if route.matches(request.scope)[0] == Match.PARTIAL for method in route.methods or ()}
    )
    if allowed:
        allow = ", ".join(allowed)
        raise MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}; it takes {allow}", allow)
    raise NotFound(f"no route {request.url.path}; {WHERE_THE_ROUTES_ARE}")


BENTOML_PATHS = ("/healthz", "/livez", "/readyz", "/metrics", "/schema.json", "/docs.json", "/static_content/", "/assets/")
"""Paths BentoML answers itself, some from routes it adds after the app's: left to it."""


class _EveryOtherPath(Route):
    takes_every_path = True
    """Not a route of its own in the metrics' labels (service/adapters/route_labels.py)."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope.get("path", "").startswith(BENTOML_PATHS):
            return Match.NONE, {}
        return super().matches(scope)


def http_app() -> Starlette:
    """The HTTP adapters as one app: every route, then one that takes every other path and method
    but BentoML's own."""
    everything = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"]
    return Starlette(routes=[*HTTP_ROUTES, _EveryOtherPath("/{path:path}", no_route, methods=everything)])

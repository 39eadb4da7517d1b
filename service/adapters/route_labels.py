"""BentoML's HTTP metrics labelled by route, not by path.

BentoML's traffic middleware (RunnerTrafficMetricsMiddleware, the one its services of the new
SDK get) labels `bentoml_service_request_total` and `bentoml_service_request_duration_seconds`
with the request's path. Every distinct path is a new
series that the process keeps for ever: a client requesting random paths (3,000 took 10 s) grew
/metrics from 276 KB to 12.6 MB and the worker by 200 MB, until a scrape took longer than
Prometheus waits; each job's URLs (/jobs/<id>/outputs/...) added series too. Here the label is
the route's template (`/jobs/{job_id}/outputs/{name:path}`), and every path no route has is
`unmatched`: a bounded set.

BentoML builds its middleware from the class in its instruments module when each worker starts
its HTTP app, after importing the service; `label_metrics_by_route` puts this subclass there.
BentoML is pinned (pyproject.toml), and tests/e2e/test_metrics.py checks the labels on the
served app.
"""

from __future__ import annotations

from typing import Any

from bentoml._internal.server.http import instruments
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Receive, Scope, Send

UNMATCHED = "unmatched"
_REAL_PATH = "chorus.real_path"


def route_label(scope: Scope) -> str:
    """The template of the route that takes this request (its method aside), or UNMATCHED."""
    for route in getattr(scope.get("app"), "routes", ()):
        label = _label(route, scope, "")
        if label is not None:
            return label
    return UNMATCHED


def _label(route: BaseRoute, scope: Scope, prefix: str) -> str | None:
    if getattr(route, "takes_every_path", False):  # chorus' JSON 404/405 route
        return None
    match, child = route.matches(scope)
    if match is Match.NONE:
        return None
    if isinstance(route, Mount):
        inner = {**scope, **child}
        for nested in route.routes:
            label = _label(nested, inner, prefix + route.path)
            if label is not None:
                return label
        return None
    return prefix + str(getattr(route, "path", UNMATCHED))


class _RealPath:
    """Gives the apps inside the metrics middleware the request's real path back."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if _REAL_PATH in scope:
            scope = {**scope, "path": scope[_REAL_PATH]}
            del scope[_REAL_PATH]
        await self.app(scope, receive, send)


class RouteLabelledTrafficMetrics(instruments.RunnerTrafficMetricsMiddleware):
    def __init__(self, app: ASGIApp, **options: Any):
        super().__init__(_RealPath(app), **options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] != "/metrics":
            scope = {**scope, "path": route_label(scope), _REAL_PATH: scope["path"]}
        await super().__call__(scope, receive, send)


def label_metrics_by_route() -> None:
    instruments.RunnerTrafficMetricsMiddleware = RouteLabelledTrafficMetrics  # type: ignore[assignment,misc]

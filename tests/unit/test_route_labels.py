"""Route templates as the HTTP metrics' labels (service/adapters/route_labels.py), over the app as BentoML mounts it."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from service.adapters import http_app
from service.adapters.route_labels import UNMATCHED, route_label


def _ok(request):
    return PlainTextResponse("ok")


# BentoML's app: its own routes, chorus' app mounted at "/", a task's routes.
BENTOML_APP = Starlette(routes=[Route("/readyz", _ok), Route("/analyze/submit", _ok, methods=["POST"]), Mount("/", app=http_app())])


@pytest.mark.parametrize(
    "method, path, label",
    [
        ("POST", "/classify", "/classify"),
        ("GET", "/classify", "/classify"),  # a method the route does not take is still that route
        ("GET", "/jobs/3f2a/outputs/raven/a.txt", "/jobs/{job_id}/outputs/{name:path}"),
        ("POST", "/v2/models/birdcall/versions/7/infer", "/v2/models/{name}/versions/{version}/infer"),
        ("GET", "/readyz", "/readyz"),
        ("POST", "/analyze/submit", "/analyze/submit"),
        ("GET", "/no/such/path", UNMATCHED),
        ("GET", "/../../etc/passwd", UNMATCHED),
    ],
)
def test_the_label_is_the_route_template(method, path, label):
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "app": BENTOML_APP, "headers": []}
    assert route_label(scope) == label

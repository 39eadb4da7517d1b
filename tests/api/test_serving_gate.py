"""The API service's outer middleware (service/adapters/health.py) over a stand-in for BentoML's own routes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from types import SimpleNamespace

import httpx
import pytest
from starlette.datastructures import State
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from service.adapters.health import ServingGate
from tests.api.conftest import http_app

pytestmark = pytest.mark.anyio


async def bentoml_files(scope: Scope, receive: Receive, send: Send) -> None:
    """As Starlette's StaticFiles answers: a file, or a plain-text 404 (here sent in two body parts)."""
    if scope["path"].endswith("/there.css"):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/css")]})
        await send({"type": "http.response.body", "body": b"body {}"})
        return
    await send({"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"text/plain"), (b"content-length", b"9")]})
    await send({"type": "http.response.body", "body": b"Not ", "more_body": True})
    await send({"type": "http.response.body", "body": b"Found"})


@pytest.fixture
async def http():
    state = State()
    state.plane = SimpleNamespace(draining=False)
    app = ServingGate(bentoml_files, state=state)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://chorus") as client:
        yield client


@pytest.mark.parametrize("path", ["/static_content/nope.js", "/assets/deep/nope.png"])
async def test_a_missing_bentoml_file_is_a_json_404(http, path):
    response = await http.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == {
        "type": "not_found",
        "status": 404,
        "message": f"no file {path}; the routes are listed in /openapi.json, and the page at / uses them",
    }


async def test_a_file_that_is_there_and_other_paths_pass_unchanged(http):
    found = await http.get("/static_content/there.css")
    assert (found.status_code, found.text, found.headers["content-type"]) == (200, "body {}", "text/css")
    elsewhere = await http.get("/somewhere/else")  # chorus' own routes answer their 404s in JSON already
    assert (elsewhere.status_code, elsewhere.text) == (404, "Not Found")


@pytest.mark.parametrize(("path", "status"), [("/livez", 200), ("/v2/health/live", 200), ("/metrics", 200), ("/classify", 503)])
async def test_while_draining_only_liveness_and_metrics_answer(path, status):
    """A liveness probe that failed while the pod drains would have it killed before its requests finish."""

    async def alive(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    state = State()
    state.plane = SimpleNamespace(draining=True, settings=SimpleNamespace(retry_after_seconds=1))
    transport = httpx.ASGITransport(app=ServingGate(alive, state=state))
    async with httpx.AsyncClient(transport=transport, base_url="http://chorus") as client:
        assert (await client.get(path)).status_code == status


# The gate over the real HTTP adapters and data plane (fake engine), as the service mounts them.


def with_bentoml_probes(app: ASGIApp) -> ASGIApp:
    """BentoML answers /livez and /readyz itself, from routes chorus' app leaves to it: stand-ins."""

    async def outer(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in ("/livez", "/readyz"):
            await PlainTextResponse("\n")(scope, receive, send)
            return
        await app(scope, receive, send)

    return outer


@pytest.fixture
async def served(plane, store) -> AsyncIterator[httpx.AsyncClient]:
    app = http_app(plane, store)
    transport = httpx.ASGITransport(app=ServingGate(with_bentoml_probes(app), state=app.state))
    async with httpx.AsyncClient(transport=transport, base_url="http://chorus") as client:
        yield client


def kserve_infer_body() -> str:
    waveform = [0.0] * (16_000 * 3)
    return json.dumps({"inputs": [{"name": "waveform", "datatype": "FP32", "shape": [len(waveform)], "data": waveform}]})


def refused_while_draining(response: httpx.Response, plane) -> None:
    """503, told when to retry, and the connection closed: the client's next try goes to a new
    connection, which the load balancer can send to another replica."""
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == str(plane.settings.retry_after_seconds)
    assert response.headers["connection"] == "close"


async def test_draining_fails_readiness_saying_why_while_liveness_holds(served, plane, store):
    """Readiness must fail as soon as the drain starts, so the endpoints stop sending traffic; liveness
    must not, or the kubelet would kill the pod before what is in flight finishes."""
    assert (await served.get("/readyz")).status_code == 200
    assert (await served.get("/v2/health/ready")).json() == {"ready": True}
    plane.start_draining()

    for probe in ("/readyz", "/v2/health/ready"):  # the same answer from both, and from the KServe route itself
        answer = await served.get(probe)
        refused_while_draining(answer, plane)
        assert answer.json() == {"ready": False, "reason": "the server is shutting down", "permanent": False}
    # The KServe route's own answer, where no gate stands in front (gRPC's ServerReady asks the same plane).
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=http_app(plane, store)), base_url="http://chorus") as bare:
        ungated = await bare.get("/v2/health/ready")
    assert ungated.status_code == 503
    assert ungated.json() == {"ready": False, "reason": "the server is shutting down", "permanent": False}

    assert (await served.get("/livez")).status_code == 200
    live = await served.get("/v2/health/live")
    assert (live.status_code, live.json()) == (200, {"live": True})


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v2/models/birdcall/infer"), ("POST", "/v2/models/birdcall/versions/b1/infer"), ("GET", "/v2/models/birdcall")],
)
async def test_while_draining_kserve_paths_answer_in_the_kserve_error_shape(served, plane, engine, method, path):
    """KServe clients (tritonclient) read 'error' as the message string: chorus' nested error object
    there would surface as a dict where they expect text."""
    content = kserve_infer_body() if method == "POST" else None
    assert (await served.request(method, path, content=content)).status_code == 200  # open before the drain
    calls = len(engine.calls)
    plane.start_draining()

    response = await served.request(method, path, content=content)
    refused_while_draining(response, plane)
    body = response.json()
    assert body == {"error": body["error"], "type": "shutting_down"}
    assert isinstance(body["error"], str) and "shutting down" in body["error"]
    assert len(engine.calls) == calls  # refused before any of it reached the engine


async def test_while_draining_rest_routes_answer_in_the_service_error_shape(served, plane, engine, wav):
    """REST clients get chorus' one error shape ({"error": {type, status, message, ...}}), KServe's only under /v2."""
    assert (await served.post("/classify", content=wav)).status_code == 200  # open before the drain
    calls = len(engine.calls)
    plane.start_draining()

    response = await served.post("/classify", content=wav)
    refused_while_draining(response, plane)
    error = response.json()["error"]
    assert (error["type"], error["status"], error["retry_after_seconds"]) == ("shutting_down", 503, plane.settings.retry_after_seconds)
    assert "shutting down" in error["message"]
    assert len(engine.calls) == calls

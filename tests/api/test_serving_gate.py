"""The API service's outer middleware (service/adapters/health.py) over a stand-in for BentoML's own routes."""

from __future__ import annotations

from types import SimpleNamespace

import httpx
import pytest
from starlette.datastructures import State
from starlette.types import Receive, Scope, Send

from service.adapters.health import ServingGate

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

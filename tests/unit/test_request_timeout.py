"""service/adapters/request_timeout.py: BentoML's 504-before-the-answer-starts, without a timer per request left behind."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from bentoml._internal.server.http import traffic
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

from service.adapters.jobs import UPLOAD_PATH
from service.adapters.request_timeout import TimeoutMiddleware

pytestmark = pytest.mark.anyio


async def quick(request):
    return PlainTextResponse("ok")


async def never(request):
    await asyncio.Event().wait()


async def slow_stream(request):
    async def chunks():
        yield b"started "
        await asyncio.sleep(0.3)  # past the timeout, after the answer began: not a 504
        yield b"and finished"

    return StreamingResponse(chunks())


async def slow_upload(request):
    await asyncio.sleep(0.2)  # a recording still arriving, past the timeout
    return PlainTextResponse("stored")


APP = Starlette(
    routes=[
        Route("/quick", quick),
        Route("/never", never),
        Route("/stream", slow_stream),
        Route(UPLOAD_PATH, slow_upload, methods=["POST"]),
    ]
)


def live_timers() -> int:
    return sum(not handle.cancelled() for handle in asyncio.get_running_loop()._scheduled)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("middleware", "left"), [(TimeoutMiddleware, 0), (traffic.TimeoutMiddleware, 50)])
async def test_answered_requests_leave_no_timer_behind(middleware, left):
    """BentoML's own middleware is the second case: the leak this module exists for."""
    transport = httpx.ASGITransport(app=middleware(APP, timeout=300))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        before = live_timers()
        for _ in range(50):
            assert (await client.get("/quick")).text == "ok"
        assert live_timers() - before == left


async def test_no_answer_within_the_timeout_is_a_504_and_the_work_is_cancelled():
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=TimeoutMiddleware(APP, timeout=0.05)), base_url="http://t") as client:
        response = await client.get("/never")
    assert response.status_code == 504 and "0.05 seconds" in response.json()["error"]


async def test_an_answer_that_started_in_time_may_take_longer():
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=TimeoutMiddleware(APP, timeout=0.1)), base_url="http://t") as client:
        response = await client.get("/stream")
    assert response.status_code == 200 and response.text == "started and finished"


async def test_a_jobs_upload_streams_for_as_long_as_it_takes():
    """8 GiB at 100 Mbit/s takes 11 minutes: the read timeout of each chunk paces it, not the 300 s."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=TimeoutMiddleware(APP, timeout=0.05)), base_url="http://t") as client:
        assert (await client.post(UPLOAD_PATH)).text == "stored"
        assert (await client.get("/never")).status_code == 504

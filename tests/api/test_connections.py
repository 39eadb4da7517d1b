"""The HTTP protocol's own limits (service/adapters/connections.py) on a real uvicorn server in-process:
a request head that is too slow or too large, and malformed HTTP, each answered in JSON."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from service.adapters.connections import LimitedHeadProtocol

pytestmark = pytest.mark.anyio


class Limited(LimitedHeadProtocol):  # the test's own limits, not the process-wide ones
    header_timeout_seconds = 0.5
    max_head_bytes = 8 * 1024


async def echo_size(request: Request) -> JSONResponse:
    return JSONResponse({"bytes": len(await request.body())})


@pytest.fixture
async def port() -> AsyncIterator[int]:
    app = Starlette(routes=[Route("/", echo_size, methods=["POST"])])
    # Listening before the server starts: connections wait in the backlog until it accepts them.
    listening = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, http=Limited, log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve(sockets=[listening]))
    yield listening.getsockname()[1]
    server.should_exit = True
    await serving


async def exchange(port: int, *parts: bytes, pause: float = 0.0) -> tuple[int, dict, float]:
    """Send the parts (with a pause between them), then read the answer: (status, JSON body, seconds)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = asyncio.get_running_loop().time()
    try:
        for part in parts:
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(pause)
    except ConnectionError:  # the server closed while we were still sending
        pass
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), answer
    return int(head.split()[1]), json.loads(body), asyncio.get_running_loop().time() - started


async def test_a_head_past_its_limit_is_a_431(port):
    status, body, _ = await exchange(
        port, b"POST / HTTP/1.1\r\nhost: x\r\n", b"x-long: " + b"a" * 4096 + b"\r\n", b"x-more: " + b"b" * 8192
    )
    assert status == 431 and body["error"]["type"] == "header_too_large" and "8192 bytes" in body["error"]["message"]


async def test_a_long_query_string_is_a_431(port):
    status, _, _ = await exchange(port, b"POST /?q=" + b"a" * 20_000 + b" HTTP/1.1\r\n")
    assert status == 431


async def test_a_small_head_with_a_large_body_in_one_write_is_no_431(port):
    body = b"z" * 200_000
    status, answer, _ = await exchange(
        port, b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body) + body
    )
    assert status == 200 and answer == {"bytes": len(body)}


async def test_a_slow_head_is_a_408(port):
    status, body, seconds = await exchange(port, b"POST / HTTP/1.1\r\n", b"host: x\r\n", pause=0.3)
    assert status == 408 and body["error"]["type"] == "request_timeout" and seconds < 3


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nabc\r\n",
        b"NOT AN HTTP REQUEST\r\n\r\n",
    ],
)
async def test_malformed_http_is_a_json_400(port, request_bytes):
    status, body, _ = await exchange(port, request_bytes)
    assert status == 400 and "malformed HTTP request" in body["error"]["message"]


async def test_requests_with_large_bodies_on_one_connection_are_no_431(port):
    """A whole request (head and a body past the head's limit) in one read, again and again."""
    body = b"z" * 100_000
    one = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % len(body) + body
    last = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body) + body
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for request in (one, one, last):
        writer.write(request)
        await writer.drain()
        await asyncio.sleep(0.05)
    answers = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert answers.count(b"HTTP/1.1 200") == 3 and b"431" not in answers, answers[:300]

"""Limits on a request's head, and JSON answers for what uvicorn refuses before any route.

uvicorn waits for a request's head as long as a client cares to take, and buffers it without a
bound: a client sending a byte a second holds a connection (and, many times over, the server)
without end, and one sending a 64 MiB header makes the worker hold it. BentoML builds the uvicorn
config itself, so the protocol is chosen the one way uvicorn allows: its "auto" entry names this
class, which closes a connection whose head is not complete in time (408) or grows past its
limit (431). What uvicorn itself refuses as malformed HTTP (Content-Length with
Transfer-Encoding, a bad chunk size, a broken request line) gets a JSON body too, as every other
client error does. Bodies have their own limits (service/adapters/http.py, body_chunks).
"""

from __future__ import annotations

import asyncio
import json
import logging

import uvicorn.config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("chorus.http")


def _answer(status: int, reason: str, kind: str, message: str) -> bytes:
    """A whole HTTP/1.1 answer that closes the connection, with chorus' JSON error body."""
    body = json.dumps({"error": {"type": kind, "status": status, "message": message}}).encode()
    head = f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {len(body)}\r\n\r\n"
    return head.encode() + body


class LimitedHeadProtocol(HttpToolsProtocol):
    header_timeout_seconds = 10.0
    """Longest time from a connection (or the start of its next request) to the end of the head."""
    max_head_bytes = 64 * 1024
    """Most bytes a connection may send while a request's head is incomplete (line and headers)."""

    _head_timer: asyncio.TimerHandle | None = None
    _in_head = True
    _head_bytes = 0
    _heads_complete = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        in_head, heads_before = self._in_head, self._heads_complete
        super().data_received(data)
        # Counted only when the read started and ended inside one head: a read that completes a
        # head may carry a large body (a whole request, even) after it, and one that ends a body
        # may start the next head. httptools buffers an incomplete head, so this bounds what it
        # holds to the limit and two reads.
        if in_head and self._heads_complete == heads_before and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                log.info("closing a connection whose request head passed %d bytes", self.max_head_bytes)
                message = f"the request's head (its line and headers) passes {self.max_head_bytes} bytes, the limit"
                self._close_with(_answer(431, "Request Header Fields Too Large", "header_too_large", message))

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        self._in_head = False
        self._heads_complete += 1
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes = True, 0  # the next request on this connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to malformed HTTP (text/plain there), in JSON."""
        message = (
            "malformed HTTP request: check the request line, that Content-Length is one non-negative number and not sent"
            " with Transfer-Encoding, and the chunk sizes of a chunked body"
        )
        self._close_with(_answer(400, "Bad Request", "bad_request", message))

    def _close_with(self, answer: bytes) -> None:
        self._disarm()
        self.transport.write(answer)
        self.transport.close()

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.header_timeout_seconds, self._expire)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _expire(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            log.info("closing a connection whose request head took over %g s", self.header_timeout_seconds)
            message = f"the request's head (its line and headers) did not arrive within {self.header_timeout_seconds:g} s"
            self._close_with(_answer(408, "Request Timeout", "request_timeout", message))


def install_head_limits(timeout_seconds: float, max_bytes: int) -> None:
    """Make uvicorn's default ("auto") HTTP protocol the one with a head timeout and size limit."""
    LimitedHeadProtocol.header_timeout_seconds = timeout_seconds
    LimitedHeadProtocol.max_head_bytes = max_bytes
    uvicorn.config.HTTP_PROTOCOLS["auto"] = f"{__name__}:LimitedHeadProtocol"

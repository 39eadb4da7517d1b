"""A header timeout for the HTTP server.

uvicorn waits for a request's head as long as a client cares to take: a client sending a byte a
second holds a connection (and, many times over, the server) without end. BentoML builds the
uvicorn config itself, so the protocol is chosen the one way uvicorn allows: its "auto" entry
names this class, which closes a connection whose request head is not complete in time (408).
Bodies have their own timeout between chunks (service/adapters/http.py, read_body).
"""

from __future__ import annotations

import asyncio
import logging

import uvicorn.config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("chorus.http")
_TIMEOUT_BODY = b"request head not received in time\n"
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\nconnection: close\r\n"
    + b"content-length: %d\r\n\r\n" % len(_TIMEOUT_BODY)
    + _TIMEOUT_BODY
)


class HeaderTimeoutProtocol(HttpToolsProtocol):
    header_timeout_seconds = 10.0
    """Longest time from a connection (or the start of its next request) to the end of the head."""

    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

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
            self.transport.write(_TIMEOUT_RESPONSE)
            self.transport.close()


def install_header_timeout(seconds: float) -> None:
    """Make uvicorn's default ("auto") HTTP protocol the one with a header timeout."""
    HeaderTimeoutProtocol.header_timeout_seconds = seconds
    uvicorn.config.HTTP_PROTOCOLS["auto"] = f"{__name__}:HeaderTimeoutProtocol"

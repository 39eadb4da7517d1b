"""What the HTTP adapters share: the data plane of the app, error responses, auth, body limits,
deadlines and parameter parsing."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import re
import time
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

from starlette.datastructures import FormData, Headers
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from service.admission import check_body_room, hold_body, off_loop
from service.auth import check_bearer
from service.dataplane import DataPlane, Readiness
from service.errors import (
    BadRequest,
    ClientClosedRequest,
    InvalidParameter,
    PayloadTooLarge,
    RequestTimeout,
    ServiceError,
    as_service_error,
    error_body,
)

MAX_FORM_FIELDS = 20
"""Most fields of a multipart body besides its files."""
MAX_FIELD_BYTES = 64 * 1024
"""Largest text field of a multipart body (the options are short)."""

WHERE_THE_ROUTES_ARE = "the routes are listed in /openapi.json, and the page at / uses them"
"""Said by every 404 for a path: chorus' own, and BentoML's file routes' (adapters.health)."""

log = logging.getLogger("chorus.http")
Handler = Callable[[Request], Awaitable[Response]]
N = TypeVar("N", int, float)


def readiness_body(state: Readiness) -> dict[str, Any]:
    """/readyz's and KServe's ready route's JSON. `permanent`: no wait will make it ready (the models
    failed to load), so a client waiting for it can stop at once."""
    return {"ready": True} if state.ready else {"ready": False, "reason": state.reason, "permanent": state.for_good}


def plane_of(request: Request) -> DataPlane:
    """The data plane this worker serves (set on the app by the BentoML service at start)."""
    return request.app.state.plane


class ErrorJSONResponse(JSONResponse):
    """An error's JSON body, in ASCII: a message that echoes what a client sent renders whatever it
    holds (a lone surrogate, valid in JSON, has no UTF-8, and would turn a 4xx into a bare 500)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def error_response(exc: ServiceError) -> JSONResponse:
    return ErrorJSONResponse(error_body(exc), status_code=exc.status, headers=exc.headers)


def kserve_error_response(exc: ServiceError) -> JSONResponse:
    """The Open Inference Protocol's error shape: 'error' is the message string (tritonclient reads it so)."""
    body = {"error": exc.message, "type": exc.kind, **exc.details}
    return ErrorJSONResponse(body, status_code=exc.status, headers=exc.headers)


def _json_errors(handler: Handler, respond: Callable[[ServiceError], JSONResponse]) -> Handler:
    route = handler.__name__

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except HTTPException as exc:  # raised by Starlette itself: a client's mistake unless it says otherwise
            error = _from_http_exception(exc) if exc.status_code < 500 else as_service_error(exc, log, request.url.path)
        except Exception as exc:
            error = as_service_error(exc, log, f"{request.method} {request.url.path}")
        plane = getattr(request.app.state, "plane", None)
        if plane is not None:
            plane.metrics.record_error(route, error.kind, error.status)
        return respond(error)

    return wrapped


def _from_http_exception(exc: HTTPException) -> ServiceError:
    error = BadRequest(str(exc.detail))
    error.status = exc.status_code
    return error


def json_errors(handler: Handler) -> Handler:
    """Map ServiceError to its status with a JSON body; anything unexpected is a JSON 500, logged."""
    return _json_errors(handler, error_response)


def kserve_errors(handler: Handler) -> Handler:
    """As json_errors, in the KServe v2 error shape."""
    return _json_errors(handler, kserve_error_response)


def authorize(request: Request) -> None:
    """When an API token is configured, inference routes need 'Authorization: Bearer <token>'."""
    token = plane_of(request).settings.api_token
    check_bearer(request.headers.get("authorization"), token, "'Authorization: Bearer <token>'")


def media_type(request: Request) -> str:
    """The Content-Type without its parameters, lower case (media types are case-insensitive)."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def has_body(request: Request) -> bool:
    """Whether the request says a body follows (a non-zero Content-Length, or chunked)."""
    length = request.headers.get("content-length")
    return "transfer-encoding" in request.headers or (length is not None and length.strip() not in ("", "0"))


def once_each(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Parameters as a dict, each name given once: a second value of a name would otherwise win or
    lose without a word."""
    repeated = sorted(name for name, n in Counter(name for name, _ in pairs).items() if n > 1)
    if repeated:
        raise InvalidParameter(f"parameter(s) {repeated} given more than once; send each once")
    return dict(pairs)


def check_known(params: Mapping[str, Any], known: tuple[str, ...], route: str) -> None:
    """422 for a parameter the route does not take: a misspelt one would otherwise be ignored without a word."""
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise InvalidParameter(f"unknown parameter(s) {unknown}; {route} takes {list(known)}")


HEADER_INTEGER_DIGITS = 20
"""Longest byte count a length header may state: 20 digits pass any body limit."""


def header_integer(value: str) -> int | None:
    """A length header's value as a number; None unless it is 1-20 ASCII digits ("²".isdigit() is
    True but int() refuses it, and past 4,300 digits int() raises an error of its own)."""
    if value.isascii() and value.isdigit() and len(value) <= HEADER_INTEGER_DIGITS:
        return int(value)
    return None


def check_content_length(request: Request, limit: int) -> int | None:
    """The body's declared size (None: not declared as a number), 413 past `limit`."""
    length = request.headers.get("content-length")
    if length is None or not (length.isascii() and length.isdigit()):
        return None  # not a number: the byte count of the streamed body still holds the limit
    stated = header_integer(length)
    if stated is None or stated > limit:
        raise PayloadTooLarge(f"the request body has {length[:24]} bytes; at most {limit} are accepted", max_bytes=limit)
    return stated


async def body_chunks(
    request: Request,
    limit: int,
    what: str = "the request body",
    read_timeout: float | None = None,
    in_memory: bool = True,
    min_rate: float | None = None,
) -> AsyncIterator[bytes]:
    """The body as it arrives: 413 as soon as it passes `limit` bytes (whatever Content-Length
    said), 408 when no part of it arrives for the read timeout (the settings' unless given), 499
    when the client goes away first, and 408 when, after the read timeout, it has arrived at under
    `min_rate` bytes a second on average (None: any rate). in_memory: the caller keeps the chunks (not a stream to disk),
    so they count against the worker's bytes of bodies in flight (service.admission.hold_body) as
    they arrive, a declared length that would not fit being refused before any of it is read."""
    declared = check_content_length(request, limit)
    if in_memory and declared:
        check_body_room(declared)
    size = 0
    timeout = plane_of(request).settings.read_timeout_seconds if read_timeout is None else read_timeout
    started = time.monotonic()
    stream = request.stream()
    while True:
        try:
            async with asyncio.timeout(timeout):
                chunk = await anext(stream, None)
        except TimeoutError:
            raise RequestTimeout(f"no part of {what} arrived for {timeout:g} s; send it without pauses") from None
        except ClientDisconnect:
            raise ClientClosedRequest(f"the client closed the connection before {what} had arrived") from None
        if chunk is None:
            return
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"{what} passes {limit} bytes, the limit", max_bytes=limit)
        if in_memory:
            hold_body(len(chunk))
        if min_rate is not None and (elapsed := time.monotonic() - started) > timeout and size < min_rate * elapsed:
            raise RequestTimeout(
                f"{what} arrives at {size / elapsed:.0f} bytes/s on average, under the {min_rate:g} accepted; send it over a faster link"
            )
        yield chunk


AUDIO_BODY = "the audio file as the body or as multipart field 'audio'"


async def read_body(request: Request, limit: int, route: str, expected: str = AUDIO_BODY) -> bytes:
    """The raw body in memory, within `limit` bytes; `expected` says what to send when it is empty."""
    chunks = [chunk async for chunk in body_chunks(request, limit)]
    body = b"".join(chunks)
    if not body:
        raise BadRequest(f"the request body is empty; send {expected}")
    plane_of(request).metrics.body_bytes.labels(route).observe(len(body))
    return body


_BOUNDARY = re.compile(r'(?:^|;)\s*boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)
"""A multipart Content-Type's boundary parameter, quoted or not (not another parameter ending in "boundary")."""


async def read_form(request: Request, limit: int, max_files: int, route: str) -> FormData:
    """A multipart body, read within `limit` bytes as it streams in (chunked bodies too), then parsed.

    Starlette's own form reading spools file parts without a bound and raises its own HTTP errors:
    here the limit holds on the bytes received and a malformed body is a 400 that says why.
    """
    body = await read_body(request, limit, route)
    # Searching and parsing a body of max_upload_bytes takes tenths of a second: on a thread, so
    # other requests (health probes among them) do not wait for it.
    return await off_loop(_parse_form, request.headers, body, max_files)


def _parse_form(headers: Headers, body: bytes, max_files: int) -> FormData:
    found = _BOUNDARY.search(headers.get("content-type", ""))
    boundary = (found.group(1) or found.group(2)).encode("latin-1") if found else None
    if boundary and b"--" + boundary + b"--" not in body:
        # python-multipart parses a cut body without a word: its file field would be "missing". The
        # close delimiter need not end the body: padding and an epilogue may follow (RFC 2046 5.1.1).
        raise BadRequest("malformed multipart body: it ends before its closing boundary (cut short?)", max_files=max_files)

    async def stream() -> AsyncGenerator[bytes, None]:
        yield body

    parser = MultiPartParser(headers, stream(), max_files=max_files, max_fields=MAX_FORM_FIELDS, max_part_size=MAX_FIELD_BYTES)
    try:
        # Starlette's parser is a coroutine that awaits nothing but its one chunk and the spooling
        # of file parts: it runs to its end on this thread's own loop.
        return asyncio.run(parser.parse())
    except (MultiPartException, ValueError) as exc:  # python-multipart's parse errors are ValueErrors
        raise BadRequest(f"malformed multipart body: {getattr(exc, 'message', exc)}", max_files=max_files) from None


def parse_json(raw: bytes, what: str) -> Any:
    """Strict JSON: no NaN or Infinity (not JSON, and numbers that overflow later), no runaway nesting."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not a JSON value")

    try:
        return json.loads(raw, parse_constant=refuse)
    except RecursionError:
        raise BadRequest(f"{what} nests too deeply") from None
    except ValueError as exc:  # UnicodeDecodeError included
        raise BadRequest(f"{what} is not valid JSON: {exc}") from None


def deadline_seconds(request: Request) -> float:
    """X-Request-Timeout (seconds) can shorten, never lengthen, the server's default deadline."""
    raw = request.headers.get("x-request-timeout")
    if raw is None:
        return plane_of(request).deadline(None)
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise InvalidParameter(f"X-Request-Timeout must be a positive number of seconds, got {raw!r}")
    return plane_of(request).deadline(value)


_ABSENT = object()
# What a query's numbers look like: ASCII digits only (int() and float() also take "1_0" and other
# scripts' digits, which no client means to send), and no more of them than a 64-bit integer has
# (int() refuses a string of over 4,300 digits with its own error).
_INTEGER = re.compile(r"[+-]?[0-9]{1,19}")
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def _given(params: Mapping[str, Any], name: str) -> Any:
    """The parameter's value, or _ABSENT when it was not sent (an empty query value counts as not sent)."""
    raw = params.get(name, _ABSENT)
    return _ABSENT if raw == "" else raw


def _as_int(raw: Any) -> int | None:
    """An integer from JSON (int, or a float with no fraction) or a query string; None for anything else."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float):
        return int(raw) if raw.is_integer() else None  # is_integer() is False for inf and NaN
    if isinstance(raw, str):
        text = raw.strip()
        return int(text) if _INTEGER.fullmatch(text) else None
    return None


def _as_float(raw: Any) -> float | None:
    """A finite number from JSON or a query string; None for anything else."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        return None
    if isinstance(raw, str) and not _DECIMAL.fullmatch(raw.strip()):
        return None
    try:
        value = float(raw)
    except (ValueError, OverflowError):
        return None
    return value if math.isfinite(value) else None


def _parse_number(params: Mapping[str, Any], name: str, default: N, low: N, high: N, cast: Callable[[Any], N | None], kind: str) -> N:
    raw = _given(params, name)
    if raw is _ABSENT:
        return default
    value = cast(raw)
    if value is None:
        raise InvalidParameter(f"{name} must be {kind} from {low} to {high}, got {raw!r}")
    if not low <= value <= high:
        raise InvalidParameter(f"{name} must be from {low} to {high}, got {value}")
    return value


def parse_int(params: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    return _parse_number(params, name, default, low, high, _as_int, "an integer")


def parse_float(params: Mapping[str, Any], name: str, default: float, low: float, high: float) -> float:
    return _parse_number(params, name, default, low, high, _as_float, "a number")


def parse_bool(params: Mapping[str, Any], name: str, default: bool) -> bool:
    raw = _given(params, name)
    if raw is _ABSENT:
        return default
    text = str(raw).lower() if isinstance(raw, (bool, int, str)) else ""
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise InvalidParameter(f"{name} must be true or false, got {raw!r}")


def parse_choice(params: Mapping[str, Any], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = _given(params, name)
    if raw is _ABSENT:
        return default
    if raw not in choices:
        raise InvalidParameter(f"{name} must be one of {', '.join(map(repr, choices))}, got {raw!r}")
    return raw

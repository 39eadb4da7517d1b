"""What every HTTP adapter shares: error responses, auth, body limits, deadlines, parameter parsing."""

from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from service.errors import BadRequest, InvalidParameter, PayloadTooLarge, ServiceError, Unauthorized, error_body
from service.settings import ServiceSettings

log = logging.getLogger("chorus.http")
Handler = Callable[[Request], Awaitable[Response]]


def error_response(exc: ServiceError) -> JSONResponse:
    return JSONResponse(error_body(exc), status_code=exc.status, headers=exc.headers)


def kserve_error_response(exc: ServiceError) -> JSONResponse:
    """The Open Inference Protocol's error shape: 'error' is the message string (tritonclient reads it so)."""
    body = {"error": exc.message, "type": exc.kind, **exc.details}
    return JSONResponse(body, status_code=exc.status, headers=exc.headers)


def _json_errors(handler: Handler, respond: Callable[[ServiceError], JSONResponse]) -> Handler:
    route = handler.__name__

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except ServiceError as exc:
            error = exc
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.url.path)
            error = ServiceError("internal error; the server log has the details")
        chorus = getattr(request.app.state, "chorus", None)
        if chorus is not None:
            chorus.metrics.record_error(route, error.kind, error.status)
        return respond(error)

    return wrapped


def json_errors(handler: Handler) -> Handler:
    """Map ServiceError to its status with a JSON body; anything unexpected is a JSON 500, logged."""
    return _json_errors(handler, error_response)


def kserve_errors(handler: Handler) -> Handler:
    """As json_errors, in the KServe v2 error shape."""
    return _json_errors(handler, kserve_error_response)


def authorize(request: Request, settings: ServiceSettings) -> None:
    """When an API token is configured, inference routes need 'Authorization: Bearer <token>'."""
    if not settings.api_token:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip(), settings.api_token):
        raise Unauthorized("missing or wrong API token; send 'Authorization: Bearer <token>'")


def check_content_length(request: Request, limit: int) -> None:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"the request body has {int(length)} bytes; at most {limit} are accepted", max_bytes=limit)


async def read_body(request: Request, limit: int, route: str) -> bytes:
    """The raw body, refused with 413 as soon as it passes `limit` bytes (whatever Content-Length said)."""
    body = await _read_body(request, limit)
    request.app.state.chorus.metrics.body_bytes.labels(route).observe(len(body))
    return body


async def _read_body(request: Request, limit: int) -> bytes:
    check_content_length(request, limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the request body passes {limit} bytes, the limit", max_bytes=limit)
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body:
        raise BadRequest("the request body is empty; send the audio file as the body or as multipart field 'audio'")
    return body


def deadline_seconds(request: Request, settings: ServiceSettings) -> float:
    """X-Request-Timeout (seconds) can shorten, never lengthen, the server's default deadline."""
    raw = request.headers.get("x-request-timeout")
    if raw is None:
        return settings.default_deadline_seconds
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise InvalidParameter(f"X-Request-Timeout must be a positive number of seconds, got {raw!r}")
    return min(value, settings.default_deadline_seconds)


def _parse_number(params: Any, name: str, default: Any, low: Any, high: Any, cast: type, kind: str) -> Any:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = cast(raw)
    except (TypeError, ValueError):
        raise InvalidParameter(f"{name} must be {kind} from {low} to {high}, got {raw!r}") from None
    if not low <= value <= high:
        raise InvalidParameter(f"{name} must be from {low} to {high}, got {value}")
    return value


def parse_int(params: Any, name: str, default: int, low: int, high: int) -> int:
    return _parse_number(params, name, default, low, high, int, "an integer")


def parse_float(params: Any, name: str, default: float, low: float, high: float) -> float:
    return _parse_number(params, name, default, low, high, float, "a number")


def parse_bool(params: Any, name: str, default: bool) -> bool:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    text = str(raw).lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise InvalidParameter(f"{name} must be true or false, got {raw!r}")

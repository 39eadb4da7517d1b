"""What the HTTP adapters share: the data plane of the app, error responses, auth, body limits,
deadlines and parameter parsing."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from service.auth import check_bearer
from service.dataplane import DataPlane
from service.errors import BadRequest, InvalidParameter, PayloadTooLarge, ServiceError, as_service_error, error_body

log = logging.getLogger("chorus.http")
Handler = Callable[[Request], Awaitable[Response]]
N = TypeVar("N", int, float)


def plane_of(request: Request) -> DataPlane:
    """The data plane this worker serves (set on the app by the BentoML service at start)."""
    return request.app.state.plane


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
        except Exception as exc:
            error = as_service_error(exc, log, f"{request.method} {request.url.path}")
        plane = getattr(request.app.state, "plane", None)
        if plane is not None:
            plane.metrics.record_error(route, error.kind, error.status)
        return respond(error)

    return wrapped


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


def check_content_length(request: Request, limit: int) -> None:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"the request body has {int(length)} bytes; at most {limit} are accepted", max_bytes=limit)


async def read_body(request: Request, limit: int, route: str) -> bytes:
    """The raw body, refused with 413 as soon as it passes `limit` bytes (whatever Content-Length said)."""
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
    plane_of(request).metrics.body_bytes.labels(route).observe(len(body))
    return body


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


def _parse_number(params: Mapping[str, Any], name: str, default: N, low: N, high: N, cast: type[N], kind: str) -> N:
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


def parse_int(params: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    return _parse_number(params, name, default, low, high, int, "an integer")


def parse_float(params: Mapping[str, Any], name: str, default: float, low: float, high: float) -> float:
    return _parse_number(params, name, default, low, high, float, "a number")


def parse_bool(params: Mapping[str, Any], name: str, default: bool) -> bool:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    text = str(raw).lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise InvalidParameter(f"{name} must be true or false, got {raw!r}")

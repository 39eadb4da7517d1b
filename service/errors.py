"""Request errors and their one mapping to HTTP: status code + a JSON body a user can act on."""

from __future__ import annotations

import logging
from typing import Any

from features import (
    ACCEPTED_FORMATS,
    AudioError,
    AudioTooLargeError,
    AudioTooLongError,
    CorruptAudioError,
    EmptyAudioError,
    InvalidSamplesError,
    UnsupportedFormatError,
)


class ServiceError(Exception):
    """An error with an HTTP status. `details` lands in the JSON body next to the message."""

    status = 500
    kind = "internal_error"

    def __init__(self, message: str, **details: Any):
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers: dict[str, str] = {}


class InternalError(ServiceError):
    """An exception no code path expected. Its text can hold internals, so clients get a fixed
    message and the log gets the traceback."""

    status, kind = 500, "internal_error"


class BadRequest(ServiceError):
    status, kind = 400, "bad_request"


class Unauthorized(ServiceError):
    status, kind = 401, "unauthorized"

    def __init__(self, message: str, **details: Any):
        super().__init__(message, **details)
        self.headers = {"WWW-Authenticate": "Bearer"}


class Forbidden(ServiceError):
    status, kind = 403, "forbidden"


class NotFound(ServiceError):
    status, kind = 404, "not_found"


class MethodNotAllowed(ServiceError):
    status, kind = 405, "method_not_allowed"

    def __init__(self, message: str, allow: str):
        """allow: the methods the path takes, for the Allow header."""
        super().__init__(message)
        self.headers["Allow"] = allow


class Conflict(ServiceError):
    status, kind = 409, "conflict"


class TooManyRequests(ServiceError):
    """A quota of things kept for clients (uploads waiting for a job, unfinished jobs) is full: it
    frees as clients submit, cancel or delete, not by waiting, so no Retry-After."""

    status, kind = 429, "too_many"


class PayloadTooLarge(ServiceError):
    status, kind = 413, "payload_too_large"


class UnsupportedMedia(ServiceError):
    status, kind = 415, "unsupported_media"


class InvalidParameter(ServiceError):
    status, kind = 422, "invalid_parameter"


class Overloaded(ServiceError):
    status, kind = 503, "overloaded"

    def __init__(self, message: str, retry_after: int, **details: Any):
        super().__init__(message, retry_after_seconds=retry_after, **details)
        self.headers = {"Retry-After": str(retry_after)}


class NotReady(Overloaded):
    kind = "not_ready"


class RequestTimeout(ServiceError):
    """The client stopped sending its body."""

    status, kind = 408, "request_timeout"


class ShuttingDown(Overloaded):
    """The server is draining before it stops: retry against another replica, or this one later."""

    kind = "shutting_down"


class JobsUnavailable(ServiceError):
    """Analysis jobs are off on this server (its jobs folder cannot be used); inference is not affected."""

    status, kind = 503, "jobs_unavailable"


class ModelsFailed(ServiceError):
    """The models failed to load (missing, changed or broken files): no retry helps until they are exported again."""

    status, kind = 503, "models_failed"


class EngineUnavailable(Overloaded):
    """The engine process cannot be reached (shutting down or restarting)."""

    kind = "engine_unavailable"


class DeadlineExceeded(ServiceError):
    status, kind = 504, "deadline_exceeded"


class ClientClosedRequest(ServiceError):
    """The client went away before its body arrived (nginx's 499): nobody reads the answer, and it
    is no server error, so it must not count as one (the error-rate alert) nor log a traceback."""

    status, kind = 499, "client_closed_request"


_AUDIO_STATUS: list[tuple[type[AudioError], type[ServiceError]]] = [
    (EmptyAudioError, BadRequest),
    (AudioTooLongError, PayloadTooLarge),
    (AudioTooLargeError, PayloadTooLarge),
    (UnsupportedFormatError, UnsupportedMedia),
    (CorruptAudioError, UnsupportedMedia),
    (InvalidSamplesError, UnsupportedMedia),
]


def from_audio_error(exc: AudioError, **details: Any) -> ServiceError:
    """Typed front-end errors -> HTTP errors, with the accepted formats in the body."""
    for audio_type, http_type in _AUDIO_STATUS:
        if isinstance(exc, audio_type):
            return http_type(str(exc), accepted_formats=list(ACCEPTED_FORMATS), **details)
    return UnsupportedMedia(str(exc), accepted_formats=list(ACCEPTED_FORMATS), **details)


def error_body(exc: ServiceError) -> dict[str, Any]:
    return {"error": {"type": exc.kind, "status": exc.status, "message": exc.message, **exc.details}}


def as_service_error(exc: Exception, log: logging.Logger, where: str) -> ServiceError:
    """What every protocol adapter answers for an exception: typed errors as they are; anything
    else an InternalError, logged here with its traceback."""
    if isinstance(exc, ServiceError):
        return exc
    log.error("unhandled error on %s", where, exc_info=exc)
    return InternalError("internal error; the server log has the details")

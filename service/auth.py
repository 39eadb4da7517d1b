"""The optional bearer token, checked the same way for every protocol."""

from __future__ import annotations

import hmac

from service.errors import Unauthorized


def check_bearer(credentials: str | None, token: str | None, how_to_send: str) -> None:
    """Raise Unauthorized unless `credentials` (an Authorization value) is 'Bearer <token>'.

    No token configured: everything passes. `how_to_send` completes the error message with where
    this protocol carries the token (an HTTP header, gRPC metadata).
    """
    if not token:
        return
    scheme, _, value = (credentials or "").partition(" ")
    # Bytes: compare_digest refuses str with non-ASCII characters (a 500 on a hostile header).
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        raise Unauthorized(f"missing or wrong API token; send {how_to_send}")

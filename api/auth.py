"""Who is calling: `Authorization: Bearer <api key>`, one role per key (SPEC §7)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import g, request

from api.errors import ApiError
from api.runtime import transaction
from billing.api_keys import role_for_key

F = TypeVar("F", bound=Callable[..., Any])


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def requires(*roles: str) -> Callable[[F], F]:
    """Let the request through only with a live key of one of `roles` (401 / 403 otherwise)."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            token = bearer_token()
            if token is None:
                raise ApiError(401, "unauthorized", "An API key is required (Bearer).")
            role = transaction(lambda session: role_for_key(session, token))
            if role is None:
                raise ApiError(401, "unauthorized", "The API key is unknown or revoked.")
            if role not in roles:
                raise ApiError(
                    403,
                    "forbidden",
                    f"This endpoint needs the {' or '.join(roles)} role.",
                    role=role,
                )
            g.role = role
            return view(*args, **kwargs)

        return guarded  # type: ignore[return-value]

    return decorate

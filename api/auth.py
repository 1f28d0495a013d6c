"""Who is calling: `Authorization: Bearer <api key>`, one role per key, or an end user's
HS256 token (SPEC §7)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

import flask_smorest
from cachetools import TTLCache
from flask import g, request

from api.errors import ApiError
from billing.access.api_keys import role_for_key
from billing.access.user_tokens import user_of_token
from billing.errors import InvalidUserToken
from infra.runtime import runtime, transaction

F = TypeVar("F", bound=Callable[..., Any])

# Key digest lookups are cached briefly per process: every SMS asks, and a revoked key stops
# working within this many seconds everywhere.
KEY_CACHE_SECONDS = 10
_roles: TTLCache[str, str | None] = TTLCache(maxsize=10_000, ttl=KEY_CACHE_SECONDS)
_roles_lock = threading.Lock()


def role_of(token: str) -> str | None:
    with _roles_lock:
        if token in _roles:
            return _roles[token]
    role = transaction(lambda session: role_for_key(session, token))
    if role is not None:  # unknown keys are not cached: a new key works at once
        with _roles_lock:
            _roles[token] = role
    return role


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


# The refusals every guarded endpoint can answer, documented once (components in create_app).
REFUSALS = {
    "400": {"$ref": "#/components/responses/BAD_REQUEST"},
    "401": {"$ref": "#/components/responses/UNAUTHORIZED"},
    "403": {"$ref": "#/components/responses/FORBIDDEN"},
}


def documented(security: str, roles: tuple[str, ...] = ()) -> Callable[[F], F]:
    """Record in the OpenAPI document how an endpoint is guarded: its security scheme, the
    roles it admits (`x-roles`) and its 401/403 answers."""
    responses = REFUSALS if roles else {k: v for k, v in REFUSALS.items() if k != "403"}
    extra: dict[str, Any] = {"x-roles": list(roles)} if roles else {}
    return flask_smorest.Blueprint.doc(  # type: ignore[no-any-return]
        security=[{security: []}], responses=responses, **extra
    )


def requires(*roles: str) -> Callable[[F], F]:
    """Let the request through only with a live key of one of `roles` (401 / 403 otherwise)."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            token = bearer_token()
            if token is None:
                raise ApiError(401, "unauthorized", "An API key is required (Bearer).")
            role = role_of(token)
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

        return documented("apiKey", roles)(cast(F, guarded))

    return decorate


def requires_user(view: F) -> F:
    """Let the request through only with a valid user token; the view gets `user_id` from the
    token's `sub`, never from the request, so a user can only ever read their own data."""

    @functools.wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        secret = runtime().config.user_token_secret
        token = bearer_token()
        if token is None:
            raise ApiError(401, "unauthorized", "A user token is required (Bearer).")
        if not secret:
            raise ApiError(401, "unauthorized", "User tokens are not enabled (USER_TOKEN_SECRET).")
        try:
            user_id = user_of_token(secret, token)
        except InvalidUserToken as error:
            raise ApiError(401, "invalid_token", error.message) from error
        return view(*args, user_id=user_id, **kwargs)

    return documented("userToken")(cast(F, guarded))

"""One client for the HTTP API in every test: `api.as_role("admin").post(path, body)` sends `body`
as JSON with that caller's `Authorization` header. A caller is an API-key role, an end user's
token, the cron secret, any other bearer or raw header, or nobody (no header at all)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.test import TestResponse

from billing.access.user_tokens import mint_user_token

Role = Literal["admin", "service", "accountant"]


class Caller:
    """Requests to the app as one caller. A JSON body, when given, is sent as `json=`; other
    keyword arguments (`query_string`, `data`, `content_type`, `headers`) go to Flask's test
    client unchanged, except that the caller's `Authorization` header is set over them."""

    def __init__(self, http: FlaskClient, authorization: str | None) -> None:
        self.http, self.authorization = http, authorization

    def __repr__(self) -> str:
        return f"Caller(Authorization={self.authorization!r})"

    def open(self, path: str, method: str = "GET", json: Any = None, **kwargs: Any) -> TestResponse:
        headers = dict(kwargs.pop("headers", None) or {})
        if self.authorization is not None:
            headers["Authorization"] = self.authorization
        if json is not None:
            kwargs["json"] = json
        return self.http.open(path, method=method, headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> TestResponse:
        return self.open(path, "GET", **kwargs)

    def post(self, path: str, json: Any = None, **kwargs: Any) -> TestResponse:
        return self.open(path, "POST", json, **kwargs)

    def put(self, path: str, json: Any = None, **kwargs: Any) -> TestResponse:
        return self.open(path, "PUT", json, **kwargs)

    def patch(self, path: str, json: Any = None, **kwargs: Any) -> TestResponse:
        return self.open(path, "PATCH", json, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> TestResponse:
        return self.open(path, "DELETE", **kwargs)


class ApiClient:
    """An app built for a test, its API keys by role (see `tests.conftest.build_app`), and the
    callers that speak to it. Each caller has a test client of its own, so threads may each
    take one."""

    def __init__(self, app: Flask, keys: dict[str, str]) -> None:
        self.app, self.keys = app, keys

    @property
    def runtime(self) -> Any:
        """What the app holds: configuration, engine, session factory, clock, extras."""
        return self.app.extensions["smsledger"]

    @property
    def sessions(self) -> sessionmaker[Session]:
        found: sessionmaker[Session] = self.runtime.sessions
        return found

    def as_role(self, role: Role) -> Caller:
        """The API key made for `role` when the app was built."""
        return self.bearer(self.keys[role])

    def as_user(self, user_id: str, ttl: timedelta = timedelta(hours=1)) -> Caller:
        """A token for `user_id`, minted now with the app's user-token secret. Token expiry is
        checked against the real time (PyJWT), not the test's clock."""
        secret = self.runtime.config.user_token_secret
        assert secret, "the app was built without a user_token_secret"
        return self.bearer(mint_user_token(secret, user_id, datetime.now(UTC), ttl))

    def as_cron(self) -> Caller:
        """The scheduler's bearer: the app's cron secret."""
        secret = self.runtime.config.cron_secret
        assert secret, "the app was built without a cron_secret"
        return self.bearer(secret)

    def bearer(self, token: str) -> Caller:
        """Any bearer token, e.g. a key that does not exist or a hand-made JWT."""
        return self.with_authorization(f"Bearer {token}")

    def anonymous(self) -> Caller:
        """No `Authorization` header."""
        return self.with_authorization(None)

    def with_authorization(self, header: str | None) -> Caller:
        """This exact `Authorization` header (None: none), e.g. `Basic abc`."""
        return Caller(self.app.test_client(), header)

    def dispose(self) -> None:
        self.runtime.engine.dispose()

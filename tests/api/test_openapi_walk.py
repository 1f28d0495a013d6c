"""The OpenAPI document is the contract: a walk over every operation it lists checks that each
answers as documented for every kind of caller (no credentials, each API-key role, a user token,
the cron secret) — the auth matrix — and never with an undocumented status or a 500."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from billing.access.user_tokens import mint_user_token
from infra.config import Config
from tests.conftest import Clock, build_app

pytestmark = pytest.mark.postgres

USER_SECRET = "a-user-token-secret-of-32-bytes-at-least"
CRON_SECRET = "cron-secret"
PATH_VALUES = {
    "billing_id": "00000000-0000-0000-0000-000000000000",
    "run_id": "00000000-0000-0000-0000-000000000000",
    "transfer_id": "00000000-0000-0000-0000-000000000000",
    "item_id": "1",
    "code": "customer:42:unbilled",
    "user_id": "42",
}


@pytest.fixture
def walker(pg_url: str) -> Any:
    config = Config(database_url=pg_url, user_token_secret=USER_SECRET, cron_secret=CRON_SECRET)
    app, keys = build_app(pg_url, Clock(), config)
    token = mint_user_token(USER_SECRET, "42", datetime.now(UTC), timedelta(hours=1))
    callers = {f"key:{role}": key for role, key in keys.items()}
    callers["user"] = token
    callers["cron"] = CRON_SECRET
    yield app.test_client(), callers
    app.extensions["smsledger"].engine.dispose()


def operations(client: Any) -> list[tuple[str, str, dict[str, Any]]]:
    document = client.get("/openapi.json").json
    return [
        (method.upper(), path, operation)
        for path, methods in sorted(document["paths"].items())
        for method, operation in methods.items()
        if method in ("get", "post", "put", "patch", "delete")
    ]


def call(client: Any, method: str, path: str, bearer: str | None) -> Any:
    url = re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m.group(1)], path)
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    body = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
    return client.open(url, method=method, headers=headers, **body)


def documented(operation: dict[str, Any], status: int) -> bool:
    listed = operation["responses"]
    return str(status) in listed or (status >= 400 and "default" in listed)


def test_every_operation_answers_as_documented_for_every_caller(walker: Any) -> None:
    client, callers = walker
    walked = operations(client)
    assert len(walked) >= 30
    problems = []
    answered: set[int] = set()
    for method, path, operation in walked:
        security = operation.get("security")
        scheme = next(iter(security[0])) if security else None
        roles = operation.get("x-roles", [])
        for caller, bearer in [("nobody", None), *callers.items()]:
            answer = call(client, method, path, bearer)
            if scheme is None:
                expected: set[int] | None = None
            elif caller == "nobody":
                expected = {401}
            elif scheme == "apiKey":
                role = caller.removeprefix("key:")
                expected = (
                    None if role in roles else ({403} if caller.startswith("key:") else {401})
                )
            elif scheme == "userToken":
                expected = None if caller == "user" else {401}
            else:
                expected = None if caller == "cron" else {401}
            answered.add(answer.status_code)
            where = f"{method} {path} as {caller}: {answer.status_code}"
            if answer.status_code >= 500 and answer.status_code != 503:
                problems.append(f"{where} (server error)")
            elif expected is not None and answer.status_code not in expected:
                problems.append(f"{where}, expected {sorted(expected)}")
            elif expected is None and not documented(operation, answer.status_code):
                problems.append(f"{where} is not documented")
            elif answer.status_code >= 400 and answer.mimetype == "application/json":
                error = answer.json.get("error", {})
                if not (error.get("code") and error.get("message")):
                    problems.append(f"{where} without the error envelope")
    assert problems == []
    assert {200, 401, 403, 404, 422} <= answered  # the walk reached past the guards


def test_every_guarded_operation_says_who_may_call_it(walker: Any) -> None:
    client, _ = walker
    for method, path, operation in operations(client):
        if path in ("/healthz", "/readyz", "/metrics"):
            assert "security" not in operation
            continue
        assert operation.get("security"), f"{method} {path} documents no security"
        assert "401" in operation["responses"], f"{method} {path}"
        if "apiKey" in operation["security"][0]:
            assert operation["x-roles"] and "403" in operation["responses"], f"{method} {path}"

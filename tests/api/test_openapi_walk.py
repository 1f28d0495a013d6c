"""The OpenAPI document is the contract: a walk over every operation it lists checks that each
answers as documented for every kind of caller (no credentials, each API-key role, a user token,
the cron secret) — the auth matrix — and never with an undocumented status or a 500."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from infra.config import Config
from tests.client import ApiClient, Caller

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
    "message_id": "m-1",
}


@pytest.fixture
def walker(make_api: Callable[..., ApiClient], pg_url: str) -> tuple[ApiClient, dict[str, Caller]]:
    """The app and every kind of caller but nobody: each API-key role, user 42, the cron."""
    config = Config(database_url=pg_url, user_token_secret=USER_SECRET, cron_secret=CRON_SECRET)
    api = make_api(config)
    callers = {f"key:{role}": api.as_role(role) for role in api.keys}
    callers["user"] = api.as_user("42")
    callers["cron"] = api.as_cron()
    return api, callers


def operations(api: ApiClient) -> list[tuple[str, str, dict[str, Any]]]:
    document = api.anonymous().get("/openapi.json").json
    return [
        (method.upper(), path, operation)
        for path, methods in sorted(document["paths"].items())
        for method, operation in methods.items()
        if method in ("get", "post", "put", "patch", "delete")
    ]


def call(client: Caller, method: str, path: str) -> Any:
    url = re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m.group(1)], path)
    body = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
    return client.open(url, method, **body)


def documented(operation: dict[str, Any], status: int) -> bool:
    listed = operation["responses"]
    return str(status) in listed or (status >= 400 and "default" in listed)


def test_every_operation_answers_as_documented_for_every_caller(
    walker: tuple[ApiClient, dict[str, Caller]],
) -> None:
    api, callers = walker
    walked = operations(api)
    assert len(walked) >= 30
    problems = []
    answered: set[int] = set()
    for method, path, operation in walked:
        security = operation.get("security")
        scheme = next(iter(security[0])) if security else None
        roles = operation.get("x-roles", [])
        for caller, client in [("nobody", api.anonymous()), *callers.items()]:
            answer = call(client, method, path)
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


def test_every_guarded_operation_says_who_may_call_it(
    walker: tuple[ApiClient, dict[str, Caller]],
) -> None:
    api, _ = walker
    for method, path, operation in operations(api):
        if path in ("/healthz", "/readyz", "/metrics"):
            assert "security" not in operation
            continue
        assert operation.get("security"), f"{method} {path} documents no security"
        assert "401" in operation["responses"], f"{method} {path}"
        if "apiKey" in operation["security"][0]:
            assert operation["x-roles"] and "403" in operation["responses"], f"{method} {path}"

"""The OpenAPI document says exactly what the server accepts: schemathesis fuzzes every documented
operation of an app on the test PostgreSQL, with every check it has, as a caller each operation
admits (its `x-roles`: an admin, service or accountant key; a user token; the cron secret), and
then walks the document's links statefully (a created customer is read and changed; a posted
entry, usage event or run feeds its reads, reversal or void when one is created).

Deterministic: the app runs on the fixed test clock, Hypothesis is derandomized, and Sippy is
not configured (the reconciliation run against Sippy answers its documented 503
`sippy_not_configured`), so nothing leaves the process.

Not fuzzed: `/metrics` (Prometheus' text format, no request to vary) and `/docs` with its assets
(Swagger UI's HTML, not in the document).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from schemathesis.generation.stateful import run_state_machine_as_test

from billing.settings import _global_cache
from infra.config import Config
from tests.client import ApiClient

pytestmark = pytest.mark.postgres

USER_SECRET = "a-user-token-secret-of-32-bytes-at-least"
CRON_SECRET = "cron-secret-for-the-fuzz"
NOT_FUZZED = ["/metrics"]  # text/plain for Prometheus: nothing in a request to vary
MAX_EXAMPLES = 25
STATEFUL_STEPS = 12
SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
# Where a request the document allows may still be refused with 422, because what makes it
# valid is a relation no JSON schema can state. Every other operation must accept every
# schema-valid request (2xx, or 401/403/404/409 as schemathesis allows).
RELATIONS = {
    ("POST", "/api/ledger/transfers"): "accounts must exist and share the entry's currency",
    ("POST", "/api/usage"): "a valid phone number (libphonenumber), its country, the user's"
    " currency",
    ("POST", "/api/usage/check"): "a valid phone number (libphonenumber)",
    ("POST", "/api/admin/rates"): "valid_to after valid_from, a known region, no conflicting"
    " version",
    ("PUT", "/api/admin/sms/billing-settings"): "validated as a whole: threshold billing needs"
    " a threshold",
    ("GET", "/api/admin/sms/billing-stats"): "`to` after `from`",
    ("POST", "/api/reconciliation/runs"): "`to` after `from`; `mapping` a JSON object;"
    " a statement CSV",
}
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]
CONFIG = {
    "generation": {"allow-x00": False, "max-examples": MAX_EXAMPLES, "deterministic": True},
    "checks": {"enabled": True},
    "phases": {"stateful": {"max-steps": STATEFUL_STEPS}},
    "operations": [
        {
            "include-method": method,
            "include-path": path,
            "checks": {"positive_data_acceptance": {"expected-statuses": [*ACCEPTED, "422"]}},
        }
        for method, path in RELATIONS
    ],
}


@pytest.fixture
def fuzzed(make_api: Callable[..., ApiClient], pg_url: str) -> ApiClient:
    config = Config(database_url=pg_url, user_token_secret=USER_SECRET, cron_secret=CRON_SECRET)
    return make_api(config)


def credentials(api: ApiClient) -> Callable[[dict[str, Any]], str | None]:
    """The `Authorization` an operation admits: a key of its first role, a user token, the cron
    secret; none for an open operation."""
    user = api.as_user("fuzz-user").authorization
    cron = api.as_cron().authorization

    def credential(operation: dict[str, Any]) -> str | None:
        security = operation.get("security") or []
        scheme = next(iter(security[0]), None) if security else None
        if scheme == "apiKey":
            return f"Bearer {api.keys[operation['x-roles'][0]]}"
        if scheme == "userToken":
            return user
        if scheme == "cronSecret":
            return cron
        return None

    return credential


@pytest.fixture
def api_schema(fuzzed: ApiClient, request: pytest.FixtureRequest) -> Any:
    # schemathesis 4.32's lazy schema renames the test node through `_nodeid`, which pytest 9
    # no longer has; give it one.
    node: Any = request.node
    if not hasattr(node, "_nodeid"):
        node._nodeid = node.nodeid
    schema = schemathesis.openapi.from_wsgi(
        "/openapi.json", fuzzed.app, config=schemathesis.Config.from_dict(CONFIG)
    ).exclude(path=NOT_FUZZED)
    credential = credentials(fuzzed)

    @schema.auth(refresh_interval=None)
    class Roles:
        def get(self, case: Any, ctx: Any) -> str | None:
            return credential(case.operation.definition.raw)

        def set(self, case: Any, data: str | None, ctx: Any) -> None:
            if data is not None:
                case.headers = {**(case.headers or {}), "Authorization": data}

    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@SETTINGS
def test_every_operation_answers_as_documented(case: Any) -> None:
    case.call_and_validate()


class Snapshot:
    """The fuzzed database as it was before the scenarios, put back before each one: a scenario
    that starts where the last one left (a customer already created answers 409, not 201)
    generates differently on Hypothesis' replay, which it refuses as a flaky strategy."""

    def __init__(self, api: ApiClient, admin_url: str, database: str) -> None:
        self.api, self.database, self.copy = api, database, f"{database}_snapshot"
        self.admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        api.runtime.engine.dispose()
        self._sql(f"CREATE DATABASE {self.copy} TEMPLATE {database}")

    def _sql(self, statement: str) -> None:
        with self.admin.connect() as connection:
            connection.exec_driver_sql(statement)

    def restore(self) -> None:
        self.api.runtime.engine.dispose()
        self._sql(f"DROP DATABASE {self.database} WITH (FORCE)")
        self._sql(f"CREATE DATABASE {self.database} TEMPLATE {self.copy}")
        _global_cache.clear()  # the settings cached from the database just replaced

    def drop(self) -> None:
        self._sql(f"DROP DATABASE IF EXISTS {self.copy}")
        self.admin.dispose()


def test_links_hold_statefully(
    api_schema: Any, fuzzed: ApiClient, pg_admin_url: str, pg_url: str
) -> None:
    """Scenarios that follow the document's links, each from the same database: each step's
    answer checked as above."""
    calls: list[str] = []
    snapshot = Snapshot(fuzzed, pg_admin_url, sa.make_url(pg_url).database or "")

    class Machine(api_schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            snapshot.restore()

        def after_call(self, response: Any, case: Any) -> None:
            super().after_call(response, case)
            calls.append(f"{case.method} {case.operation.path} {response.status_code}")

    try:
        run_state_machine_as_test(
            Machine,
            settings=settings(SETTINGS, max_examples=20, stateful_step_count=STATEFUL_STEPS),
        )
    finally:
        snapshot.drop()
    # The links were followed: a created customer was read and changed.
    assert "GET /api/admin/customers/{user_id} 200" in calls
    assert "PATCH /api/admin/customers/{user_id} 200" in calls


def test_every_route_is_documented(fuzzed: ApiClient) -> None:
    document = fuzzed.anonymous().get("/openapi.json").json
    documented = {
        (path, method.upper()) for path, methods in document["paths"].items() for method in methods
    }
    served = set()
    for rule in fuzzed.app.url_map.iter_rules():
        if rule.rule.startswith("/api/") or rule.rule in ("/healthz", "/readyz", "/metrics"):
            path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
            served |= {(path, m) for m in rule.methods or () if m not in ("HEAD", "OPTIONS")}
    assert served - documented == set()


# What the fuzz leaves out (no NUL characters: `allow-x00` is off, as a NUL cannot be
# documented on every string), and the refusals it found once, pinned.


def test_a_nul_in_a_json_string_is_refused_as_such(fuzzed: ApiClient) -> None:
    answer = fuzzed.as_role("admin").open(
        "/api/admin/customers",
        "POST",
        data='{"user_id": "a\\u0000b"}',
        content_type="application/json",
    )
    assert answer.status_code == 400
    assert answer.json["error"]["code"] == "invalid_characters"
    assert answer.json["error"]["message"] == "NUL characters are not accepted."


@pytest.mark.parametrize(
    ("method", "path"),
    [("PATCH", "/api/admin/customers/42"), ("PUT", "/api/admin/sms/billing-settings")],
)
def test_a_required_body_is_required(fuzzed: ApiClient, method: str, path: str) -> None:
    answer = fuzzed.as_role("admin").open(path, method)
    assert answer.status_code == 422
    assert answer.json["error"]["details"]["errors"][0]["code"] == "required"
    # An empty object is a body: nothing to change.
    assert fuzzed.as_role("admin").open(path, method, json={}).status_code in (200, 404)


def test_an_item_id_beyond_bigint_names_no_item(fuzzed: ApiClient) -> None:
    run = "00000000-0000-0000-0000-000000000000"
    for item in (2**63, 10**30, 0):
        answer = fuzzed.as_role("accountant").post(
            f"/api/reconciliation/runs/{run}/items/{item}/resolve", {"action": "dismiss"}
        )
        assert answer.status_code == 404, item
        assert answer.json["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    "span",
    [
        {"from": "0001-01-01T00:00:00Z", "to": "2026-11-01T00:00:00Z"},
        {"from": "2026-11-01T00:00:00Z", "to": "9999-12-31T00:00:00Z"},
    ],
)
def test_a_range_sippy_cannot_hold_is_refused_before_asking_sippy(
    make_api: Callable[..., ApiClient], pg_url: str, sim: Any, span: dict[str, str]
) -> None:
    config = Config(
        database_url=pg_url,
        sippy_url=sim.xmlapi_url,
        sippy_username="smsledger",
        sippy_password="secret",
    )
    accountant = make_api(config).as_role("accountant")
    answer = accountant.post("/api/reconciliation/runs", {**span, "source": "sippy"})
    assert answer.status_code == 422, answer.json
    assert answer.json["error"]["code"] == "validation_failed"
    inside = {"from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z"}
    assert accountant.post("/api/reconciliation/runs", inside).status_code == 201

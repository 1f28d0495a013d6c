"""The ledger endpoints' mapping: auth, status codes, error codes, shapes (Appendix A), and
that a refused request writes nothing."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from billing.chart import ensure_chart
from ledger.db import unit_of_work
from ledger.tables import accounts, transfers
from tests.client import ApiClient
from tests.conftest import NOW

pytestmark = pytest.mark.postgres

ENTRY = {
    "idempotency_key": "adj-2026-11-24-1",
    "kind": "adjustment",
    "description": "goodwill credit",
    "transfers": [
        {
            "debit_account": "adjustments:USD",
            "credit_account": "customer:42:receivable",
            "amount": "1.50",
        }
    ],
}


@pytest.fixture
def api(api: ApiClient) -> ApiClient:
    """The shared client, with the charts of customer 42 (USD) and 77 (EUR)."""
    with unit_of_work(api.sessions) as session:
        ensure_chart(session, "42", "USD", NOW)
        ensure_chart(session, "77", "EUR", NOW)
    return api


def rows(api: ApiClient) -> tuple[int, int]:
    """How many transfers and accounts there are."""
    with unit_of_work(api.sessions) as session:
        count = lambda table: session.execute(  # noqa: E731
            sa.select(sa.func.count()).select_from(table)
        ).scalar_one()
        return count(transfers), count(accounts)


def test_posting_a_manual_entry_answers_the_documented_shape(api: ApiClient) -> None:
    admin = api.as_role("admin")
    response = admin.post("/api/ledger/transfers", json=ENTRY)
    assert response.status_code == 201
    body = response.json
    (transfer,) = body["transfers"]
    assert transfer["debit_account"] == "adjustments:USD"
    assert transfer["credit_account"] == "customer:42:receivable"
    assert transfer["amount"] == "1.50" and transfer["currency"] == "USD"
    assert transfer["kind"] == "adjustment" and transfer["journal_id"] == body["journal_id"]
    assert transfer["effective_at"] == "2026-11-24T12:00:00Z"
    assert transfer["posted_at"].endswith("Z")

    replay = admin.post("/api/ledger/transfers", json=ENTRY)
    assert replay.status_code == 200 and replay.json["status"] == "duplicate"
    assert replay.json["transfers"] == body["transfers"]

    fetched = api.as_role("accountant").get(f"/api/ledger/transfers/{transfer['id']}")
    assert fetched.status_code == 200 and fetched.json == transfer


def test_json_numbers_are_taken_exactly(api: ApiClient) -> None:
    body = '{"idempotency_key": "n1", "kind": "adjustment", "transfers": [{"debit_account":'
    body += ' "adjustments:USD", "credit_account": "customer:42:receivable", "amount": 0.1}]}'
    response = api.as_role("admin").post(
        "/api/ledger/transfers", data=body, content_type="application/json"
    )
    assert response.status_code == 201
    assert response.json["transfers"][0]["amount"] == "0.10"


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"amount": "-1.00"}, 422, "invalid_amount"),
        ({"amount": "0"}, 422, "invalid_amount"),
        ({"amount": "1.0000001"}, 422, "validation_failed"),
        ({"amount": True}, 422, "validation_failed"),
        ({"amount": "ten"}, 422, "validation_failed"),
        ({"credit_account": "customer:nobody:receivable"}, 422, "unknown_account"),
        ({"credit_account": "customer:77:receivable"}, 422, "currency_mismatch"),
        ({"credit_account": "adjustments:USD"}, 422, "invalid_transfer"),
        ({"debit_account": "adjustments:QQQ"}, 422, "unknown_account"),
        ({"surprise": 1}, 422, "validation_failed"),
    ],
)
def test_invalid_legs_are_refused_with_a_code_and_write_nothing(
    api: ApiClient, change: dict[str, Any], status: int, code: str
) -> None:
    before = rows(api)
    leg = {**ENTRY["transfers"][0], **change}
    response = api.as_role("admin").post(
        "/api/ledger/transfers", json={**ENTRY, "transfers": [leg]}
    )
    assert response.status_code == status, response.json
    assert response.json["error"]["code"] == code
    assert response.json["error"]["message"]
    assert rows(api) == before


def test_field_errors_name_the_field_and_a_code(api: ApiClient) -> None:
    leg = {**ENTRY["transfers"][0], "amount": "1.0000001"}
    response = api.as_role("admin").post(
        "/api/ledger/transfers", json={**ENTRY, "transfers": [leg]}
    )
    assert response.json["error"]["details"]["errors"] == [
        {
            "field": "transfers.0.amount",
            "code": "too_many_decimals",
            "message": "'1.0000001' has more than 6 decimal places",
        }
    ]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({**ENTRY, "transfers": []}, 422, "validation_failed"),
        ({**ENTRY, "kind": "usage"}, 422, "kind_not_allowed"),
        ({**ENTRY, "kind": "gift"}, 422, "validation_failed"),
        ({**ENTRY, "currency": "EUR"}, 422, "currency_mismatch"),
        ({**ENTRY, "effective_at": "2026-11-24T10:00:00"}, 422, "validation_failed"),
        (
            {key: v for key, v in ENTRY.items() if key != "idempotency_key"},
            422,
            "validation_failed",
        ),
        ([ENTRY], 422, "validation_failed"),
    ],
)
def test_invalid_entries_are_refused_and_write_nothing(
    api: ApiClient, body: Any, status: int, code: str
) -> None:
    before = rows(api)
    response = api.as_role("admin").post("/api/ledger/transfers", json=body)
    assert (response.status_code, response.json["error"]["code"]) == (status, code)
    assert rows(api) == before


@pytest.mark.parametrize(
    ("data", "content_type", "status", "code"),
    [
        ("{not json", "application/json", 400, "malformed_json"),
        ('{"amount": NaN}', "application/json", 400, "malformed_json"),
        (b"\xff\xfe", "application/json", 400, "malformed_json"),
        ("kind=adjustment", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ],
)
def test_bodies_that_are_not_json_are_refused(
    api: ApiClient, data: Any, content_type: str, status: int, code: str
) -> None:
    before = rows(api)
    response = api.as_role("admin").post(
        "/api/ledger/transfers", data=data, content_type=content_type
    )
    assert (response.status_code, response.json["error"]["code"]) == (status, code)
    assert rows(api) == before


def test_a_conflicting_replay_is_409_and_writes_nothing(api: ApiClient) -> None:
    admin = api.as_role("admin")
    admin.post("/api/ledger/transfers", json=ENTRY)
    before = rows(api)
    leg = {**ENTRY["transfers"][0], "amount": "2.00"}
    response = admin.post("/api/ledger/transfers", json={**ENTRY, "transfers": [leg]})
    assert (response.status_code, response.json["error"]["code"]) == (409, "idempotency_conflict")
    assert rows(api) == before


def test_reversing_a_transfer_once(api: ApiClient) -> None:
    admin = api.as_role("admin")
    transfer_id = admin.post("/api/ledger/transfers", json=ENTRY).json["transfers"][0]["id"]
    path = f"/api/ledger/transfers/{transfer_id}/reverse"
    first = admin.post(path, json={"idempotency_key": "rev-1"})
    assert first.status_code == 201
    (undo,) = first.json["transfers"]
    assert undo["reverses"] == transfer_id and undo["kind"] == "reversal"
    assert undo["debit_account"] == "customer:42:receivable"
    assert admin.post(path, json={"idempotency_key": "rev-1"}).status_code == 200
    again = admin.post(path, json={"idempotency_key": "rev-2"})
    assert (again.status_code, again.json["error"]["code"]) == (409, "already_reversed")
    missing = admin.post(
        "/api/ledger/transfers/00000000-0000-0000-0000-000000000000/reverse",
        json={"idempotency_key": "rev-3"},
    )
    assert (missing.status_code, missing.json["error"]["code"]) == (404, "transfer_not_found")
    assert admin.get("/api/ledger/transfers/not-a-uuid").status_code == 404


def test_account_balances_now_and_as_of(api: ApiClient) -> None:
    admin = api.as_role("admin")
    admin.post("/api/ledger/transfers", json=ENTRY)
    now = api.as_role("accountant").get("/api/ledger/accounts/customer:42:receivable")
    assert now.status_code == 200
    assert {
        k: now.json[k]
        for k in ("code", "type", "currency", "customer_id", "debits", "credits", "balance")
    } == {
        "code": "customer:42:receivable",
        "type": "asset",
        "currency": "USD",
        "customer_id": "42",
        "debits": "0.00",
        "credits": "1.50",
        "balance": "-1.50",
    }
    before = (NOW - timedelta(days=1)).isoformat()
    past = admin.get("/api/ledger/accounts/customer:42:receivable", query_string={"as_of": before})
    assert past.json["balance"] == "0.00" and past.json["as_of"] == "2026-11-23T12:00:00Z"
    bad = admin.get(
        "/api/ledger/accounts/customer:42:receivable", query_string={"as_of": "yesterday"}
    )
    assert (bad.status_code, bad.json["error"]["code"]) == (422, "validation_failed")
    missing = admin.get("/api/ledger/accounts/nope:USD")
    assert (missing.status_code, missing.json["error"]["code"]) == (404, "account_not_found")


def test_account_listing_filters_and_pages(api: ApiClient) -> None:
    admin = api.as_role("admin")
    page = admin.get("/api/ledger/accounts", query_string={"customer_id": "42"})
    assert [a["code"] for a in page.json["items"]] == [
        "customer:42:receivable",
        "customer:42:unbilled",
    ]
    assert page.json["total"] == 2
    usd = admin.get(
        "/api/ledger/accounts", query_string={"currency": "USD", "per_page": 3, "page": 2}
    )
    assert usd.json["total"] == 7 and len(usd.json["items"]) == 3
    huge = admin.get("/api/ledger/accounts", query_string={"per_page": 100000})
    assert huge.status_code == 422


def test_statement_and_trial_balance(api: ApiClient) -> None:
    admin = api.as_role("admin")
    admin.post("/api/ledger/transfers", json=ENTRY)
    second = {**ENTRY, "idempotency_key": "adj-2"}
    admin.post("/api/ledger/transfers", json=second)
    accountant = api.as_role("accountant")
    statement = accountant.get("/api/ledger/accounts/customer:42:receivable/transfers")
    assert statement.status_code == 200
    assert [line["balance_after"] for line in statement.json["items"]] == ["-1.50", "-3.00"]
    assert statement.json["closing_balance"] == "-3.00" and statement.json["total"] == 2
    trial = accountant.get("/api/ledger/trial-balance")
    assert trial.json["currencies"]["USD"] == {
        "debits": "3.00",
        "credits": "3.00",
        "balanced": True,
    }
    assert trial.json["currencies"]["EUR"]["balanced"] is True


ENDPOINTS = [
    ("GET", "/api/ledger/accounts", {"admin", "accountant"}),
    ("GET", "/api/ledger/accounts/customer:42:unbilled", {"admin", "accountant"}),
    ("GET", "/api/ledger/accounts/customer:42:unbilled/transfers", {"admin", "accountant"}),
    ("GET", "/api/ledger/transfers/00000000-0000-0000-0000-000000000000", {"admin", "accountant"}),
    ("POST", "/api/ledger/transfers", {"admin"}),
    ("POST", "/api/ledger/transfers/00000000-0000-0000-0000-000000000000/reverse", {"admin"}),
    ("GET", "/api/ledger/trial-balance", {"admin", "accountant"}),
]


@pytest.mark.parametrize(("method", "path", "allowed"), ENDPOINTS)
def test_every_ledger_endpoint_checks_the_key_and_its_role(
    api: ApiClient, method: str, path: str, allowed: set[str]
) -> None:
    body = {"json": ENTRY} if method == "POST" else {}
    before = rows(api)
    missing = api.anonymous().open(path, method, **body)
    assert (missing.status_code, missing.json["error"]["code"]) == (401, "unauthorized")
    wrong = api.bearer("sk_not-a-real-key").open(path, method, **body)
    assert (wrong.status_code, wrong.json["error"]["code"]) == (401, "unauthorized")
    basic = api.with_authorization("Basic abc").open(path, method, **body)
    assert basic.status_code == 401
    for role in {"admin", "service", "accountant"} - allowed:
        refused = api.as_role(role).open(path, method, **body)
        assert (refused.status_code, refused.json["error"]["code"]) == (403, "forbidden")
    assert rows(api) == before
    for role in allowed:
        assert api.as_role(role).open(path, method, **body).status_code not in (401, 403)


def test_health_and_the_openapi_document_need_no_key(api: ApiClient) -> None:
    nobody = api.anonymous()
    assert nobody.get("/healthz").json == {"status": "ok"}
    ready = nobody.get("/readyz")
    assert ready.status_code == 200 and ready.json["checks"]["database"] == "ok"
    spec = nobody.get("/openapi.json").json
    assert "/api/ledger/transfers" in spec["paths"]


def test_unknown_paths_and_methods_answer_in_the_envelope(api: ApiClient) -> None:
    admin = api.as_role("admin")
    assert admin.get("/api/nowhere").json["error"]["code"] == "not_found"
    wrong_method = admin.delete("/api/ledger/trial-balance")
    assert (wrong_method.status_code, wrong_method.json["error"]["code"]) == (
        405,
        "method_not_allowed",
    )


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        (
            "GET",
            "/api/ledger/accounts/x",
            {"query_string": {"as_of": "0001-01-01T00:00:00+05:00"}},
            422,
            "validation_failed",
        ),
        ("GET", "/api/ledger/accounts/a%00b", {}, 400, "invalid_characters"),
        ("GET", "/api/ledger/accounts?customer_id=%00", {}, 400, "invalid_characters"),
        ("GET", "/api/ledger/accounts/" + "x" * 10_000, {}, 404, "account_not_found"),
        (
            "GET",
            "/api/ledger/accounts",
            {"query_string": {"page": "abc"}},
            422,
            "validation_failed",
        ),
        (
            "GET",
            "/api/ledger/accounts",
            {"query_string": {"per_page": "-1"}},
            422,
            "validation_failed",
        ),
        (
            "GET",
            "/api/ledger/accounts/customer:42:unbilled/transfers",
            {"query_string": {"from": "soon"}},
            422,
            "validation_failed",
        ),
        (
            "POST",
            "/api/ledger/transfers",
            {"json": {**ENTRY, "idempotency_key": "a\u0000b"}},
            400,
            "invalid_characters",
        ),
        (
            "POST",
            "/api/ledger/transfers",
            {"json": {**ENTRY, "metadata": {"k\u0000": 1}}},
            400,
            "invalid_characters",
        ),
        (
            "POST",
            "/api/ledger/transfers",
            {
                "json": {
                    **ENTRY,
                    "transfers": [{**ENTRY["transfers"][0], "amount": "9" * 100 + ".1234567"}],
                }
            },
            422,
            "validation_failed",
        ),
        (
            "POST",
            "/api/ledger/transfers",
            {"json": {**ENTRY, "transfers": [{**ENTRY["transfers"][0], "amount": "1e999999"}]}},
            422,
            "validation_failed",
        ),
        (
            "POST",
            "/api/ledger/transfers",
            {"json": {**ENTRY, "idempotency_key": "k" * 201}},
            422,
            "validation_failed",
        ),
        (
            "POST",
            "/api/ledger/transfers",
            {"json": {**ENTRY, "transfers": [ENTRY["transfers"][0]] * 101}},
            422,
            "validation_failed",
        ),
        (
            "POST",
            "/api/ledger/transfers",
            {"data": "[" * 100_000, "content_type": "application/json"},
            400,
            "malformed_json",
        ),
        (
            "POST",
            "/api/ledger/transfers",
            {"data": '{"amount": 1' + "0" * 5000 + "}", "content_type": "application/json"},
            400,
            "malformed_json",
        ),
    ],
)
def test_hostile_inputs_get_a_4xx_with_a_code_never_a_500(
    api: ApiClient, method: str, path: str, kwargs: dict[str, Any], status: int, code: str
) -> None:
    before = rows(api)
    response = api.as_role("admin").open(path, method, **kwargs)
    assert (response.status_code, response.json["error"]["code"]) == (status, code)
    assert rows(api) == before


def test_numbers_in_metadata_are_kept_exactly(api: ApiClient) -> None:
    body = '{"idempotency_key": "m1", "kind": "adjustment", "metadata": {"rate": 0.1, "n": 3},'
    body += ' "transfers": [{"debit_account": "adjustments:USD",'
    body += ' "credit_account": "customer:42:receivable", "amount": "1"}]}'
    response = api.as_role("admin").post(
        "/api/ledger/transfers", data=body, content_type="application/json"
    )
    assert response.status_code == 201
    assert response.json["transfers"][0]["metadata"] == {"rate": "0.1", "n": 3}

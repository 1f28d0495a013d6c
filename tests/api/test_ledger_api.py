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
def api(app_and_keys: tuple[Any, dict[str, str]]) -> Api:
    app, keys = app_and_keys
    with unit_of_work(app.extensions["smsledger"].sessions) as session:
        ensure_chart(session, "42", "USD", NOW)
        ensure_chart(session, "77", "EUR", NOW)
    return Api(app, keys)


class Api:
    def __init__(self, app: Any, keys: dict[str, str]) -> None:
        self.app, self.keys, self.client = app, keys, app.test_client()

    def call(self, method: str, path: str, role: str | None = "admin", **kwargs: Any) -> Any:
        headers = kwargs.pop("headers", {})
        if role is not None:
            headers["Authorization"] = f"Bearer {self.keys.get(role, role)}"
        return self.client.open(path, method=method, headers=headers, **kwargs)

    def rows(self) -> tuple[int, int]:
        with unit_of_work(self.app.extensions["smsledger"].sessions) as session:
            count = lambda table: session.execute(  # noqa: E731
                sa.select(sa.func.count()).select_from(table)
            ).scalar_one()
            return count(transfers), count(accounts)


def test_posting_a_manual_entry_answers_the_documented_shape(api: Api) -> None:
    response = api.call("POST", "/api/ledger/transfers", json=ENTRY)
    assert response.status_code == 201
    body = response.json
    (transfer,) = body["transfers"]
    assert transfer["debit_account"] == "adjustments:USD"
    assert transfer["credit_account"] == "customer:42:receivable"
    assert transfer["amount"] == "1.50" and transfer["currency"] == "USD"
    assert transfer["kind"] == "adjustment" and transfer["journal_id"] == body["journal_id"]
    assert transfer["effective_at"] == "2026-11-24T12:00:00Z"
    assert transfer["posted_at"].endswith("Z")

    replay = api.call("POST", "/api/ledger/transfers", json=ENTRY)
    assert replay.status_code == 200 and replay.json["status"] == "duplicate"
    assert replay.json["transfers"] == body["transfers"]

    fetched = api.call("GET", f"/api/ledger/transfers/{transfer['id']}", role="accountant")
    assert fetched.status_code == 200 and fetched.json == transfer


def test_json_numbers_are_taken_exactly(api: Api) -> None:
    body = '{"idempotency_key": "n1", "kind": "adjustment", "transfers": [{"debit_account":'
    body += ' "adjustments:USD", "credit_account": "customer:42:receivable", "amount": 0.1}]}'
    response = api.call("POST", "/api/ledger/transfers", data=body, content_type="application/json")
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
    api: Api, change: dict[str, Any], status: int, code: str
) -> None:
    before = api.rows()
    leg = {**ENTRY["transfers"][0], **change}
    response = api.call("POST", "/api/ledger/transfers", json={**ENTRY, "transfers": [leg]})
    assert response.status_code == status, response.json
    assert response.json["error"]["code"] == code
    assert response.json["error"]["message"]
    assert api.rows() == before


def test_field_errors_name_the_field_and_a_code(api: Api) -> None:
    leg = {**ENTRY["transfers"][0], "amount": "1.0000001"}
    response = api.call("POST", "/api/ledger/transfers", json={**ENTRY, "transfers": [leg]})
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
    api: Api, body: Any, status: int, code: str
) -> None:
    before = api.rows()
    response = api.call("POST", "/api/ledger/transfers", json=body)
    assert (response.status_code, response.json["error"]["code"]) == (status, code)
    assert api.rows() == before


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
    api: Api, data: Any, content_type: str, status: int, code: str
) -> None:
    before = api.rows()
    response = api.call("POST", "/api/ledger/transfers", data=data, content_type=content_type)
    assert (response.status_code, response.json["error"]["code"]) == (status, code)
    assert api.rows() == before


def test_a_conflicting_replay_is_409_and_writes_nothing(api: Api) -> None:
    api.call("POST", "/api/ledger/transfers", json=ENTRY)
    before = api.rows()
    leg = {**ENTRY["transfers"][0], "amount": "2.00"}
    response = api.call("POST", "/api/ledger/transfers", json={**ENTRY, "transfers": [leg]})
    assert (response.status_code, response.json["error"]["code"]) == (409, "idempotency_conflict")
    assert api.rows() == before


def test_reversing_a_transfer_once(api: Api) -> None:
    transfer_id = api.call("POST", "/api/ledger/transfers", json=ENTRY).json["transfers"][0]["id"]
    path = f"/api/ledger/transfers/{transfer_id}/reverse"
    first = api.call("POST", path, json={"idempotency_key": "rev-1"})
    assert first.status_code == 201
    (undo,) = first.json["transfers"]
    assert undo["reverses"] == transfer_id and undo["kind"] == "reversal"
    assert undo["debit_account"] == "customer:42:receivable"
    assert api.call("POST", path, json={"idempotency_key": "rev-1"}).status_code == 200
    again = api.call("POST", path, json={"idempotency_key": "rev-2"})
    assert (again.status_code, again.json["error"]["code"]) == (409, "already_reversed")
    missing = api.call(
        "POST",
        "/api/ledger/transfers/00000000-0000-0000-0000-000000000000/reverse",
        json={"idempotency_key": "rev-3"},
    )
    assert (missing.status_code, missing.json["error"]["code"]) == (404, "transfer_not_found")
    assert api.call("GET", "/api/ledger/transfers/not-a-uuid").status_code == 404


def test_account_balances_now_and_as_of(api: Api) -> None:
    api.call("POST", "/api/ledger/transfers", json=ENTRY)
    now = api.call("GET", "/api/ledger/accounts/customer:42:receivable", role="accountant")
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
    past = api.call(
        "GET", "/api/ledger/accounts/customer:42:receivable", query_string={"as_of": before}
    )
    assert past.json["balance"] == "0.00" and past.json["as_of"] == "2026-11-23T12:00:00Z"
    bad = api.call(
        "GET", "/api/ledger/accounts/customer:42:receivable", query_string={"as_of": "yesterday"}
    )
    assert (bad.status_code, bad.json["error"]["code"]) == (422, "validation_failed")
    missing = api.call("GET", "/api/ledger/accounts/nope:USD")
    assert (missing.status_code, missing.json["error"]["code"]) == (404, "account_not_found")


def test_account_listing_filters_and_pages(api: Api) -> None:
    page = api.call("GET", "/api/ledger/accounts", query_string={"customer_id": "42"})
    assert [a["code"] for a in page.json["items"]] == [
        "customer:42:receivable",
        "customer:42:unbilled",
    ]
    assert page.json["total"] == 2
    usd = api.call(
        "GET", "/api/ledger/accounts", query_string={"currency": "USD", "per_page": 3, "page": 2}
    )
    assert usd.json["total"] == 7 and len(usd.json["items"]) == 3
    huge = api.call("GET", "/api/ledger/accounts", query_string={"per_page": 100000})
    assert huge.status_code == 422


def test_statement_and_trial_balance(api: Api) -> None:
    api.call("POST", "/api/ledger/transfers", json=ENTRY)
    second = {**ENTRY, "idempotency_key": "adj-2"}
    api.call("POST", "/api/ledger/transfers", json=second)
    statement = api.call(
        "GET", "/api/ledger/accounts/customer:42:receivable/transfers", role="accountant"
    )
    assert statement.status_code == 200
    assert [line["balance_after"] for line in statement.json["items"]] == ["-1.50", "-3.00"]
    assert statement.json["closing_balance"] == "-3.00" and statement.json["total"] == 2
    trial = api.call("GET", "/api/ledger/trial-balance", role="accountant")
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
    api: Api, method: str, path: str, allowed: set[str]
) -> None:
    body = {"json": ENTRY} if method == "POST" else {}
    before = api.rows()
    missing = api.call(method, path, role=None, **body)
    assert (missing.status_code, missing.json["error"]["code"]) == (401, "unauthorized")
    wrong = api.call(method, path, role="sk_not-a-real-key", **body)
    assert (wrong.status_code, wrong.json["error"]["code"]) == (401, "unauthorized")
    basic = api.call(method, path, role=None, headers={"Authorization": "Basic abc"}, **body)
    assert basic.status_code == 401
    for role in {"admin", "service", "accountant"} - allowed:
        refused = api.call(method, path, role=role, **body)
        assert (refused.status_code, refused.json["error"]["code"]) == (403, "forbidden")
    assert api.rows() == before
    for role in allowed:
        assert api.call(method, path, role=role, **body).status_code not in (401, 403)


def test_health_and_the_openapi_document_need_no_key(api: Api) -> None:
    assert api.call("GET", "/healthz", role=None).json == {"status": "ok"}
    ready = api.call("GET", "/readyz", role=None)
    assert ready.status_code == 200 and ready.json["checks"]["database"] == "ok"
    spec = api.call("GET", "/openapi.json", role=None).json
    assert "/api/ledger/transfers" in spec["paths"]


def test_unknown_paths_and_methods_answer_in_the_envelope(api: Api) -> None:
    assert api.call("GET", "/api/nowhere").json["error"]["code"] == "not_found"
    wrong_method = api.call("DELETE", "/api/ledger/trial-balance")
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
            "malformed_json",
        ),
        (
            "POST",
            "/api/ledger/transfers",
            {"json": {**ENTRY, "metadata": {"k\u0000": 1}}},
            400,
            "malformed_json",
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
    api: Api, method: str, path: str, kwargs: dict[str, Any], status: int, code: str
) -> None:
    before = api.rows()
    response = api.call(method, path, **kwargs)
    assert (response.status_code, response.json["error"]["code"]) == (status, code)
    assert api.rows() == before


def test_numbers_in_metadata_are_kept_exactly(api: Api) -> None:
    body = '{"idempotency_key": "m1", "kind": "adjustment", "metadata": {"rate": 0.1, "n": 3},'
    body += ' "transfers": [{"debit_account": "adjustments:USD",'
    body += ' "credit_account": "customer:42:receivable", "amount": "1"}]}'
    response = api.call("POST", "/api/ledger/transfers", data=body, content_type="application/json")
    assert response.status_code == 201
    assert response.json["transfers"][0]["metadata"] == {"rate": "0.1", "n": 3}

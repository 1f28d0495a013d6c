"""Reconciliation over HTTP and the CLI: runs from Sippy's API or an uploaded CSV, the report as
JSON, CSV and HTML, resolving items, the exit codes of `smsledger reconcile`, and malformed
statements refused with clear 4xx errors that write nothing."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pytest

from billing.customers import create_customer
from billing.payments.charge_runner import charge_invoice
from billing.payments.charging import ChargePolicy
from billing.payments.sippy_client import SippyClient
from billing.tables import invoices
from infra.config import Config
from ledger.db import unit_of_work
from reconciliation.tables import reconciliation_runs
from sippy_simulator.server import SimulatorHandle
from tests.client import ApiClient
from tests.conftest import Clock
from tests.scenarios import DEFAULTS, at, close, load_rates, post, rows, sms

pytestmark = pytest.mark.postgres

RUNS = "/api/reconciliation/runs"
RANGE = {"from": "2026-11-24T00:00:00Z", "to": "2026-11-25T00:00:00Z"}
GOOD_CSV = (
    "i_payment,i_account,payment_time,amount,currency,notes,type\n"
    "1,1001,2026-11-24T03:00:00Z,0.02,USD,smsledger:x:y,debit\n"
)

# An operator's manual 5.00 debit that smsledger never asked for.
DIFFERING_CSV = GOOD_CSV.encode() + b"2,1001,2026-11-24T04:00:00Z,5.00,USD,,debit\n"


@pytest.fixture
def clock() -> Clock:
    return Clock(at(2026, 11, 24, 3))


@pytest.fixture
def api(
    make_api: Callable[..., ApiClient], pg_url: str, sim: SimulatorHandle, clock: Clock
) -> ApiClient:
    """Customer 42 (Sippy account 1001) with its invoice of 23 Nov charged in the simulator."""
    config = Config(
        database_url=pg_url,
        sippy_url=sim.xmlapi_url,
        sippy_username="smsledger",
        sippy_password="secret",
    )
    api = make_api(config)
    sessions = api.sessions
    load_rates(sessions)
    with unit_of_work(sessions) as session:
        create_customer(session, "42", "USD", at(2026, 11, 1), sippy_account_id="1001")
    post(sessions, at(2026, 11, 23, 23), *(sms(f"m{n}", at(2026, 11, 23, 12)) for n in range(3)))
    close(sessions, "daily", at(2026, 11, 24, 2))
    (invoice,) = rows(sessions, invoices)
    gateway = SippyClient(sim.xmlapi_url, "smsledger", "secret", 5)
    charge_invoice(sessions, gateway, invoice.id, clock, DEFAULTS, ChargePolicy())
    return api


def start(api: ApiClient, role: str = "accountant", **body: Any) -> Any:
    return api.as_role(role).post(RUNS, {**RANGE, **body})


def upload(api: ApiClient, raw: bytes, **fields: str) -> Any:
    data = {**RANGE, **fields, "statement": (io.BytesIO(raw), "statement.csv")}
    return api.as_role("accountant").post(RUNS, data=data, content_type="multipart/form-data")


def runs_stored(api: ApiClient) -> int:
    return len(rows(api.sessions, reconciliation_runs))


def test_a_run_against_sippy_answers_the_documented_shape(api: ApiClient) -> None:
    answer = start(api, source="sippy")
    assert answer.status_code == 201
    body = answer.json
    assert body["status"] == "reconciled" and body["source"] == "sippy"
    assert {k: body["totals"][k] for k in ("ledger", "sippy", "difference", "matched")} == {
        "ledger": "0.02",
        "sippy": "0.02",
        "difference": "0.00",
        "matched": 1,
    }
    (item,) = body["items"]
    assert item["kind"] == "matched" and item["match_rule"] == "reference"
    assert item["ledger"]["amount"] == item["sippy"]["amount"] == "0.02"
    assert body["created_by"] == "api:accountant" and len(body["inputs"]["sha256"]) == 64
    listed = api.as_role("accountant").get(RUNS).json
    assert listed["total"] == 1 and listed["items"][0]["id"] == body["id"]


def test_a_difference_is_resolved_over_http_and_shown_in_every_format(api: ApiClient) -> None:
    run = upload(api, DIFFERING_CSV).json
    assert run["status"] == "differences" and run["totals"]["missing_in_ledger"] == 1
    # The first line's reference is not ours, but account, amount and time agree.
    assert [i["match_rule"] for i in run["items"] if i["kind"] == "matched"] == [
        "account_amount_time"
    ]
    path = f"{RUNS}/{run['id']}"
    accountant = api.as_role("accountant")
    html = accountant.get(path + "?format=html")
    assert html.status_code == 200 and html.mimetype == "text/html"
    assert b"missing_in_ledger" in html.data and b"<script" not in html.data
    csv_answer = api.as_role("admin").get(path + "?format=csv&items=differences")
    assert csv_answer.mimetype == "text/csv" and csv_answer.data.count(b"\n") == 2
    unknown = next(i for i in run["items"] if i["reference"] is None)
    assert unknown["proposal"]["action"] == "record_receipt"
    resolved = accountant.post(
        f"{path}/items/{unknown['id']}/resolve",
        {"action": "dismiss", "note": "operator's manual debit"},
    )
    assert resolved.status_code == 200 and resolved.json["resolution"]["action"] == "dismissed"
    again = accountant.post(f"{path}/items/{unknown['id']}/resolve", {"action": "accept"})
    assert (again.status_code, again.json["error"]["code"]) == (409, "not_resolvable")
    missing = accountant.post(f"{path}/items/999999/resolve", {"action": "accept"})
    assert (missing.status_code, missing.json["error"]["code"]) == (404, "run_not_found")


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"", "empty_statement"),
        (b"i_payment,i_account,payment_time,amount,currency,notes\n", "empty_statement"),
        (b"i_account,amount\n1001,0.02\n", "missing_columns"),
        (GOOD_CSV.replace("0.02", "two cents").encode(), "invalid_lines"),
        (GOOD_CSV.replace("0.02", "0.0000001").encode(), "invalid_lines"),
        (GOOD_CSV.replace("0.02", "-1").encode(), "invalid_lines"),
        (GOOD_CSV.replace("USD", "XYZ").encode(), "invalid_lines"),
        (GOOD_CSV.replace("2026-11-24T03:00:00Z", "yesterday").encode(), "invalid_lines"),
        (GOOD_CSV.replace("1001", "acct").encode(), "invalid_lines"),
        (GOOD_CSV.replace("smsledger", "sms\xe9").encode("latin-1"), "invalid_encoding"),
        (b"\x00\x01\x02binary", "invalid_encoding"),
    ],
)
def test_malformed_statements_are_clear_422s_and_store_nothing(
    api: ApiClient, raw: bytes, code: str
) -> None:
    answer = upload(api, raw)
    assert answer.status_code == 422, answer.json
    assert answer.json["error"]["code"] == "invalid_statement"
    assert answer.json["error"]["details"]["code"] == code
    assert runs_stored(api) == 0


def test_bad_run_requests_are_refused(api: ApiClient) -> None:
    backwards = start(api, **{"from": RANGE["to"], "to": RANGE["from"]})
    assert backwards.status_code == 422
    no_file = start(api, source="statement")
    assert no_file.status_code == 422
    bad_mapping = upload(api, GOOD_CSV.encode(), mapping="not json")
    assert bad_mapping.status_code == 422
    missing = api.as_role("accountant").get(f"{RUNS}/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404
    assert start(api, role="service").status_code == 403
    assert api.anonymous().post(RUNS, RANGE).status_code == 401
    assert runs_stored(api) == 0


def test_an_unreachable_sippy_is_a_503_not_a_500(api: ApiClient, sim: SimulatorHandle) -> None:
    sim.state.inject_fault(method="getPaymentsList", kind="http_5xx")
    answer = start(api, source="sippy")
    assert (answer.status_code, answer.json["error"]["code"]) == (503, "sippy_unavailable")


def test_the_cli_exits_0_when_reconciled_and_1_with_differences(
    api: ApiClient, tmp_path: Any
) -> None:
    runner = api.app.test_cli_runner()
    ok = runner.invoke(args=["reconcile", "--from", RANGE["from"], "--to", RANGE["to"]])
    assert ok.exit_code == 0, ok.output
    assert "reconciled" in ok.output
    statement = tmp_path / "s.csv"
    statement.write_bytes(DIFFERING_CSV)
    out = tmp_path / "report.html"
    differs = runner.invoke(
        args=[
            "reconcile",
            "--from",
            RANGE["from"],
            "--to",
            RANGE["to"],
            "--statement",
            str(statement),
            "--format",
            "html",
            "--out",
            str(out),
        ]
    )
    assert differs.exit_code == 1
    assert "missing_in_ledger" in out.read_text()
    for fmt in ("json", "csv", "text"):
        result = runner.invoke(
            args=["reconcile", "--from", RANGE["from"], "--to", RANGE["to"], "--format", fmt]
        )
        assert result.exit_code == 0 and result.output
    bad = runner.invoke(args=["reconcile", "--from", "yesterday", "--to", RANGE["to"]])
    assert bad.exit_code == 2
    as_typed = runner.invoke(
        args=["reconcile", "--from", "2026-11-24", "--to", "2026-11-25", "--format", "json"]
    )
    assert as_typed.exit_code == 0, as_typed.output
    report = json.loads(as_typed.output)
    assert (report["from"], report["to"]) == (RANGE["from"], RANGE["to"])

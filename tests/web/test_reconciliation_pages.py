"""The reconciliation tab: a run from an uploaded statement or from Sippy, its report with every
difference and accept/dismiss on each proposal, the trial balance and an account's statement;
for accountants and admins, with bad input answered by a message, never a 500."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient

from infra.config import Config
from tests.client import ApiClient
from tests.web.conftest import Site, Watched, csrf_token, sign_in, staff_client

pytestmark = [pytest.mark.postgres]

RUNS = "/api/reconciliation/runs"
HEADER = "i_payment,i_account,payment_time,amount,currency,notes,type\n"
# An operator's manual 5.00 debit on Sippy account 1001 that the ledger never saw.
MANUAL_DEBIT = HEADER + "77,1001,2026-11-24T04:00:00Z,5.00,USD,,debit\n"
RANGE = {"from": "2026-11-23", "to": "2026-11-25"}


def customer_on_1001(site: Site, user_id: str = "rc-1") -> None:
    answer = site.api.as_role("admin").post(
        "/api/admin/customers", {"user_id": user_id, "sippy_account_id": "1001"}
    )
    assert answer.status_code == 201, answer.json


def upload(http: FlaskClient, raw: bytes | None, **fields: str) -> Any:
    token = csrf_token(http, "/admin/sms?tab=reconciliation")
    data: dict[str, Any] = {**RANGE, "source": "statement", "csrf_token": token, **fields}
    if raw is not None:
        data["statement"] = (io.BytesIO(raw), "statement.csv")
    return http.post(
        "/admin/sms/reconciliation/runs", data=data, content_type="multipart/form-data"
    )


def runs_total(api: ApiClient) -> int:
    return int(api.as_role("accountant").get(RUNS).json["total"])


def api_run(site: Site, raw: str) -> dict[str, Any]:
    data = {
        "from": "2026-11-23T00:00:00Z",
        "to": "2026-11-25T00:00:00Z",
        "statement": (io.BytesIO(raw.encode()), "statement.csv"),
    }
    answer = site.api.as_role("accountant").post(
        RUNS, data=data, content_type="multipart/form-data"
    )
    assert answer.status_code == 201, answer.json
    return dict(answer.json)


# --- in the browser ------------------------------------------------------------------------


@pytest.mark.browser
def test_a_run_from_an_uploaded_statement_and_a_proposal_accepted(
    page: Any, site: Site, watched: Watched
) -> None:
    customer_on_1001(site)
    sign_in(page, site)
    page.goto(f"{site.url}/admin/sms?tab=reconciliation")
    page.get_by_label("From", exact=True).fill(RANGE["from"])
    page.get_by_label("To", exact=True).fill(RANGE["to"])
    page.get_by_label("Uploaded statement CSV").check()
    page.set_input_files(
        "#run-statement",
        files=[{"name": "nov.csv", "mimeType": "text/csv", "buffer": MANUAL_DEBIT.encode()}],
    )
    page.get_by_role("button", name="Run reconciliation").click()

    page.get_by_text("Reconciliation run").first.wait_for()
    assert "missing in ledger 1" in page.locator("#counts").inner_text()
    row = page.locator('#items tr[data-kind="missing_in_ledger"]')
    assert "5.00 USD" in row.inner_text()
    assert "record_receipt" in row.inner_text()
    item_id = row.locator("td").first.inner_text()
    row.get_by_label(f"Note on item {item_id}").fill("operator's manual debit")
    row.get_by_role("button", name=f"Accept item {item_id}").click()

    resolved = page.locator(f"#item-{item_id} [data-resolution]")
    resolved.wait_for()
    assert resolved.inner_text() == "accepted"
    assert "by web:admin" in page.locator(f"#item-{item_id}").inner_text()
    (run,) = site.api.as_role("accountant").get(RUNS).json["items"]
    report = site.api.as_role("accountant").get(f"{RUNS}/{run['id']}").json
    (item,) = [i for i in report["items"] if i["kind"] == "missing_in_ledger"]
    assert item["resolution"]["action"] == "accepted" and item["resolution"]["by"] == "web:admin"
    assert item["resolution"]["note"] == "operator's manual debit"

    # The receipt is in the ledger: the trial balance leads to the account's statement.
    page.goto(f"{site.url}/admin/sms?tab=reconciliation")
    page.get_by_role("link", name="Trial balance").click()
    page.get_by_role("link", name="adjustments:USD").click()
    assert page.locator("#closing").inner_text() == "-5.00 USD"
    assert "5.00 USD" in page.locator("#statement tbody").inner_text()
    assert watched.console_errors == [] and watched.foreign_requests == []


@pytest.mark.browser
def test_an_accountant_sees_billing_and_reconciliation_only_and_can_resolve(
    page: Any, site: Site
) -> None:
    customer_on_1001(site)
    run = api_run(site, MANUAL_DEBIT)
    sign_in(page, site, "accountant")
    tabs = page.get_by_role("navigation", name="Billing Management tabs").get_by_role("link")
    assert tabs.all_inner_texts() == ["Billing", "Reconciliation"]

    page.get_by_role("link", name="Reconciliation").click()
    page.get_by_role("link", name=run["id"][-8:]).click()
    (item,) = [i for i in run["items"] if i["kind"] == "missing_in_ledger"]
    page.get_by_role("button", name=f"Dismiss item {item['id']}").click()
    resolved = page.locator(f"#item-{item['id']} [data-resolution]")
    resolved.wait_for()
    assert resolved.inner_text() == "dismissed"
    assert "by web:accountant" in page.locator(f"#item-{item['id']}").inner_text()
    page.goto(f"{site.url}/admin/sms?tab=settings")
    assert page.get_by_text("HTTP 403").is_visible()


@pytest.mark.browser
def test_resolving_works_without_javascript(browser: Any, site: Site) -> None:
    customer_on_1001(site)
    run = api_run(site, MANUAL_DEBIT)
    (item,) = [i for i in run["items"] if i["kind"] == "missing_in_ledger"]
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.set_default_timeout(10_000)
        sign_in(page, site, "accountant")
        page.goto(f"{site.url}/admin/sms/reconciliation/{run['id']}")
        page.get_by_role("button", name=f"Accept item {item['id']}").click()
        assert page.get_by_text(f"Item {item['id']} is accepted").is_visible()
        assert page.locator(f"#item-{item['id']} [data-resolution]").inner_text() == "accepted"
    finally:
        context.close()


# --- with the test client ------------------------------------------------------------------


def test_a_run_from_sippy_through_the_form(site: Site) -> None:
    http = staff_client(site, "accountant")
    answer = upload(http, None, source="sippy")
    assert answer.status_code == 303
    run_page = http.get(answer.headers["Location"])
    assert run_page.status_code == 200
    assert "reconciled" in run_page.get_data(as_text=True)
    (run,) = site.api.as_role("accountant").get(RUNS).json["items"]
    assert run["source"] == "sippy" and run["created_by"] == "web:accountant"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"from": "2026-13-45"}, "From must be a date (YYYY-MM-DD) or an RFC 3339 time."),
        ({"to": "yesterday"}, "To must be a date (YYYY-MM-DD) or an RFC 3339 time."),
        ({"from": ""}, "From is required"),
        ({"from": "2026-11-25", "to": "2026-11-24"}, "To must be after From."),
        ({"window_minutes": "-3"}, "The time window must be a whole number of minutes"),
        ({"mapping": "memo"}, "Write the mapping as ours=theirs pairs"),
        ({"source": "fax"}, "Choose Sippy or an uploaded statement."),
    ],
)
def test_bad_run_fields_are_a_message_on_the_tab(
    site: Site, fields: dict[str, str], message: str
) -> None:
    http = staff_client(site)
    answer = upload(http, MANUAL_DEBIT.encode(), **fields)
    assert answer.status_code == 422
    assert message in answer.get_data(as_text=True)
    assert runs_total(site.api) == 0


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (None, "Choose the statement CSV to upload."),
        (b"", "The statement is empty."),
        (HEADER.encode(), "The statement has a header but no lines."),
        (b"i_account,amount\n1001,0.02\n", "The statement lacks the column(s)"),
        (MANUAL_DEBIT.replace("5.00", "five").encode(), "1 line(s) of the statement cannot"),
        (b"\xff\xfe\x00binary", "The statement is not UTF-8 text"),
    ],
)
def test_unreadable_statements_are_a_message_and_store_no_run(
    site: Site, raw: bytes | None, message: str
) -> None:
    http = staff_client(site)
    answer = upload(http, raw)
    text = answer.get_data(as_text=True)
    assert answer.status_code == 422
    assert message in text
    if raw is not None and b"five" in raw:
        assert 'id="statement-errors"' in text and "&#39;five&#39; is not a decimal amount" in text
    assert runs_total(site.api) == 0


def test_without_sippy_a_sippy_run_says_so_on_the_tab(
    make_api: Callable[..., ApiClient], pg_url: str
) -> None:
    api = make_api(Config(database_url=pg_url, secret_key="a-cookie-signing-key-for-the-tests"))
    http = staff_client(api)
    assert "Sippy is not configured" in http.get("/admin/sms?tab=reconciliation").get_data(
        as_text=True
    )
    answer = upload(http, None, source="sippy")
    assert answer.status_code == 503
    assert "Sippy is not configured (SIPPY_URL is not set)" in answer.get_data(as_text=True)
    assert runs_total(api) == 0


def test_an_unreachable_sippy_is_a_message_not_a_500(site: Site) -> None:
    site.sim.state.inject_fault(method="getPaymentsList", kind="http_5xx")
    http = staff_client(site)
    answer = upload(http, None, source="sippy")
    assert answer.status_code == 503
    assert "Sippy&#39;s statement could not be fetched" in answer.get_data(as_text=True)


def test_unknown_runs_items_and_accounts_are_404_pages(site: Site) -> None:
    customer_on_1001(site)
    run = api_run(site, MANUAL_DEBIT)
    http = staff_client(site, "accountant")
    assert (
        http.get("/admin/sms/reconciliation/00000000-0000-0000-0000-000000000000").status_code
        == 404
    )
    assert http.get("/admin/sms/reconciliation/not-a-uuid").status_code == 404
    assert http.get("/admin/sms/reconciliation/accounts/no:such:account").status_code == 404
    token = csrf_token(http, f"/admin/sms/reconciliation/{run['id']}")
    missing = http.post(
        f"/admin/sms/reconciliation/{run['id']}/items/999999/resolve",
        data={"action": "accept", "csrf_token": token},
    )
    assert missing.status_code == 404
    difference = next(i for i in run["items"] if i["kind"] == "missing_in_ledger")["id"]
    path = f"/admin/sms/reconciliation/{run['id']}/items/{difference}/resolve"
    first = http.post(path, data={"action": "dismiss", "csrf_token": token})
    assert first.status_code == 303
    again = http.post(
        path, data={"action": "accept", "csrf_token": token}, headers={"HX-Request": "true"}
    )
    assert again.status_code == 409
    assert again.headers["HX-Retarget"] == "#notices"
    assert "the item was dismissed already" in again.get_data(as_text=True)
    assert http.get(f"/admin/sms/reconciliation/{run['id']}.csv").mimetype == "text/csv"


def test_a_resolve_without_its_csrf_token_is_refused_and_changes_nothing(site: Site) -> None:
    customer_on_1001(site)
    run = api_run(site, MANUAL_DEBIT)
    (item,) = [i for i in run["items"] if i["kind"] == "missing_in_ledger"]
    http = staff_client(site, "accountant")
    answer = http.post(
        f"/admin/sms/reconciliation/{run['id']}/items/{item['id']}/resolve",
        data={"action": "accept"},
    )
    assert answer.status_code == 400
    report = site.api.as_role("accountant").get(f"{RUNS}/{run['id']}").json
    assert all(i["resolution"] is None for i in report["items"])
    assert upload_without_token(http).status_code == 400
    assert runs_total(site.api) == 1


def upload_without_token(http: FlaskClient) -> Any:
    data = {**RANGE, "statement": (io.BytesIO(MANUAL_DEBIT.encode()), "s.csv")}
    return http.post(
        "/admin/sms/reconciliation/runs", data=data, content_type="multipart/form-data"
    )


def test_the_trial_balance_and_a_statement_read_bad_filters_as_messages(site: Site) -> None:
    customer_on_1001(site)
    http = staff_client(site, "accountant")
    page = http.get("/admin/sms/reconciliation/trial-balance")
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "sippy:clearing:USD" in text and "balanced" in text
    bad = http.get("/admin/sms/reconciliation/trial-balance?as_of=soon")
    assert bad.status_code == 400
    assert "As of must be a date" in bad.get_data(as_text=True)
    statement = http.get("/admin/sms/reconciliation/accounts/customer:rc-1:receivable")
    assert statement.status_code == 200
    assert "No transfers in the range." in statement.get_data(as_text=True)
    bad = http.get("/admin/sms/reconciliation/accounts/customer:rc-1:receivable?from=x&page=0")
    assert bad.status_code == 400
    assert "From must be a date" in bad.get_data(as_text=True)

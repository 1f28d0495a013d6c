"""The billing tab, as an admin uses it: the headline figures, filters in the URL, the actions
that change a record's status without a reload, the cycle run, the CSV export; and what the tab
refuses: forms without a CSRF token, bad filters, another role's actions."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from typing import Any

import pytest

from tests.scenarios import sms
from tests.web.conftest import Site, Watched, csrf_of, sign_in, staff_client

pytestmark = pytest.mark.postgres

RECORDS = "/api/admin/sms/billing"


def arrange_pending(site: Site) -> dict[str, Any]:
    """User 42 (Sippy account 1001, manual approval) and user 43 (no account) each sent an
    SMS yesterday; yesterday is closed: 42's invoice waits for approval, 43's failed."""
    admin = site.api.as_role("admin")
    service = site.api.as_role("service")
    yesterday = site.clock() - timedelta(days=1)
    for user in ("42", "43"):
        assert service.post("/api/usage", sms(f"m-{user}", yesterday, user=user)).status_code == 201
    assert admin.patch("/api/admin/customers/42", {"sippy_account_id": "1001"}).status_code == 200
    settings = {"userId": "42", "require_manual_approval": True}
    assert admin.put("/api/admin/sms/billing-settings", settings).status_code == 200
    assert site.api.as_cron().post("/api/cron/process-sms-billing?type=daily").status_code == 200
    items = admin.get(RECORDS).json["items"]
    return {item["user_id"]: item for item in items}


@pytest.mark.browser
def test_an_admin_filters_and_processes_a_pending_record_until_it_is_paid(
    page: Any, site: Site, watched: Watched
) -> None:
    records = arrange_pending(site)
    pending = records["42"]
    assert pending["status"] == "pending"
    sign_in(page, site)

    page.get_by_label("Status").select_option("pending")
    page.get_by_role("button", name="Filter").click()
    assert "status=pending" in page.url
    rows = page.locator("#records tbody tr")
    assert rows.count() == 1
    row = page.locator(f"#record-{pending['id']}")
    assert row.locator("[data-status]").inner_text() == "pending"

    before = page.evaluate("window.performance.getEntriesByType('navigation').length")
    row.get_by_role("button", name="Process").click()
    page.locator(f"#record-{pending['id']} [data-status=paid]").wait_for()
    assert page.evaluate("window.performance.getEntriesByType('navigation').length") == before
    assert site.sim.state.payments(1001)[0]["notes"].startswith(f"smsledger:{pending['id']}:")
    assert watched.foreign_requests == [] and watched.console_errors == []


@pytest.mark.browser
def test_cancel_asks_first_and_a_dismissed_question_changes_nothing(page: Any, site: Site) -> None:
    failed = arrange_pending(site)["43"]
    assert failed["status"] == "failed"
    sign_in(page, site)
    row = page.locator(f"#record-{failed['id']}")

    page.once("dialog", lambda dialog: dialog.dismiss())
    row.get_by_role("button", name="Cancel").click()
    page.wait_for_timeout(300)
    assert row.locator("[data-status]").inner_text() == "failed"

    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Cancel").click()
    page.locator(f"#record-{failed['id']} [data-status=cancelled]").wait_for()
    detail = site.api.as_role("admin").get(f"{RECORDS}/{failed['id']}").json
    assert detail["status"] == "cancelled"


@pytest.mark.browser
def test_without_javascript_an_action_is_a_form_and_cancel_a_confirmation_page(
    browser: Any, site: Site
) -> None:
    failed = arrange_pending(site)["43"]
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        sign_in(page, site)
        page.locator(f"#record-{failed['id']}").get_by_role("button", name="Cancel").click()
        assert page.get_by_role("alert").inner_text().startswith("Cancel billing record")
        page.get_by_role("button", name="Yes, cancel").click()
        assert "is now cancelled" in page.get_by_role("status").first.inner_text()
        assert page.locator(f"#record-{failed['id']} [data-status]").inner_text() == "cancelled"
    finally:
        context.close()


@pytest.mark.browser
def test_running_a_billing_cycle_shows_its_summary(page: Any, site: Site) -> None:
    yesterday = site.clock() - timedelta(days=1)
    assert site.api.as_role("service").post("/api/usage", sms("m1", yesterday)).status_code == 201
    sign_in(page, site)

    page.get_by_label("Type").select_option("daily")
    page.get_by_role("button", name="Run billing cycle").click()
    notice = page.locator("#notices [role=status]")
    notice.wait_for()
    assert "1 invoices created" in notice.inner_text()


def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(site: Site) -> None:
    failed = arrange_pending(site)["43"]
    client = staff_client(site)

    refused = client.post(f"/admin/sms/billing/{failed['id']}/action", data={"action": "cancel"})

    assert refused.status_code == 400
    assert "CSRF" in refused.text
    assert site.api.as_role("admin").get(f"{RECORDS}/{failed['id']}").json["status"] == "failed"
    token = csrf_of(client.get("/admin/sms").text)
    done = client.post(
        f"/admin/sms/billing/{failed['id']}/action", data={"action": "cancel", "csrf_token": token}
    )
    assert done.status_code == 303


def test_bad_filters_show_a_message_and_the_unfiltered_list(site: Site) -> None:
    arrange_pending(site)
    client = staff_client(site)

    answer = client.get("/admin/sms?tab=billing&status=lost&user=<b>&from=yesterday&page=0")

    assert answer.status_code == 400
    for message in ("Status must be one of", "User may hold only", "From must be a date", "Page"):
        assert message in answer.text
    assert answer.text.count('<tr id="record-') == 2
    assert "<b>" not in answer.text


def test_the_csv_export_has_every_filtered_record(site: Site) -> None:
    records = arrange_pending(site)
    client = staff_client(site)

    answer = client.get("/admin/sms/billing.csv?status=failed")

    assert answer.status_code == 200 and answer.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert [(r["id"], r["status"], r["amount"]) for r in rows] == [
        (records["43"]["id"], "failed", records["43"]["amount"])
    ]


def test_an_accountant_sees_records_but_no_actions_and_may_not_act(site: Site) -> None:
    failed = arrange_pending(site)["43"]
    client = staff_client(site, "accountant")

    page = client.get("/admin/sms?tab=billing")
    assert page.status_code == 200 and f'id="record-{failed["id"]}"' in page.text
    assert "Run billing cycle" not in page.text
    token = csrf_of(page.text)
    refused = client.post(
        f"/admin/sms/billing/{failed['id']}/action", data={"action": "cancel", "csrf_token": token}
    )
    assert refused.status_code == 403
    assert client.get("/admin/sms?tab=settings").status_code == 403


def test_every_page_answer_carries_the_content_security_policy(site: Site) -> None:
    client = staff_client(site)
    for path in ("/admin/sms", "/admin/sms?tab=billing", "/admin/sms/nowhere"):
        answer = client.get(path)
        policy = answer.headers["Content-Security-Policy"]
        assert policy.startswith("default-src 'self';") and "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy


def test_signing_out_ends_the_session_on_the_server(site: Site) -> None:
    client = staff_client(site)
    cookie = client.get_cookie("smsledger_session").value
    token = csrf_of(client.get("/admin/sms").text)
    assert client.post("/admin/sms/sign-out", data={"csrf_token": token}).status_code == 303

    replay = site.api.app.test_client()
    replay.set_cookie("smsledger_session", cookie)
    assert 'name="api_key"' in replay.get("/admin/sms").text


def test_revoking_the_key_ends_its_sessions(site: Site) -> None:
    client = staff_client(site)
    assert "Billing records" in client.get("/admin/sms").text
    runner = site.api.app.test_cli_runner()
    listed = runner.invoke(args=["keys", "list"])
    admin_id = next(
        line.split("\t")[0][1:] for line in listed.output.splitlines() if "\tadmin\t" in line
    )

    assert runner.invoke(args=["keys", "revoke", admin_id]).exit_code == 0

    assert 'name="api_key"' in client.get("/admin/sms").text
    assert runner.invoke(args=["keys", "revoke", admin_id]).exit_code == 1

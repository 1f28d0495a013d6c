"""What the staff pages refuse, and how: every refusal is a page (or, for htmx, a notice in the
page's notice area) with a reason, never a 500; and where the pages keep their secret."""

from __future__ import annotations

import os
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.scenarios import sms
from tests.web.conftest import Site, csrf_token, staff_client
from web.security import stored_secret_key

pytestmark = pytest.mark.postgres

HTMX = {"HX-Request": "true"}


def post(http: Any, path: str, htmx: bool = False, **form: str) -> Any:
    form.setdefault("csrf_token", csrf_token(http, "/admin/sms"))
    return http.post(path, data=form, headers=HTMX if htmx else {})


def pending_record(site: Site) -> str:
    """A pending invoice of user 42 that waits for approval."""
    service, admin = site.api.as_role("service"), site.api.as_role("admin")
    assert (
        service.post("/api/usage", sms("m1", site.clock() - timedelta(days=1))).status_code == 201
    )
    manual = {"userId": "42", "require_manual_approval": True}
    assert admin.put("/api/admin/sms/billing-settings", manual).status_code == 200
    assert site.api.as_cron().post("/api/cron/process-sms-billing?type=daily").status_code == 200
    (record,) = admin.get("/api/admin/sms/billing").json["items"]
    return str(record["id"])


def test_the_sign_in_and_the_tabs_refuse_with_a_reason(site: Site) -> None:
    http = site.api.app.test_client()
    empty = post(http, "/admin/sms/sign-in", api_key="  ")
    assert empty.status_code == 400 and "Paste an API key" in empty.text
    ended = post(http, f"/admin/sms/billing/{uuid.uuid4()}/action", action="process")
    assert ended.status_code == 401 and 'name="api_key"' in ended.text

    admin = staff_client(site)
    assert admin.get("/admin/sms?tab=nowhere").status_code == 404
    assert "There is no tab" in admin.get("/admin/sms?tab=nowhere").text


def test_record_actions_refuse_unknown_actions_records_and_states(site: Site) -> None:
    record = pending_record(site)
    http = staff_client(site)
    action = f"/admin/sms/billing/{record}/action"

    unknown_action = post(http, action, action="explode")
    assert unknown_action.status_code == 303
    assert "There is no action" in http.get(unknown_action.location).text
    missing = post(http, f"/admin/sms/billing/{uuid.uuid4()}/action", htmx=True, action="process")
    assert missing.status_code == 404 and missing.headers["HX-Retarget"] == "#notices"
    assert "There is no billing record" in missing.text
    wrong_state = post(http, action, htmx=True, action="retry")
    assert wrong_state.status_code == 409 and "Not done: cannot retry" in wrong_state.text
    assert http.get(f"/admin/sms/billing/{record}/confirm/explode").status_code == 404
    confirm = http.get(f"/admin/sms/billing/{record}/confirm/cancel?back=//evil.example/")
    assert confirm.status_code == 200
    assert 'name="back" value="/admin/sms?tab=billing"' in confirm.text  # never another host


def test_the_cycle_run_refuses_an_unknown_type_and_reports_a_done_one(site: Site) -> None:
    http = staff_client(site)
    refused = post(http, "/admin/sms/billing/run", htmx=True, type="hourly")
    assert refused.status_code == 422 and "Type must be one of" in refused.text
    done = post(http, "/admin/sms/billing/run", type="weekly")
    assert done.status_code == 303
    assert "Weekly cycle: 0 periods closed" in http.get(done.location).text
    assert http.get("/admin/sms/billing.csv?status=lost").status_code == 400


def test_customer_forms_refuse_bad_values_and_unknown_customers(site: Site) -> None:
    assert (
        site.api.as_role("service").post("/api/usage", sms("m1", site.clock())).status_code == 201
    )
    http = staff_client(site)

    assert http.get(f"/admin/sms?tab=customers&q={'x' * 65}").status_code == 400
    assert http.get("/admin/sms/customers/nobody/sippy-account").status_code == 404
    assert http.get("/admin/sms/customers/bad%20id/sippy-account").status_code == 404
    form = http.get("/admin/sms/customers/42/sippy-account")
    assert form.status_code == 200
    bad = post(http, "/admin/sms/customers/42/sippy-account", sippy_account_id="12ab")
    assert bad.status_code == 422 and "numeric i_account" in bad.text and 'value="12ab"' in bad.text
    bad_htmx = post(http, "/admin/sms/customers/42/sippy-account", htmx=True, sippy_account_id="x")
    assert bad_htmx.status_code == 422 and 'id="customer-42"' in bad_htmx.text
    assert (
        post(http, "/admin/sms/customers/nobody/sippy-account", sippy_account_id="1").status_code
        == 404
    )
    set_one = post(
        http, "/admin/sms/customers/42/sippy-account", htmx=True, sippy_account_id="1001"
    )
    assert set_one.status_code == 200 and "is now Sippy account 1001" in set_one.text
    cleared = post(http, "/admin/sms/customers/42/sippy-account", sippy_account_id="")
    assert cleared.status_code == 303
    assert "has no Sippy account now" in http.get(cleared.location).text

    status = "/admin/sms/customers/42/status"
    assert post(http, status, htmx=True, status="banned").status_code == 422
    assert post(http, status, status="banned").status_code == 303
    assert post(http, "/admin/sms/customers/nobody/status", status="suspended").status_code == 404
    assert post(http, "/admin/sms/customers/bad%20id/status", status="suspended").status_code == 404
    suspended = post(http, status, htmx=True, status="suspended")
    assert suspended.status_code == 200 and "is suspended" in suspended.text


def test_the_cookie_key_is_made_once_private_and_then_kept(tmp_path: Path) -> None:
    path = tmp_path / "var" / "secret_key"
    first = stored_secret_key(path)
    assert len(first) >= 48 and path.stat().st_mode & 0o777 == 0o600
    assert stored_secret_key(path) == first
    os.chmod(path, 0o600)
    path.write_text("  from-another-process  \n")
    assert stored_secret_key(path) == "from-another-process"

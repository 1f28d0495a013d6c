"""What the staff pages refuse, and how: every refusal is a page (or, for htmx, a notice in the
page's notice area) with a reason, never a 500; and where the pages keep their secret."""

from __future__ import annotations

import os
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.scenarios import charging_config, sms
from tests.web.conftest import Site, csrf_of, csrf_token, staff_client
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


def test_over_https_the_forms_work_because_the_referrer_stays_on_this_host(site: Site) -> None:
    """flask-wtf's CSRF check over HTTPS wants a same-origin `Referer`: the staff pages send
    theirs to this host (`same-origin`), the user pages none."""
    http = site.api.app.test_client()
    base = "https://billing.example"
    form = http.get("/admin/sms", base_url=base)
    assert form.headers["Referrer-Policy"] == "same-origin"
    token = csrf_of(form.text)
    signed = http.post(
        "/admin/sms/sign-in",
        base_url=base,
        data={"api_key": site.key("admin"), "csrf_token": token},
        headers={"Referer": f"{base}/admin/sms"},
    )
    assert signed.status_code == 303
    assert "Secure" in signed.headers["Set-Cookie"]
    widget = http.get("/widget/billing", base_url=base)
    assert widget.headers["Referrer-Policy"] == "no-referrer"


def test_nul_characters_and_odd_digits_are_refused_as_bad_requests(site: Site) -> None:
    http = staff_client(site)
    assert http.get("/admin/sms?tab=billing&user=a%00b").status_code == 400
    assert http.get("/widget/billing?x=%00").status_code == 400
    odd = http.get("/admin/sms?tab=billing&page=%C2%B2")  # "²": a digit to str.isdigit
    assert odd.status_code == 400 and "Page must be a whole number" in odd.text
    nul_note = post(http, "/admin/sms/customers/42/status", status="active\x00")
    assert nul_note.status_code == 400 and "NUL characters" in nul_note.text


def test_a_pager_link_keeps_the_filters_as_a_query_string_only(site: Site) -> None:
    from web.filters import page_url

    app = site.api.app
    with app.test_request_context("/admin/sms?tab=billing&_external=1&status=paid&page=2"):
        assert page_url(3) == "/admin/sms?tab=billing&_external=1&status=paid&page=3"


def test_htmx_gets_a_notice_not_a_page_and_a_lapsed_session_reloads(site: Site) -> None:
    http = site.api.app.test_client()
    token = csrf_token(http, "/admin/sms")
    lapsed = http.post(
        f"/admin/sms/billing/{uuid.uuid4()}/action",
        data={"action": "process", "csrf_token": token},
        headers=HTMX,
    )
    assert lapsed.status_code == 401 and lapsed.headers["HX-Refresh"] == "true"
    assert "<html" not in lapsed.text and "Sign in again" in lapsed.text
    admin = staff_client(site)
    gone = admin.get(f"/admin/sms/billing/{uuid.uuid4()}", headers=HTMX)
    assert gone.status_code == 404 and gone.headers["HX-Retarget"] == "#notices"


def test_behind_a_proxy_cookies_follow_its_https(
    make_api: Any, pg_url: str, start_sim: Any
) -> None:

    sim = start_sim()
    trusted = make_api(charging_config(pg_url, sim, trust_proxy_headers=True))
    answer = trusted.app.test_client().get(
        "/admin/sms", headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "b.example"}
    )
    assert "Secure" in answer.headers["Set-Cookie"]
    forced = make_api(charging_config(pg_url, sim, secure_cookies=True))
    assert "Secure" in forced.app.test_client().get("/admin/sms").headers["Set-Cookie"]
    plain = make_api(charging_config(pg_url, sim))
    assert "Secure" not in plain.app.test_client().get("/admin/sms").headers["Set-Cookie"]


def test_an_empty_key_file_is_an_error_not_an_empty_key(tmp_path: Path) -> None:
    path = tmp_path / "secret_key"
    path.write_text("")
    with pytest.raises(RuntimeError, match="is empty"):
        stored_secret_key(path)


def test_exported_text_never_becomes_a_spreadsheet_formula() -> None:
    from web.billing_tab import as_cell

    assert [as_cell(t) for t in ("=1+1", "+44", "-x", "@sum", "plain", "")] == [
        "'=1+1",
        "'+44",
        "'-x",
        "'@sum",
        "plain",
        "",
    ]

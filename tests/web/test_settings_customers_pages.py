"""The settings and customers tabs: the global defaults and the per-user overrides (each field
overridden or inherited), the service's refusals next to their field, customers found, given a
Sippy account, suspended and reactivated; names shown as inert text; without JavaScript too."""

from __future__ import annotations

from typing import Any

import pytest

from tests.web.conftest import Site, Watched, csrf_token, sign_in, staff_client

pytestmark = [pytest.mark.postgres]

SETTINGS = "/api/admin/sms/billing-settings"
CUSTOMERS = "/api/admin/customers"
GLOBAL_FORM = {
    "frequency": "daily",
    "threshold_amount": "",
    "threshold_messages": "",
    "currency": "USD",
    "auto_process": "on",
    "notifications_enabled": "on",
    "notify_at_percent": "80",
    "max_pending_invoices": "",
    "credit_limit": "",
    "webhook_url": "",
}


def global_settings(site: Site) -> dict[str, Any]:
    body = site.api.as_role("admin").get(SETTINGS, query_string={"includeGlobal": "true"}).json
    return dict(body["global"])


def user_settings(site: Site, user_id: str) -> dict[str, Any]:
    (found,) = (
        site.api.as_role("admin").get(SETTINGS, query_string={"userId": user_id}).json["users"]
    )
    return dict(found)


def create_customer(site: Site, user_id: str, **fields: Any) -> None:
    answer = site.api.as_role("admin").post(CUSTOMERS, {"user_id": user_id, **fields})
    assert answer.status_code == 201, answer.json


def status_of(site: Site, user_id: str) -> str:
    return str(site.api.as_role("admin").get(f"{CUSTOMERS}/{user_id}").json["status"])


def source_of(page: Any, user_id: str, name: str) -> str:
    cell = page.locator(f'section[data-user="{user_id}"] tr[data-field="{name}"] .source')
    return str(cell.inner_text()).strip()


# --- in the browser ------------------------------------------------------------------------


@pytest.mark.browser
def test_an_override_changed_in_the_tab_is_shown_overridden_and_the_rest_inherited(
    page: Any, site: Site, watched: Watched
) -> None:
    put = site.api.as_role("admin").put(SETTINGS, {"userId": "u-7", "frequency": "weekly"})
    assert put.status_code == 200
    sign_in(page, site)
    page.goto(f"{site.url}/admin/sms?tab=settings")
    assert source_of(page, "u-7", "frequency") == "overridden"
    assert source_of(page, "u-7", "notify_at_percent") == "inherited"

    page.get_by_role("link", name="Change overrides of user u-7").click()
    page.get_by_label("Notify at percent").fill("50")
    page.get_by_role("button", name="Save overrides").click()

    assert page.get_by_text("The overrides of user u-7 are saved.").is_visible()
    row = page.locator('section[data-user="u-7"] tr[data-field="notify_at_percent"]')
    assert row.locator(".value").inner_text() == "50"
    assert source_of(page, "u-7", "notify_at_percent") == "overridden"
    assert source_of(page, "u-7", "frequency") == "overridden"
    for name in ("currency", "auto_process", "credit_limit", "webhook_url", "threshold_amount"):
        assert source_of(page, "u-7", name) == "inherited"
    saved = user_settings(site, "u-7")
    assert saved["overrides"] == {"frequency": "weekly", "notify_at_percent": 50}
    assert watched.console_errors == [] and watched.foreign_requests == []


@pytest.mark.browser
def test_an_override_added_and_all_removed_with_confirmation(page: Any, site: Site) -> None:
    sign_in(page, site)
    page.goto(f"{site.url}/admin/sms?tab=settings")
    page.get_by_text("Add overrides for a user").click()
    page.locator("#add-user_id").fill("u-9")
    page.locator("#add-credit_limit").fill("12.50")
    page.locator("#add-block_on_pending").select_option("yes")
    page.get_by_role("button", name="Save overrides").click()

    credit = page.locator('section[data-user="u-9"] tr[data-field="credit_limit"]')
    assert credit.locator(".value").inner_text() == "12.50 USD"
    assert source_of(page, "u-9", "credit_limit") == "overridden"
    assert source_of(page, "u-9", "block_on_pending") == "overridden"
    assert source_of(page, "u-9", "frequency") == "inherited"

    page.on("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Remove all overrides of user u-9").click()
    page.get_by_text("The overrides of user u-9 are removed").wait_for()
    assert user_settings(site, "u-9")["overrides"] == {}


@pytest.mark.browser
def test_an_invalid_value_shows_the_services_message_next_to_the_field(
    page: Any, site: Site
) -> None:
    sign_in(page, site)
    page.goto(f"{site.url}/admin/sms?tab=settings")
    field = page.locator("#global-notify_at_percent")
    field.fill("150")
    page.get_by_role("button", name="Save global settings").click()

    field = page.locator("#global-notify_at_percent")
    assert "is-invalid" in (field.get_attribute("class") or "")
    assert field.input_value() == "150"
    feedback = page.locator("#global-notify_at_percent-error")
    assert feedback.is_visible()
    assert feedback.inner_text() == "notify_at_percent must be 1 to 100"
    assert "global-notify_at_percent-error" in (field.get_attribute("aria-describedby") or "")
    assert global_settings(site)["notify_at_percent"] == 80


@pytest.mark.browser
def test_a_customer_named_like_a_script_is_shown_as_text_and_runs_nothing(
    page: Any, site: Site, watched: Watched
) -> None:
    name = "<script>alert(1)</script>"
    create_customer(site, "x-1", name=name)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    sign_in(page, site)
    page.goto(f"{site.url}/admin/sms?tab=customers")

    row = page.locator('tr[data-user="x-1"]')
    assert row.locator(".name").inner_text() == name
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.content()
    page.get_by_label("User id or name").fill("script")
    page.get_by_role("button", name="Search").click()
    assert page.locator('tr[data-user="x-1"] .name').inner_text() == name
    assert dialogs == []
    assert watched.console_errors == []


@pytest.mark.browser
def test_a_customer_is_suspended_reactivated_and_given_a_sippy_account(
    page: Any, site: Site
) -> None:
    create_customer(site, "x-2", name="Acme")
    sign_in(page, site)
    page.goto(f"{site.url}/admin/sms?tab=customers")
    row = page.locator('tr[data-user="x-2"]')

    row.get_by_role("button", name="Suspend user x-2").click()
    page.locator('tr[data-user="x-2"] [data-status="suspended"]').wait_for()
    assert page.get_by_text("User x-2 is suspended.").is_visible()
    assert status_of(site, "x-2") == "suspended"

    page.get_by_role("button", name="Reactivate user x-2").click()
    page.locator('tr[data-user="x-2"] [data-status="active"]').wait_for()
    assert status_of(site, "x-2") == "active"

    page.get_by_label("Sippy account of user x-2").fill("1003")
    page.get_by_role("button", name="Save Sippy account of user x-2").click()
    page.get_by_text("User x-2 is now Sippy account 1003.").wait_for()
    answer = site.api.as_role("admin").get(f"{CUSTOMERS}/x-2").json
    assert answer["sippy_account_id"] == "1003"

    page.get_by_label("Sippy account of user x-2").fill("12ab")
    page.get_by_role("button", name="Save Sippy account of user x-2").click()
    page.get_by_text("must be Sippy's numeric i_account").wait_for()
    assert page.get_by_label("Sippy account of user x-2").input_value() == "12ab"
    assert site.api.as_role("admin").get(f"{CUSTOMERS}/x-2").json["sippy_account_id"] == "1003"


@pytest.mark.browser
def test_suspending_works_without_javascript(browser: Any, site: Site) -> None:
    create_customer(site, "x-3")
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.set_default_timeout(10_000)
        sign_in(page, site)
        page.goto(f"{site.url}/admin/sms?tab=customers&q=x-3")
        page.get_by_role("button", name="Suspend user x-3").click()
        assert page.get_by_text("User x-3 is suspended.").is_visible()
        assert page.url.endswith("/admin/sms?tab=customers&q=x-3")
        assert status_of(site, "x-3") == "suspended"
    finally:
        context.close()


# --- with the test client ------------------------------------------------------------------


def test_settings_refusals_keep_the_input_and_name_their_field(site: Site) -> None:
    http = staff_client(site)
    token = csrf_token(http, "/admin/sms?tab=settings")

    answer = http.post(
        "/admin/sms/settings/global",
        data={**GLOBAL_FORM, "frequency": "threshold", "csrf_token": token},
    )
    text = answer.get_data(as_text=True)
    assert answer.status_code == 422
    assert 'id="global-threshold_amount-error"' in text
    assert "threshold billing needs threshold_amount or threshold_messages" in text

    answer = http.post(
        "/admin/sms/settings/global",
        data={**GLOBAL_FORM, "credit_limit": "12.3456789", "csrf_token": token},
    )
    text = answer.get_data(as_text=True)
    assert answer.status_code == 422
    assert 'id="global-credit_limit-error"' in text and 'value="12.3456789"' in text

    answer = http.post(
        "/admin/sms/settings/global",
        data={**GLOBAL_FORM, "currency": "XYZ", "csrf_token": token},
    )
    assert answer.status_code == 422
    assert "XYZ is not an ISO 4217 currency" in answer.get_data(as_text=True)

    answer = http.post(
        "/admin/sms/settings/overrides",
        data={"user_id": "u 1", "threshold_messages": "lots", "csrf_token": token},
    )
    text = answer.get_data(as_text=True)
    assert answer.status_code == 422
    assert 'id="add-user_id-error"' in text and 'id="add-threshold_messages-error"' in text
    assert global_settings(site)["frequency"] == "daily"
    assert site.api.as_role("admin").get(SETTINGS).json["users"] == []


def test_the_global_settings_are_saved_through_the_service(site: Site) -> None:
    http = staff_client(site)
    token = csrf_token(http, "/admin/sms?tab=settings")
    form = {
        **GLOBAL_FORM,
        "frequency": "threshold",
        "threshold_amount": "25.5",
        "credit_limit": "100",
        "webhook_url": "https://hooks.example/sms",
        "csrf_token": token,
    }
    del form["auto_process"]
    answer = http.post("/admin/sms/settings/global", data=form)
    assert answer.status_code == 303
    saved = global_settings(site)
    assert saved["frequency"] == "threshold" and saved["threshold_amount"] == "25.50"
    assert saved["credit_limit"] == "100.00" and saved["auto_process"] is False
    assert saved["webhook_url"] == "https://hooks.example/sms"
    page = http.get("/admin/sms?tab=settings").get_data(as_text=True)
    assert 'value="25.50"' in page and "The global settings are saved." in page


def test_clearing_a_field_on_the_edit_page_inherits_it_again(site: Site) -> None:
    site.api.as_role("admin").put(
        SETTINGS, {"userId": "u-5", "frequency": "weekly", "credit_limit": "5"}
    )
    http = staff_client(site)
    page = http.get("/admin/sms/settings/overrides/u-5").get_data(as_text=True)
    assert 'value="5.00"' in page
    token = csrf_token(http, "/admin/sms/settings/overrides/u-5")
    answer = http.post(
        "/admin/sms/settings/overrides",
        data={"user_id": "u-5", "replace": "1", "frequency": "weekly", "csrf_token": token},
    )
    assert answer.status_code == 303
    assert user_settings(site, "u-5")["overrides"] == {"frequency": "weekly"}
    assert http.get("/admin/sms/settings/overrides/u%20x").status_code == 404

    refused = http.post(
        "/admin/sms/settings/overrides",
        data={"user_id": "u-5", "replace": "1", "credit_limit": "ten", "csrf_token": token},
    )
    text = refused.get_data(as_text=True)
    assert refused.status_code == 422
    assert 'id="edit-credit_limit-error"' in text and "is not a decimal number" in text
    assert user_settings(site, "u-5")["overrides"] == {"frequency": "weekly"}

    confirm = http.get("/admin/sms/settings/overrides/u-5/remove")
    assert confirm.status_code == 200
    assert "Yes, remove the overrides" in confirm.get_data(as_text=True)
    removed = http.post("/admin/sms/settings/overrides/u-5/remove", data={"csrf_token": token})
    assert removed.status_code == 303
    assert user_settings(site, "u-5")["overrides"] == {}


def test_a_post_without_its_csrf_token_is_refused_and_changes_nothing(site: Site) -> None:
    create_customer(site, "c-1")
    http = staff_client(site)
    answer = http.post("/admin/sms/customers/c-1/status", data={"status": "suspended"})
    assert answer.status_code == 400
    assert "CSRF" in answer.get_data(as_text=True)
    assert status_of(site, "c-1") == "active"
    answer = http.post("/admin/sms/settings/global", data={**GLOBAL_FORM, "frequency": "weekly"})
    assert answer.status_code == 400
    assert global_settings(site)["frequency"] == "daily"
    answer = http.post("/admin/sms/settings/overrides/c-1/remove")
    assert answer.status_code == 400


def test_customer_filters_and_bad_input_answer_messages_not_500s(site: Site) -> None:
    create_customer(site, "c-2", name="Northwind", sippy_account_id="1002")
    create_customer(site, "c-3", name="Contoso")
    http = staff_client(site)
    found = http.get("/admin/sms?tab=customers&q=north").get_data(as_text=True)
    assert 'data-user="c-2"' in found and 'data-user="c-3"' not in found
    found = http.get("/admin/sms?tab=customers&sippy=no").get_data(as_text=True)
    assert 'data-user="c-3"' in found and 'data-user="c-2"' not in found
    bad = http.get("/admin/sms?tab=customers&status=gone&page=x")
    assert bad.status_code == 400
    assert "Status must be one of active, suspended." in bad.get_data(as_text=True)

    token = csrf_token(http, "/admin/sms?tab=customers")
    refused = http.post(
        "/admin/sms/customers/c-3/sippy-account",
        data={"sippy_account_id": "<b>1</b>", "csrf_token": token},
    )
    text = refused.get_data(as_text=True)
    assert refused.status_code == 422
    assert "numeric i_account" in text and 'value="&lt;b&gt;1&lt;/b&gt;"' in text
    missing = http.post(
        "/admin/sms/customers/nobody/status", data={"status": "suspended", "csrf_token": token}
    )
    assert missing.status_code == 404
    wrong = http.post(
        "/admin/sms/customers/c-3/status", data={"status": "deleted", "csrf_token": token}
    )
    assert wrong.status_code == 303
    assert status_of(site, "c-3") == "active"


def test_an_accountant_cannot_reach_settings_or_customers(site: Site) -> None:
    http = staff_client(site, "accountant")
    assert http.get("/admin/sms?tab=settings").status_code == 403
    assert http.get("/admin/sms?tab=customers").status_code == 403
    assert http.get("/admin/sms/settings/overrides/u-1").status_code == 403
    assert http.get("/admin/sms/customers/c-1/sippy-account").status_code == 403

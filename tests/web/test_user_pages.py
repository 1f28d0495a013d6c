"""The end users' pages as a user of the host application meets them: the billing widget in the
dashboard's frame (a token exchanged for a session, usage against each limit as an accessible
progress bar, read again every minute), the billing history and the notifications; and what
they refuse: expired or forged tokens, another user's data, bad filters, other framing origins."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from billing.access.user_tokens import mint_user_token
from billing.notifications.store import store_notifications
from ledger.db import unit_of_work
from sippy_simulator.server import SimulatorHandle
from tests.client import ApiClient
from tests.scenarios import USER_TOKEN_SECRET, charging_config, sms
from tests.web.conftest import Site, Watched

pytestmark = pytest.mark.postgres

SETTINGS = "/api/admin/sms/billing-settings"
_ids = itertools.count()


def token_for(
    user_id: str, ttl: timedelta = timedelta(hours=1), secret: str = USER_TOKEN_SECRET
) -> str:
    """A host-application token minted now: PyJWT checks `exp` against the real time, not the
    site's fixed clock."""
    return mint_user_token(secret, user_id, datetime.now(UTC), ttl)


def widget_url(site: Site, user_id: str, **token: Any) -> str:
    return f"{site.url}/widget/billing?token={token_for(user_id, **token)}"


def send(site: Site, user_id: str, count: int, sent_at: datetime | None = None) -> None:
    """`count` GB SMS (0.0070 USD each) for `user_id`, sent an hour ago unless told."""
    when = sent_at or site.clock() - timedelta(hours=1)
    events = [sms(f"m-{user_id}-{next(_ids)}", when, user=user_id) for _ in range(count)]
    answer = site.api.as_role("service").post("/api/usage", {"events": events})
    assert answer.status_code in (200, 201), answer.json


def limit(api: ApiClient, user_id: str, **settings: Any) -> None:
    answer = api.as_role("admin").put(SETTINGS, {"userId": user_id, **settings})
    assert answer.status_code == 200, answer.json


def invoice_yesterday(site: Site, usage: dict[str, int]) -> dict[str, list[dict[str, Any]]]:
    """Each user's `usage` SMS sent yesterday, and the daily cycle run: the invoices by user."""
    yesterday = site.clock() - timedelta(days=1)
    for user_id, count in usage.items():
        send(site, user_id, count, sent_at=yesterday)
    assert site.api.as_cron().post("/api/cron/process-sms-billing?type=daily").status_code == 200
    listed: Any = site.api.as_role("admin").get("/api/admin/sms/billing").json
    items = listed["items"]
    found: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        found.setdefault(item["user_id"], []).append(item)
    return found


def signed_in(site: Site, user_id: str) -> Any:
    """A Flask test client holding `user_id`'s widget session, as a browser would after the
    first load."""
    client = site.api.app.test_client()
    first = client.get(f"/widget/billing?token={token_for(user_id)}")
    assert first.status_code == 303 and first.headers["Location"] == "/widget/billing"
    return client


def meter(page: Any, key: str) -> dict[str, Any]:
    """What a user (and a screen reader) learns from one meter of the widget."""
    section = page.locator(f'[data-limit="{key}"]')
    bar = section.get_by_role("progressbar")
    fill = bar.locator(".progress-bar")
    outer, inner = bar.bounding_box(), fill.bounding_box()
    return {
        "label": bar.get_attribute("aria-label"),
        "valuetext": bar.get_attribute("aria-valuetext"),
        "valuenow": bar.get_attribute("aria-valuenow"),
        "level": bar.get_attribute("data-level"),
        "classes": (fill.get_attribute("class") or "").split(),
        "style": fill.get_attribute("style"),
        "words": section.locator("[data-status-word]").inner_text(),
        "share": round(inner["width"] / outer["width"], 2),
    }


# --- the widget in a browser ---------------------------------------------------------------


@pytest.mark.browser
def test_the_widget_shows_a_threshold_at_three_levels_in_colour_number_and_word(
    page: Any, site: Site, watched: Watched
) -> None:
    limit(site.api, "42", threshold_amount="0.10", notify_at_percent=50)
    send(site, "42", 4)  # 0.0280 USD: 28 %

    page.goto(widget_url(site, "42"))

    assert "token=" not in page.url and page.url.endswith("/widget/billing")
    low = meter(page, "threshold_amount")
    assert low["label"] == "Billing threshold (amount)"
    assert low["valuetext"] == "0.028 of 0.10 USD"
    assert (low["level"], low["words"], low["valuenow"]) == ("ok", "28% · OK", "28")
    assert "bg-success" in low["classes"] and "pct-28" in low["classes"]
    assert low["style"] is None and low["share"] == 0.28

    send(site, "42", 6)  # 0.0700 USD: 70 %, past notify_at_percent
    page.reload()
    near = meter(page, "threshold_amount")
    assert near["valuetext"] == "0.07 of 0.10 USD"
    assert (near["level"], near["words"]) == ("near", "70% · Near limit")
    assert "bg-warning" in near["classes"] and near["share"] == 0.7

    send(site, "42", 5)  # 0.1050 USD: over the threshold
    page.reload()
    over = meter(page, "threshold_amount")
    assert over["valuetext"] == "0.105 of 0.10 USD"
    assert (over["level"], over["words"], over["valuenow"]) == (
        "reached",
        "105% · Limit reached",
        "100",
    )
    assert "bg-danger" in over["classes"] and "pct-100" in over["classes"]
    assert over["share"] == 1.0
    assert page.locator("[data-messages]").inner_text() == "15"
    assert page.get_by_role("link", name="Billing history").get_attribute("target") is None
    assert watched.foreign_requests == [] and watched.console_errors == []


@pytest.mark.browser
def test_the_widget_reads_its_figures_again_every_minute_without_a_reload(
    page: Any, site: Site, watched: Watched
) -> None:
    limit(site.api, "42", threshold_messages=20)
    send(site, "42", 2)
    page.clock.install()
    page.goto(widget_url(site, "42"))
    messages = page.locator('[data-limit="threshold_messages"] [role="progressbar"]')
    assert messages.get_attribute("aria-valuetext") == "2 of 20 messages"
    page.locator("#widget-body").evaluate("body => body.dataset.before = 'yes'")

    send(site, "42", 16)  # 18 of 20: near the limit (notify at 80 %)
    page.clock.run_for(61_000)

    page.locator('[role="progressbar"][aria-valuetext="18 of 20 messages"]').wait_for()
    assert messages.get_attribute("data-level") == "near"
    assert page.locator("#widget-body").get_attribute("data-before") is None  # swapped in
    assert page.url.endswith("/widget/billing")  # no reload, no navigation
    assert watched.console_errors == []


@pytest.mark.browser
def test_expired_and_forged_tokens_get_a_401_page_without_figures_and_end_the_session(
    page: Any, site: Site
) -> None:
    send(site, "42", 3)
    page.goto(widget_url(site, "42"))
    assert page.locator("[data-unbilled]").inner_text() == "0.021 USD"

    forged = mint_user_token(
        "another-secret-of-32-bytes-long!!", "42", datetime.now(UTC), timedelta(hours=1)
    )
    answer = page.goto(f"{site.url}/widget/billing?token={forged}")
    assert answer.status == 401
    assert page.get_by_role("heading", name="Sign in needed").is_visible()
    assert "USD" not in page.content() and page.locator("[role=progressbar]").count() == 0

    again = page.goto(f"{site.url}/widget/billing")  # the earlier session ended with it
    assert again.status == 401 and "0.021" not in page.content()

    expired = page.goto(widget_url(site, "42", ttl=timedelta(seconds=-1)))
    assert expired.status == 401 and "USD" not in page.content()
    assert page.goto(f"{site.url}/billing/history").status == 401


@pytest.mark.browser
def test_a_user_sees_only_their_own_invoices_whatever_the_url_says(page: Any, site: Site) -> None:
    invoices = invoice_yesterday(site, {"42": 2, "43": 3})
    (mine,), (theirs,) = invoices["42"], invoices["43"]

    page.goto(widget_url(site, "42"))
    for path in (
        "/billing/history?user=43",
        "/billing/history?user_id=43&userId=43",
        f"/billing/history?id={theirs['id']}",
    ):
        page.goto(site.url + path)
        shown = page.locator("[data-invoice]")
        assert [shown.nth(i).get_attribute("data-invoice") for i in range(shown.count())] == [
            mine["id"]
        ]
        assert theirs["id"] not in page.content()
    page.goto(f"{site.url}/widget/billing?user_id=43")
    assert page.locator("[data-last-invoice]").inner_text().startswith("0.01 USD")

    page.goto(widget_url(site, "43"))  # the host application's token for 43 switches
    page.goto(f"{site.url}/billing/history")
    assert page.locator("[data-invoice]").get_attribute("data-invoice") == theirs["id"]
    assert page.locator("[data-invoice]").count() == 1 and mine["id"] not in page.content()
    breakdown = page.locator(f'[data-invoice="{theirs["id"]}"] table')
    assert breakdown.get_by_role("columnheader", name="Country").is_visible()
    assert breakdown.get_by_role("rowheader", name="GB").is_visible()


@pytest.mark.browser
def test_the_pages_read_well_with_assistive_technology(page: Any, site: Site) -> None:
    from axe_playwright_python.sync_playwright import Axe

    limit(site.api, "42", threshold_amount="0.10", credit_limit="1.00", threshold_messages=100)
    invoice_yesterday(site, {"42": 2})
    send(site, "42", 9)
    page.goto(widget_url(site, "42"))
    assert page.get_by_role("progressbar").count() == 3
    axe = Axe()
    for path in ("/widget/billing", "/billing/history", "/billing/notifications"):
        page.goto(site.url + path)
        found = axe.run(page)
        serious = [
            v["id"]
            for v in found.response["violations"]
            if v.get("impact") in ("serious", "critical")
        ]
        assert serious == [], (path, found.generate_report())


# --- the widget through the test client ----------------------------------------------------


def test_each_limit_that_is_set_has_a_meter_and_the_credit_limit_counts_what_the_check_counts(
    site: Site,
) -> None:
    invoice_yesterday(site, {"42": 2})  # 0.014 USD rounded to 0.01, unpaid (no Sippy account)
    send(site, "42", 3)  # 0.021 USD unbilled
    client = signed_in(site, "42")
    plain = client.get("/widget/billing").text
    assert "No limit set" in plain and "0.021 USD" in plain and 'role="progressbar"' not in plain
    assert re.search(r"Next billing</dt>\s*<dd[^>]*>2026-11-25 02:00 UTC<", plain)

    limit(site.api, "42", frequency="threshold", credit_limit="0.05", threshold_messages=10)
    check = site.api.as_role("service").post(
        "/api/usage/check", {"user_id": "42", "message_count": 1}
    )
    exposure = "0.031"  # what the pre-send check holds against the credit limit
    decision: Any = check.json
    assert decision["unbilled"].rstrip("0") == "0.021"
    html = client.get("/widget/billing").text
    assert f'aria-valuetext="{exposure} of 0.05 USD"' in html
    assert 'aria-valuetext="3 of 10 messages"' in html
    assert 'data-limit="threshold_amount"' not in html and "No limit set" not in html
    assert "When the threshold is reached" in html
    assert re.search(r"Pending billings</dt>\s*<dd[^>]*>1 · 0.01 USD<", html)


def test_the_fragment_refreshes_the_body_and_a_lost_session_reloads_the_page(site: Site) -> None:
    send(site, "42", 1)
    client = signed_in(site, "42")
    page = client.get("/widget/billing").text
    assert '<noscript><meta http-equiv="refresh" content="60"></noscript>' in page
    assert 'hx-get="/widget/billing/fragment"' in page and 'hx-trigger="every 60s"' in page

    send(site, "42", 1)
    fragment = client.get("/widget/billing/fragment", headers={"HX-Request": "true"})
    assert fragment.status_code == 200
    assert (
        fragment.text.lstrip().startswith('<div id="widget-body"') and "<html" not in fragment.text
    )
    assert 'hx-swap="outerHTML"' in fragment.text and "0.014 USD" in fragment.text

    stranger = site.api.app.test_client().get(
        "/widget/billing/fragment", headers={"HX-Request": "true"}
    )
    assert stranger.status_code == 401 and stranger.headers["HX-Refresh"] == "true"
    assert "USD" not in stranger.text


def test_a_user_without_billing_yet_gets_a_friendly_widget(site: Site) -> None:
    html = signed_in(site, "newcomer").get("/widget/billing")
    assert html.status_code == 200 and "No billing yet" in html.text
    assert signed_in(site, "newcomer").get("/billing/history").status_code == 200
    assert signed_in(site, "newcomer").get("/billing/notifications").status_code == 200


def test_the_token_exchange_keeps_a_staff_session_and_the_other_query_arguments(
    site: Site,
) -> None:
    client = site.api.app.test_client()
    form = client.get("/admin/sms").text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert csrf
    signed = client.post(
        "/admin/sms/sign-in", data={"api_key": site.key("admin"), "csrf_token": csrf.group(1)}
    )
    assert signed.status_code == 303

    answer = client.get(f"/billing/history?status=paid&token={token_for('42')}")
    assert (answer.status_code, answer.headers["Location"]) == (303, "/billing/history?status=paid")
    assert "Signed in as admin" in client.get("/admin/sms").text
    assert client.get("/billing/history?status=paid").status_code == 200
    assert client.get("/billing/history?token=").status_code == 401
    assert client.get("/billing/history").status_code == 401  # the bad token ended it
    assert "Signed in as admin" in client.get("/admin/sms").text


# --- history and notifications -------------------------------------------------------------


def test_bad_filters_answer_400_with_a_message_never_500(site: Site) -> None:
    invoice_yesterday(site, {"42": 1})
    client = signed_in(site, "42")
    for path, message in (
        ("/billing/history?status=bogus", "Status must be one of"),
        ("/billing/history?page=0", "Page must be a whole number"),
        ("/billing/history?page=99999999999999999999", "Page must be a whole number"),
        ("/billing/notifications?type=%3Cb%3Ex%3C/b%3E", "Type must be one of"),
        ("/billing/notifications?page=-1", "Page must be a whole number"),
    ):
        answer = client.get(path)
        assert answer.status_code == 400, path
        assert message in answer.text and "<b>x</b>" not in answer.text
    assert "0.01 USD" in client.get("/billing/history?status=bogus").text  # the list still shows
    paid = client.get("/billing/history?status=paid")
    assert paid.status_code == 200 and "No invoices with status paid yet." in paid.text
    assert client.get("/billing/history?status=failed").text.count("data-invoice=") == 1


def test_history_is_newest_first_and_paginated(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("web.filters.PAGE_SIZE", 1)
    monkeypatch.setattr("web.user.PAGE_SIZE", 1)
    today = site.clock.now
    site.clock.now = today - timedelta(days=1)  # the day before: its own daily invoice
    invoice_yesterday(site, {"42": 1})
    site.clock.now = today
    invoices = invoice_yesterday(site, {"42": 2})["42"]
    assert len(invoices) == 2
    client = signed_in(site, "42")

    first = client.get("/billing/history").text
    assert "Page 1 of 2" in first and 'rel="next" href="/billing/history?page=2"' in first
    second = client.get("/billing/history?page=2").text
    newest, oldest = sorted(invoices, key=lambda i: i["period_start"], reverse=True)
    assert f'data-invoice="{newest["id"]}"' in first and f'data-invoice="{oldest["id"]}"' in second
    assert 'rel="prev" href="/billing/history?page=1"' in second


def test_notifications_list_the_users_own_and_stored_html_is_text(site: Site) -> None:
    invoice_yesterday(site, {"42": 2, "43": 1})
    with unit_of_work(site.api.sessions) as session:
        store_notifications(
            session,
            [
                {
                    "customer_id": "42",
                    "kind": "payment_failed",
                    "dedupe_key": "test-html-reason",
                    "payload": {
                        "invoice_id": "x",
                        "amount_micros": 10_000,
                        "currency": "USD",
                        "reason": '<img src=x onerror="alert(1)"><b>declined</b>',
                        "next_retry_at": None,
                    },
                    "created_at": site.clock(),
                }
            ],
        )
    client = signed_in(site, "42")
    html = client.get("/billing/notifications?user=43").text
    assert html.count("data-notification=") >= 2
    assert 'data-kind="invoice_issued"' in html and "Invoice issued" in html
    assert "<b>declined</b>" not in html and "&lt;b&gt;declined&lt;/b&gt;" in html
    assert "<img src=x" not in html and "0.01 USD" in html
    only_failed = client.get("/billing/notifications?type=payment_failed").text
    assert 'data-kind="invoice_issued"' not in only_failed and "Payment failed" in only_failed
    theirs: Any = site.api.as_user("43").get("/api/user/notifications").json
    api_ids = {n["id"] for n in theirs["items"]}
    assert api_ids and not any(f'data-notification="{i}"' in html for i in api_ids)


def test_no_page_has_inline_script_or_style_and_every_control_is_labelled(site: Site) -> None:
    limit(site.api, "42", threshold_amount="0.10", credit_limit="1.00")
    invoice_yesterday(site, {"42": 1})
    send(site, "42", 1)
    client = signed_in(site, "42")
    pages = [
        client.get(path).text
        for path in ("/widget/billing", "/billing/history", "/billing/notifications")
    ]
    pages.append(site.api.app.test_client().get("/widget/billing").text)
    for html in pages:
        assert " style=" not in html and "<style" not in html
        assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == []
        for control in re.findall(r'<(?:select|input)[^>]*\bid="([^"]+)"', html):
            assert f'for="{control}"' in html
        assert "<th>" not in html  # every header cell has its scope


# --- framing --------------------------------------------------------------------------------


def test_only_the_configured_origins_may_frame_the_widget(
    make_api: Callable[..., ApiClient],
    pg_url: str,
    start_sim: Callable[..., SimulatorHandle],
    site: Site,
) -> None:
    sim = start_sim()
    framed = make_api(
        charging_config(pg_url, sim, widget_frame_ancestors=("https://host.example",))
    )
    client = framed.app.test_client()
    for answer in (
        client.get(f"/widget/billing?token={token_for('42')}"),
        client.get("/widget/billing"),
        client.get("/widget/billing/fragment"),
    ):
        policy = answer.headers["Content-Security-Policy"]
        assert "frame-ancestors https://host.example" in policy
        assert "https://evil.example" not in policy and "*" not in policy
        assert "X-Frame-Options" not in answer.headers

    default = site.api.app.test_client().get("/widget/billing")
    assert default.headers["Content-Security-Policy"].endswith("frame-ancestors 'self'")

    unset = make_api(charging_config(pg_url, sim, user_token_secret=None))
    refused = unset.app.test_client().get(f"/widget/billing?token={token_for('42')}")
    assert refused.status_code == 401 and "Sign in needed" in refused.text


def test_over_https_the_users_cookie_may_travel_in_a_cross_site_frame(site: Site) -> None:
    """The widget is framed by the host application: over HTTPS its session cookie is
    `SameSite=None; Secure; Partitioned` (a third-party frame gets it back, in the host's
    partition); over plain HTTP it is `SameSite=Lax`. Both `HttpOnly`; the staff cookie stays
    `Lax` either way."""
    token = token_for("42")
    for base, expected in (
        ("https://billing.example", ("Secure", "SameSite=None", "Partitioned")),
        ("http://billing.example", ("SameSite=Lax",)),
    ):
        client = site.api.app.test_client()
        answer = client.get(f"/widget/billing?token={token}", base_url=base)
        assert answer.status_code == 303
        (cookie,) = [c for c in answer.headers.getlist("Set-Cookie") if "smsledger_user=" in c]
        for attribute in (*expected, "HttpOnly", "Path=/"):
            assert attribute in cookie, (base, cookie)
        widget = client.get("/widget/billing", base_url=base)
        assert widget.status_code == 200
        (flask_cookie,) = [
            c for c in widget.headers.getlist("Set-Cookie") if "smsledger_session=" in c
        ]
        assert "SameSite=Lax" in flask_cookie

"""One billing record's page (lines, the payment attempts as a timeline with Sippy's answers,
the ledger transfers, the actions), the failed-payments tab with Retry, and the statistics tab
with its server-drawn daily plot; what they refuse (unknown records, bad ranges, the
accountant's role); and `daily_billing`, the daily series behind the plot, on both databases."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.etree import ElementTree

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from billing.invoicing.stats import DailyBilling, daily_billing
from billing.tables import customers, invoices
from ledger.db import make_engine, make_session_factory, unit_of_work
from tests.processes import wait_until
from tests.scenarios import sms
from tests.web.conftest import Site, Watched, csrf_of, sign_in, staff_client

pytestmark = [pytest.mark.postgres]

RECORDS = "/api/admin/sms/billing"
NASTY = "<b>busy</b><script>alert(1)</script>"


def poor(i_account: int) -> dict[str, Any]:
    """A simulator account with nothing to pay from: Sippy declines its debits (402)."""
    return {
        "i_account": i_account,
        "username": f"poor{i_account}",
        "currency": "USD",
        "balance": "0.00",
        "credit_limit": "0",
    }


def top_up(site: Site, i_account: int) -> None:
    site.sim.state.put_account(poor(i_account) | {"balance": "100.00"})


def arrange(site: Site) -> dict[str, dict[str, Any]]:
    """Users 42 (Sippy account 1001), 44 (1002, empty: declined) and 45 (1003, whose debit
    meets a fault carrying HTML: failed, retried later) sent one SMS each yesterday, and
    yesterday is closed at once: 42 paid, 44 and 45 failed. Their records by user."""
    site.sim.state.put_account(poor(1002))
    site.sim.state.inject_fault(
        method="accountDebit", kind="fault", i_account=1003, fault_code=500, fault_string=NASTY
    )
    service = site.api.as_role("service")
    admin = site.api.as_role("admin")
    yesterday = site.clock() - timedelta(days=1)
    for user, account in (("42", "1001"), ("44", "1002"), ("45", "1003")):
        assert service.post("/api/usage", sms(f"m-{user}", yesterday, user=user)).status_code == 201
        changed = admin.patch(f"/api/admin/customers/{user}", {"sippy_account_id": account})
        assert changed.status_code == 200
    closed = site.api.as_cron().post("/api/cron/process-sms-billing?type=daily")
    assert closed.json["invoices_created"] == 3
    found = {i["user_id"]: i for i in admin.get(RECORDS).json["items"]}
    assert {u: found[u]["status"] for u in found} == {"42": "paid", "44": "failed", "45": "failed"}
    return found


def record_url(record: dict[str, Any]) -> str:
    return f"/admin/sms/billing/{record['id']}"


def section(html: str, element_id: str) -> str:
    """The text from the element with `element_id` to the end of its section."""
    start = html.index(f'id="{element_id}"')
    return html[start : html.index("</section>", start)]


# -- the record page ----------------------------------------------------------------------------


def test_a_paid_record_shows_its_lines_sippy_s_answer_and_its_transfers(site: Site) -> None:
    records = arrange(site)
    paid = records["42"]
    detail = site.api.as_role("admin").get(f"{RECORDS}/{paid['id']}").json
    (attempt,) = detail["payment_attempts"]

    page = staff_client(site).get(record_url(paid))

    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.text
    assert 'data-status="paid"' in section(html, "record-heading")
    lines = section(html, "record-lines")
    assert '<th scope="row">GB</th>' in lines and "4474" in lines and "0.007 USD" in lines
    timeline = section(html, "attempts")
    assert html.count('<ol class="timeline" id="attempts">') == 1
    assert 'data-attempt-status="accepted"' in timeline
    assert "1001" in timeline
    payment_id = attempt["sippy_payment_id"] or "—"
    assert f'Payment id</dt><dd class="col-sm-9 col-lg-10">{payment_id}</dd>' in timeline
    assert attempt["reference"] in timeline
    transfers = section(html, "record-transfers")
    for transfer in detail["transfers"]:
        assert transfer["id"][-8:] in transfers and transfer["kind"] in transfers
    assert "customer:42:receivable" in transfers
    assert "0.01 USD" in html  # the amount, through the money filter
    assert ">Refund</button>" in html  # the admin's action for a paid record
    assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")


def test_a_declined_record_shows_the_decline_and_a_retryable_one_its_next_attempt(
    site: Site,
) -> None:
    records = arrange(site)
    client = staff_client(site)

    declined = client.get(record_url(records["44"])).text
    timeline = section(declined, "attempts")
    assert 'data-attempt-status="declined"' in timeline and "<code>402</code>" in timeline
    assert "(final)" in timeline and "next-retry" not in timeline
    assert "402:" in section(declined, "record-last-error")
    assert ">Retry</button>" in declined and ">Cancel</button>" in declined

    faulted = client.get(record_url(records["45"])).text
    assert 'id="next-retry"' in faulted  # a retryable fault: the next attempt is planned
    assert NASTY not in faulted  # Sippy's text is shown as text, never as markup
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in section(faulted, "attempts")


def test_the_accountant_reads_a_record_without_its_actions(site: Site) -> None:
    records = arrange(site)
    page = staff_client(site, "accountant").get(record_url(records["44"]))
    assert page.status_code == 200
    assert 'id="attempts"' in page.text and 'id="record-actions"' not in page.text
    assert "admin.record_action" not in page.text and "/action" not in page.text


def test_an_unknown_record_is_a_404_page(site: Site) -> None:
    client = staff_client(site)
    missing = client.get(f"/admin/sms/billing/{uuid.UUID(int=0)}")
    assert (missing.status_code, missing.mimetype) == (404, "text/html")
    assert '<h1 class="h3">Not found</h1>' in missing.text
    assert (
        f"no invoice {uuid.UUID(int=0)}" in missing.text and "invoice_not_found" not in missing.text
    )
    malformed = client.get("/admin/sms/billing/not-a-uuid")
    assert (malformed.status_code, malformed.mimetype) == (404, "text/html")


def test_retry_as_a_plain_form_comes_back_to_the_record_and_pays(site: Site) -> None:
    records = arrange(site)
    failed = records["44"]
    top_up(site, 1002)
    client = staff_client(site)
    html = client.get(record_url(failed)).text

    answer = client.post(
        f"{record_url(failed)}/action",
        data={"csrf_token": csrf_of(html), "action": "retry", "back": record_url(failed)},
    )

    assert answer.status_code == 303 and answer.headers["Location"] == record_url(failed)
    after = client.get(record_url(failed)).text
    assert "Retry: record" in after and 'data-status="paid"' in section(after, "record-heading")
    timeline = section(after, "attempts")
    assert 'id="attempt-1"' in timeline and 'id="attempt-2"' in timeline
    assert 'data-attempt-status="accepted"' in timeline


def test_cancelling_from_the_record_is_confirmed_on_the_record_first(site: Site) -> None:
    records = arrange(site)
    failed = records["44"]
    client = staff_client(site)
    asked = client.get(record_url(failed), query_string={"confirm": "cancel"}).text
    assert 'id="confirm-action"' in asked and "This cannot be undone." in asked
    assert (
        'id="confirm-action"'
        not in client.get(record_url(failed), query_string={"confirm": "retry"}).text
    )  # only the actions that cannot be undone ask first

    answer = client.post(
        f"{record_url(failed)}/action",
        data={"csrf_token": csrf_of(asked), "action": "cancel", "back": record_url(failed)},
    )
    assert answer.headers["Location"] == record_url(failed)
    after = client.get(record_url(failed)).text
    assert 'data-status="cancelled"' in section(after, "record-heading")
    assert "reversal" in section(after, "record-transfers")


# -- the failed payments tab --------------------------------------------------------------------


def test_the_failed_tab_lists_failed_invoices_with_their_reason(site: Site) -> None:
    records = arrange(site)
    page = staff_client(site).get("/admin/sms", query_string={"tab": "failed"})
    assert page.status_code == 200
    html = page.text
    assert 'id="failed-total">2<' in html
    declined = html[html.index(f'id="failed-{records["44"]["id"]}"') :].split("</tr>", 1)[0]
    assert record_url(records["44"]) in declined and "402:" in declined and "0.01 USD" in declined
    assert 'name="action" value="retry"' in declined
    assert f'id="failed-{records["42"]["id"]}"' not in html  # paid: not listed
    assert NASTY not in html and "&lt;b&gt;busy&lt;/b&gt;" in html
    assert staff_client(site).get("/admin/sms?tab=failed&page=x").status_code == 400


def test_the_accountant_sees_neither_the_failed_nor_the_stats_tab(site: Site) -> None:
    client = staff_client(site, "accountant")
    for name in ("failed", "stats"):
        page = client.get("/admin/sms", query_string={"tab": name})
        assert (page.status_code, page.mimetype) == (403, "text/html")
        assert "not for the accountant role" in page.text
    assert client.get("/admin/sms/stats/daily.svg").status_code == 403
    assert "tab=stats" not in client.get("/admin/sms").text


# -- the statistics tab -------------------------------------------------------------------------


def test_the_stats_tab_shows_the_figures_and_a_plot_without_script(site: Site) -> None:
    records = arrange(site)
    site.clock.now += timedelta(minutes=5)  # the invoices were created at "now": include them
    client = staff_client(site)

    page = client.get("/admin/sms", query_string={"tab": "stats"})

    assert page.status_code == 200
    html = page.text
    assert 'id="stats-total">3<' in html
    by_status = section(html, "stats-by-status")
    assert 'data-status="paid"' in by_status and 'data-status="failed"' in by_status
    assert "0.02 USD" in by_status  # the two failed ones together
    assert "33.33 %" in section(html, "stats-success-rate")
    assert "daily" in section(html, "stats-frequencies")
    assert records["44"]["id"][-8:] in section(html, "stats-failures")
    assert ">42</th>" in section(html, "stats-users")
    assert ">GB</th>" in section(html, "stats-countries")
    daily = section(html, "stats-daily")
    assert "2026-11-24</th><td" in daily and "0.03 USD" in daily
    assert daily.count("<tr>") == 1 + 31  # the header and the 31 days the range touches
    img = re.search(r'<img[^>]*id="daily-plot"[^>]*>', html)
    assert img and 'alt="' in img.group(0)
    src = re.search(r'src="([^"]+)"', img.group(0))
    assert src

    plot = client.get(src.group(1).replace("&amp;", "&"))

    assert (plot.status_code, plot.mimetype) == (200, "image/svg+xml")
    root = ElementTree.fromstring(plot.data)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert "<script" not in plot.text and "http://kozea" not in plot.text
    assert "Billed (USD)" in plot.text and "Messages" in plot.text


def test_a_range_in_the_url_bounds_the_figures(site: Site) -> None:
    arrange(site)
    client = staff_client(site)
    before = client.get("/admin/sms?tab=stats&from=2026-10-01&to=2026-11-01").text
    assert 'id="stats-total">0<' in before and "No invoices in this range." in before
    assert 'value="2026-10-01"' in before and 'value="2026-11-01"' in before
    assert "from=2026-10-01" in before and "to=2026-11-01" in before  # the plot's URL
    during = client.get("/admin/sms?tab=stats&from=2026-11-24&to=2026-11-25T00:00:00Z").text
    assert 'id="stats-total">3<' in during
    svg = client.get("/admin/sms/stats/daily.svg?from=2026-11-20&to=2026-11-25")
    assert svg.status_code == 200 and "2026-11-24" in svg.text


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"from": "yesterday"}, "From must be a date"),
        ({"to": "2026-13-01"}, "To must be a date"),
        ({"from": "2026-11-10", "to": "2026-11-01"}, "To must be after From."),
        ({"from": "2026-11-10", "to": "2026-11-10"}, "To must be after From."),
        ({"to": "0001-01-05"}, "within the years"),
    ],
)
def test_bad_stats_ranges_are_a_400_page_with_the_reason(
    site: Site, query: dict[str, str], message: str
) -> None:
    client = staff_client(site)
    page = client.get("/admin/sms", query_string={"tab": "stats", **query})
    assert (page.status_code, page.mimetype) == (400, "text/html")
    assert message in page.text and 'role="alert"' in page.text
    assert 'id="stats-total"' not in page.text
    plot = client.get("/admin/sms/stats/daily.svg", query_string=query)
    assert plot.status_code == 400 and message in plot.text


# -- in a browser -------------------------------------------------------------------------------


def no_trouble(watched: Watched) -> None:
    assert watched.foreign_requests == []
    assert watched.console_errors == []  # a CSP violation would be one


@pytest.mark.browser
def test_an_admin_follows_a_record_to_its_timeline(page: Any, site: Site, watched: Watched) -> None:
    records = arrange(site)
    sign_in(page, site)
    page.locator(f"#record-{records['44']['id']} a").first.click()
    page.get_by_role("heading", name="Payment attempts").wait_for()
    attempt = page.locator("#attempts #attempt-1")
    assert attempt.locator("[data-attempt-status]").inner_text() == "declined"
    assert "402" in attempt.locator(".sippy-answer").inner_text()
    assert page.locator("#record-lines tbody tr").count() == 1
    assert page.locator("#record-transfers tbody tr").count() >= 1
    no_trouble(watched)


@pytest.mark.browser
def test_retry_on_the_failed_tab_pays_without_a_reload(
    page: Any, site: Site, watched: Watched
) -> None:
    records = arrange(site)
    failed = records["44"]
    top_up(site, 1002)
    sign_in(page, site)
    page.get_by_role("link", name="Failed payments", exact=True).click()
    row = page.locator(f"#failed-{failed['id']}")
    assert "402:" in row.locator(".reason").inner_text()
    before = page.evaluate("window.performance.getEntriesByType('navigation').length")

    row.get_by_role("button", name="Retry").click()

    row.locator("[data-status=paid]").wait_for()
    assert page.evaluate("window.performance.getEntriesByType('navigation').length") == before
    assert page.url.endswith("tab=failed")
    assert any(
        p["notes"].startswith(f"smsledger:{failed['id']}:") for p in site.sim.state.payments(1002)
    )
    page.reload()
    assert page.locator(f"#failed-{failed['id']}").count() == 0
    no_trouble(watched)


@pytest.mark.browser
def test_a_refused_retry_shows_its_reason_in_the_notices(
    page: Any, site: Site, watched: Watched
) -> None:
    records = arrange(site)
    sign_in(page, site)
    page.goto(f"{site.url}/admin/sms?tab=failed")
    # Another admin cancels it meanwhile: the Retry on this page is refused.
    assert (
        site.api.as_role("admin")
        .post(RECORDS, {"billingId": records["44"]["id"], "action": "cancel"})
        .status_code
        == 200
    )
    page.locator(f"#failed-{records['44']['id']}").get_by_role("button", name="Retry").click()
    page.locator("#notices [role=alert]").wait_for()
    assert "cannot retry" in page.locator("#notices").inner_text()
    assert watched.foreign_requests == []


@pytest.mark.browser
def test_the_stats_tab_draws_its_plot_under_the_csp(
    page: Any, site: Site, watched: Watched
) -> None:
    arrange(site)
    site.clock.now += timedelta(minutes=5)
    sign_in(page, site)
    page.get_by_role("link", name="Statistics").click()
    page.get_by_role("heading", name="Invoices by status").wait_for()
    plot = page.get_by_role("img", name=re.compile("Line chart"))
    plot.wait_for()
    # Polled from here: `wait_for_function` polls with a string the page's CSP refuses to eval
    # whenever the image is not complete at the first look (a loaded machine).
    loaded = "document.getElementById('daily-plot').complete"
    assert wait_until(lambda: bool(page.evaluate(loaded)), 10, 0.05)
    assert page.evaluate("document.getElementById('daily-plot').naturalWidth") > 0
    page.get_by_text("Daily figures as a table").click()
    assert page.locator("#stats-daily").is_visible()

    page.get_by_label("From").fill("2026-10-01")
    page.get_by_label("To (not included)").fill("2026-11-01")
    page.get_by_role("button", name="Show").click()
    assert "from=2026-10-01" in page.url
    assert page.locator("#stats-total").inner_text() == "0"
    no_trouble(watched)


# -- daily_billing ------------------------------------------------------------------------------


def put_invoices(sessions: sessionmaker[Session], created: list[tuple[str, int, int]]) -> None:
    """Invoices of one user each, created at the given times (RFC 3339) for (amount, messages)
    in micro-units, USD, and one EUR invoice at the first time."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with unit_of_work(sessions) as session:
        for user, currency in (("u1", "USD"), ("u2", "EUR")):
            session.execute(
                sa.insert(customers).values(
                    user_id=user,
                    currency=currency,
                    status="active",
                    created_at=start,
                    updated_at=start,
                )
            )
        rows = [("u1", "USD", at, amount, messages) for at, amount, messages in created]
        rows.append(("u2", "EUR", created[0][0], 5_000_000, 7))
        for n, (user, currency, at, amount, messages) in enumerate(rows):
            session.execute(
                sa.insert(invoices).values(
                    id=uuid.uuid4(),
                    customer_id=user,
                    status="paid",
                    frequency="daily",
                    period_start=start + timedelta(days=n),
                    period_end=start + timedelta(days=n + 1),
                    currency=currency,
                    amount_micros=amount,
                    message_count=messages,
                    created_at=datetime.fromisoformat(at),
                )
            )


CREATED = [
    ("2026-11-23T23:30:00+00:00", 10_000, 2),
    ("2026-11-23T00:00:00+00:00", 20_000, 3),  # the first instant of the day
    ("2026-11-24T00:30:00+00:00", 1_230_000, 100),
    ("2026-11-22T23:59:59+00:00", 40_000, 1),  # before the range
    ("2026-11-25T00:00:00+00:00", 50_000, 1),  # the range's end: excluded
]
EXPECTED = [
    DailyBilling(datetime(2026, 11, 23, tzinfo=UTC), 3, 12, {"EUR": 5_000_000, "USD": 30_000}),
    DailyBilling(datetime(2026, 11, 24, tzinfo=UTC), 1, 100, {"USD": 1_230_000}),
]
RANGE = (datetime(2026, 11, 23, tzinfo=UTC), datetime(2026, 11, 25, tzinfo=UTC))


def test_daily_billing_groups_by_utc_day_on_postgresql(sessions: sessionmaker[Session]) -> None:
    put_invoices(sessions, CREATED)
    with unit_of_work(sessions) as session:
        # A session in another zone: the days are still UTC days.
        session.execute(sa.text("SET TIME ZONE 'Pacific/Kiritimati'"))
        assert daily_billing(session, *RANGE) == EXPECTED
        assert daily_billing(session, RANGE[1], RANGE[1] + timedelta(days=9)) == [
            DailyBilling(datetime(2026, 11, 25, tzinfo=UTC), 1, 1, {"USD": 50_000})
        ]
        assert daily_billing(session, *RANGE)[0].amounts_micros["USD"] == 30_000  # exact ints


@pytest.fixture
def sqlite_sessions(sqlite_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(sqlite_url)
    yield make_session_factory(engine)
    engine.dispose()


def test_daily_billing_groups_by_utc_day_on_sqlite(
    sqlite_sessions: sessionmaker[Session],
) -> None:
    put_invoices(sqlite_sessions, CREATED)
    with unit_of_work(sqlite_sessions) as session:
        assert daily_billing(session, *RANGE) == EXPECTED
        assert (
            daily_billing(session, RANGE[0] - timedelta(days=30), RANGE[0] - timedelta(days=2))
            == []
        )

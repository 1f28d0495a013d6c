"""`smsledger migrate-legacy`: customers, the high-volume profile, opening usage that the first
close bills with the right message counts, idempotent re-runs, dry runs, and bad rows."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from billing.invoicing.closing import close_periods
from billing.settings import BillingDefaults
from billing.tables import billing_settings, customers, invoices, usage_counters
from ledger.balances import account_balance
from ledger.checks import check_ledger
from ledger.db import unit_of_work
from ledger.tables import transfers
from tests.conftest import Clock, build_app

pytestmark = pytest.mark.postgres

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def app(pg_url: str) -> Any:
    app, _ = build_app(pg_url, Clock(datetime(2026, 11, 24, 12, tzinfo=UTC)))
    yield app
    app.extensions["smsledger"].engine.dispose()


def run(app: Any, *args: str) -> Any:
    return app.test_cli_runner().invoke(args=["migrate-legacy", *args])


def snapshot(app: Any) -> tuple[Any, ...]:
    with unit_of_work(app.extensions["smsledger"].sessions) as session:
        count = lambda t: session.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()  # noqa: E731
        return (
            count(customers),
            count(transfers),
            count(billing_settings),
            tuple(
                session.execute(
                    sa.select(usage_counters).order_by(usage_counters.c.customer_id)
                ).all()
            ),
        )


def test_the_example_onboards_users_and_the_first_close_bills_their_month(app: Any) -> None:
    result = run(app, str(EXAMPLES / "legacy-users.csv"))
    assert result.exit_code == 0, result.output
    assert "users processed: 4, customers created: 4, custom settings created: 1" in result.output
    assert "initial billing records: 5" in result.output
    assert "warning: user 99: no Sippy account id" in result.output
    sessions = app.extensions["smsledger"].sessions
    with unit_of_work(sessions) as session:
        acme = session.execute(sa.select(customers).where(customers.c.user_id == "42")).one()
        assert (acme.name, acme.sippy_account_id, acme.currency) == ("Acme Ltd", "1001", "USD")
        profile = session.execute(
            sa.select(billing_settings.c["values"]).where(billing_settings.c.scope == "77")
        ).scalar_one()
        assert profile["frequency"] == "weekly"
        assert account_balance(session, "customer:42:unbilled").balance == 10_200_000
        assert account_balance(session, "customer:88:unbilled").account.currency == "EUR"
        counters = session.execute(
            sa.select(usage_counters).where(usage_counters.c.customer_id == "42")
        ).one()
        assert (counters.unbilled_messages, counters.unbilled_segments) == (1500, 1600)
    with unit_of_work(sessions) as session:
        summary = close_periods(
            session, "daily", datetime(2026, 11, 25, 2, tzinfo=UTC), BillingDefaults()
        )
    assert summary.invoices_created == 2  # 42 and 88 (daily by default); 77 is weekly now
    with unit_of_work(sessions) as session:
        acme_invoice = session.execute(
            sa.select(invoices).where(invoices.c.customer_id == "42")
        ).one()
        assert (acme_invoice.message_count, acme_invoice.segments, acme_invoice.amount_micros) == (
            1500,
            1600,
            10_200_000,
        )
        assert check_ledger(session) == []


def test_a_second_run_changes_nothing(app: Any) -> None:
    assert run(app, str(EXAMPLES / "legacy-users.csv")).exit_code == 0
    before = snapshot(app)
    again = run(app, str(EXAMPLES / "legacy-users.csv"))
    assert (
        "customers created: 0, custom settings created: 0, initial billing records: 0"
        in again.output
    )
    assert snapshot(app) == before
    json_run = run(app, str(EXAMPLES / "legacy-users.json"))
    assert "initial billing records: 0" in json_run.output and snapshot(app) == before


def test_a_dry_run_reports_and_writes_nothing(app: Any) -> None:
    before = snapshot(app)
    result = run(app, str(EXAMPLES / "legacy-users.json"), "--dry-run")
    assert result.exit_code == 0 and result.output.startswith("dry run: users processed: 4")
    assert snapshot(app) == before


def test_bad_rows_are_reported_and_the_rest_is_onboarded(app: Any, tmp_path: Path) -> None:
    export = tmp_path / "bad.csv"
    export.write_text(
        "user_id,currency,destination,messages,amount\n"
        "1,USD,4474,10,0.07\n"
        "2,XYZ,4474,10,0.07\n"
        "3,USD,44a,10,0.07\n"
        "4,USD,4474,-1,0.07\n"
        "5,USD,4474,10,0.0000001\n"
        "1,EUR,4474,10,0.07\n"
    )
    result = run(app, str(export))
    assert result.exit_code == 1
    # Users 1, 3, 4 and 5 are onboarded; only their bad rows are skipped (user 2 has no valid row).
    assert "users processed: 4" in result.output and "initial billing records: 1" in result.output
    for line in (3, 4, 5, 6, 7):
        assert f"error: line {line}:" in result.output

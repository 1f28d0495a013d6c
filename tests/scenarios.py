"""Arranging billing states through the public service functions (rates, usage, closes), shared
by the integration, job and API tests, and reading what came of them (rows, Sippy's debits of an
invoice, its settlements, where billing and the ledger disagree)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from billing.customers import update_customer
from billing.invoicing.closing import CloseSummary, close_periods
from billing.invoicing.cycle_runner import run_cycle
from billing.payments.sippy_client import SippyClient
from billing.settings import BillingDefaults
from billing.usage.ingestion import ingest_usage, validate_events
from billing.usage.rate_sheets import add_rates, parse_sheet
from infra.config import Config
from jobs import context
from jobs.payments import dispatch_charges
from ledger.db import run_in_transaction, unit_of_work
from ledger.tables import transfers
from sippy_simulator.server import SimulatorHandle

#: The one sample rate table of the tests: 19 versions in USD and EUR, two of a wholesale plan.
#: A test that needs another rate adds it itself, in the open.
SAMPLE_RATES = Path(__file__).resolve().parents[1] / "examples" / "rates.csv"
DEFAULTS = BillingDefaults()


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def load_rates(
    sessions: sessionmaker[Session], loaded_at: datetime | None = None
) -> sessionmaker[Session]:
    """The sample rates, stored as if imported at `loaded_at` (default: 1 Jan 2026)."""
    with unit_of_work(sessions) as session:
        add_rates(session, parse_sheet(SAMPLE_RATES.read_text()), loaded_at or at(2026, 1, 1))
    return sessions


def post(sessions: sessionmaker[Session], now: datetime, *events: dict[str, Any]) -> None:
    validated = validate_events(list(events))
    run_in_transaction(sessions, lambda s: ingest_usage(s, validated, now, DEFAULTS), attempts=10)


def sms(message_id: str, sent_at: datetime | str, user: str = "42", **extra: Any) -> dict[str, Any]:
    """One SMS event as the API takes it: one segment to a GB mobile (4474, 0.0070 USD), sent at
    `sent_at` (a datetime, or the RFC 3339 text to send as it is)."""
    return {
        "message_id": message_id,
        "user_id": user,
        "destination": "+447400123456",
        "segments": 1,
        "sent_at": sent_at if isinstance(sent_at, str) else sent_at.isoformat(),
        **extra,
    }


def close(sessions: sessionmaker[Session], frequency: str, now: datetime, **kw: Any) -> Any:
    return run_in_transaction(sessions, lambda s: close_periods(s, frequency, now, DEFAULTS, **kw))


def rows(sessions: sessionmaker[Session], table: sa.Table, *where: Any) -> list[Any]:
    with unit_of_work(sessions) as session:
        return session.execute(sa.select(table).where(*where)).all()


def bill_yesterday(sessions: sessionmaker[Session], now: datetime) -> CloseSummary:
    """User u1 (Sippy account 1001) with two SMS yesterday at noon, and the daily cycle run at
    `now` (`run_cycle`, as the scheduler's close job does): its summary. The rates must be
    loaded before (`load_rates`); the one invoice is due at once."""
    yesterday = (now - timedelta(days=1)).replace(hour=12, minute=0, second=0, microsecond=0)
    post(sessions, now, sms("m1", yesterday, user="u1"), sms("m2", yesterday, user="u1"))
    with unit_of_work(sessions) as session:
        update_customer(session, "u1", now, sippy_account_id="1001")
    summary, _ = run_cycle(sessions, "daily", now, DEFAULTS)
    return summary


def debits_for(sim: SimulatorHandle, invoice_id: uuid.UUID) -> list[dict[str, Any]]:
    """Sippy's own record: debits whose notes carry this invoice's reference."""
    prefix = f"smsledger:{invoice_id}:"
    return [
        p for p in sim.state.payments() if p["type"] == "debit" and p["notes"].startswith(prefix)
    ]


def settlements(sessions: sessionmaker[Session], invoice_id: uuid.UUID) -> list[Any]:
    """The ledger's settlement transfers of this invoice."""
    return rows(
        sessions,
        transfers,
        transfers.c.kind == "settlement",
        transfers.c.metadata["invoice_id"].as_string() == str(invoice_id),
    )


def billing_disagreements(session: Session, customer_id: str) -> list[str]:
    """Where the billing state and the ledger disagree for one customer (DESIGN invariant 10);
    empty when they agree:
    - usage posted minus usage voided == usage billed on invoices (cancelled ones included, their
      usage written off) + the unbilled balance (invariant 7 with voids and cancels);
    - the receivable balance == what the unpaid invoices still ask for;
    - the counters count exactly the usage that is neither billed nor voided."""
    from billing.chart import receivable_code, unbilled_code
    from billing.invoice import UNPAID
    from billing.tables import invoice_usage, invoices, usage_counters
    from ledger.balances import account_balance
    from ledger.tables import transfers

    usage = transfers.alias("usage")
    undo = transfers.alias("undo")
    of_customer = sa.and_(
        usage.c.kind == "usage", usage.c.metadata["user_id"].as_string() == customer_id
    )
    posted = session.execute(
        sa.select(sa.func.coalesce(sa.func.sum(usage.c.amount), 0)).where(of_customer)
    ).scalar_one()
    voided = session.execute(
        sa.select(sa.func.coalesce(sa.func.sum(undo.c.amount), 0))
        .join(usage, usage.c.id == undo.c.reverses_id)
        .where(of_customer)
    ).scalar_one()
    billed, owed = session.execute(
        sa.select(
            sa.func.coalesce(sa.func.sum(invoices.c.usage_micros), 0),
            sa.func.coalesce(
                sa.func.sum(invoices.c.amount_micros).filter(invoices.c.status.in_(UNPAID)), 0
            ),
        ).where(invoices.c.customer_id == customer_id)
    ).one()
    unbilled = account_balance(session, unbilled_code(customer_id)).balance
    receivable = account_balance(session, receivable_code(customer_id)).balance
    messages = sa.func.coalesce(usage.c.metadata["messages"].as_integer(), 1)
    counted = session.execute(
        sa.select(sa.func.coalesce(sa.func.sum(messages), 0))
        .select_from(usage)
        .where(
            of_customer,
            ~sa.exists().where(invoice_usage.c.transfer_id == usage.c.id),
            ~sa.exists().where(undo.c.reverses_id == usage.c.id),
        )
    ).scalar_one()
    counter = session.execute(
        sa.select(usage_counters.c.unbilled_messages).where(
            usage_counters.c.customer_id == customer_id
        )
    ).scalar_one()
    problems = []
    if posted - voided != billed + unbilled:
        problems.append(
            f"usage {posted} - voided {voided} != billed {billed} + unbilled {unbilled}"
        )
    if receivable != owed:
        problems.append(f"receivable {receivable} != unpaid invoices {owed}")
    if counter != counted:
        problems.append(f"counter {counter} != unbilled, unvoided messages {counted}")
    return problems


def charge_at_once(api: Any, sim: SimulatorHandle) -> None:
    """Have the app dispatch charges at once, in the request, to the simulator (the embedded
    mode's behaviour, made synchronous so a page shows the outcome)."""
    state = api.runtime
    context.configure(
        context.JobContext(
            state.sessions,
            state.clock,
            state.config.billing,
            gateway=SippyClient(sim.xmlapi_url, "smsledger", "secret", timeout_s=2),
        )
    )
    state.extras["dispatch_charges"] = dispatch_charges


USER_TOKEN_SECRET = "a-user-token-secret-of-32-bytes!!"


def charging_config(pg_url: str, sim: SimulatorHandle, **overrides: Any) -> Config:
    """An app's configuration on `pg_url` that charges the simulator `sim`, with a cron
    secret, user tokens and a cookie-signing key; `overrides` replace any field."""
    values: dict[str, Any] = {
        "database_url": pg_url,
        "cron_secret": "s",
        "user_token_secret": USER_TOKEN_SECRET,
        "sippy_url": sim.xmlapi_url,
        "sippy_username": "smsledger",
        "sippy_password": "secret",
        "secret_key": "a-cookie-signing-key-for-the-tests",
        **overrides,
    }
    return Config(**values)

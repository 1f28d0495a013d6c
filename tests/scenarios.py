"""Arranging billing states through the public service functions (rates, usage, closes), shared
by the integration, job and API tests."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from billing.invoicing.closing import close_periods
from billing.settings import BillingDefaults
from billing.usage.ingestion import ingest_usage, validate_events
from billing.usage.rate_sheets import add_rates, parse_sheet
from ledger.db import run_in_transaction, unit_of_work

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

"""The billing cycle runner and the first admin key: what the cron endpoint, the CLI and the
scheduler rely on when something is wrong or nothing exists yet."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from billing.access.api_keys import first_admin_key, role_for_key
from billing.invoicing.cycle_runner import run_cycle
from billing.settings import BillingDefaults
from ledger.db import make_engine, make_session_factory, unit_of_work
from tests.conftest import NOW

pytestmark = pytest.mark.postgres


def test_a_cycle_whose_database_is_unreachable_counts_an_error_and_logs_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Nothing listens on port 1: every connection is refused, as during an outage.
    engine = make_engine(
        "postgresql+psycopg2://nobody@127.0.0.1:1/none", poolclass=sa.pool.NullPool
    )
    with caplog.at_level(logging.ERROR, logger="smsledger.billing"):
        summary, duration_ms = run_cycle(
            make_session_factory(engine), "daily", NOW, BillingDefaults()
        )
    assert summary.errors == 1 and summary.invoices_created == 0 and duration_ms >= 0
    (failure,) = [r for r in caplog.records if r.message == "Failed to process SMS billing"]
    assert failure.type == "daily" and "OperationalError" in failure.reason  # type: ignore[attr-defined]


def test_an_unknown_frequency_is_refused_before_any_work(
    sessions: sessionmaker[Session],
) -> None:
    with pytest.raises(ValueError, match="type must be one of daily, weekly"):
        run_cycle(sessions, "hourly", NOW, BillingDefaults())


def test_the_first_admin_key_is_made_once_on_a_fresh_install(
    sessions: sessionmaker[Session],
) -> None:
    with unit_of_work(sessions) as session:
        key = first_admin_key(session, NOW)
    assert key is not None and key.startswith("sk_")
    with unit_of_work(sessions) as session:
        assert role_for_key(session, key) == "admin"
        assert first_admin_key(session, NOW) is None

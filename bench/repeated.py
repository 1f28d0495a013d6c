"""What the set-based benchmarks share: load a scenario with SQL, settle it as production would
find it (vacuumed, checkpointed), and time the same unit of work several times on the same data
(all runs but the last rolled back, the last committed with its commit timed)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from billing.customers import provision_customers

T = TypeVar("T")

# Autovacuum (insert-triggered since PostgreSQL 13) and checkpoints leave data that was written
# over a day or a month with hint bits set and nothing dirty: the state a scheduled job meets.
SETTLE = ("VACUUM (ANALYZE)", "CHECKPOINT")


def provision(session: Session, customers: int, at: datetime, system_account: str) -> int:
    """Customers `c0`… with their accounts, through the service; the id of `system_account`
    (the other side of the scenario's transfers)."""
    provision_customers(session, [f"c{n}" for n in range(customers)], "USD", at)
    found: int = session.execute(
        sa.text("SELECT id FROM accounts WHERE code = :code"), {"code": system_account}
    ).scalar_one()
    return found


def load(session: Session, script: str, params: Mapping[str, Any]) -> None:
    """Run a `;\\n`-separated SQL script with the same parameters for every statement."""
    for statement in script.split(";\n"):
        if statement.strip():
            session.execute(sa.text(statement), dict(params))


def keyed_insert(columns: str, select: str) -> str:
    """`INSERT INTO transfers (columns) <select>` with each row's key taken in
    `transfer_keys` in the same statement, as posting does (every transfer references its key
    row, decision 0026). `columns` must name `id`, `kind`, `idempotency_key`, `leg` and
    `effective_at`."""
    return (
        f"WITH new_transfers ({columns}) AS MATERIALIZED ({select}),"
        " keys AS (INSERT INTO transfer_keys (kind, idempotency_key, leg, transfer_id,"
        " effective_at) SELECT kind, idempotency_key, leg, id, effective_at FROM new_transfers)"
        f" INSERT INTO transfers ({columns}) SELECT {columns} FROM new_transfers"
    )


def settle(engine: sa.Engine) -> None:
    with engine.connect() as connection:
        autocommit = connection.execution_options(isolation_level="AUTOCOMMIT")
        for statement in SETTLE:
            autocommit.exec_driver_sql(statement)


def timed_runs(
    sessions: sessionmaker[Session], repeat: int, work: Callable[[Session], T]
) -> tuple[list[float], T]:
    """Seconds of each run of `work` and the last run's result."""
    runs: list[float] = []
    result: T | None = None
    for attempt in range(repeat):
        session = sessions()
        try:
            started = time.perf_counter()
            result = work(session)
            if attempt == repeat - 1:
                session.commit()
            runs.append(time.perf_counter() - started)
        finally:
            session.rollback()
            session.close()
    assert result is not None
    return runs, result

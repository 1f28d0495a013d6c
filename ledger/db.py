"""Engines, the unit of work, and the one place database refusals become ledger errors.

Every request, job and CLI command opens exactly one unit of work; nothing below it commits.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from ledger.errors import (
    BalanceLimitExceeded,
    CurrencyMismatch,
    IdempotencyConflict,
    ImmutableTransfer,
    InvalidAmount,
    InvalidTransfer,
    LedgerError,
    RetryableConflict,
    UnknownAccount,
)
from ledger.exact_json import dump_json

T = TypeVar("T")

IMMUTABLE_MARKER = "transfers_append_only"
"""Text both databases' triggers raise with, so the refusal is recognised by name."""

_CONSTRAINT_ERRORS: dict[str, tuple[type[LedgerError], str]] = {
    "ck_balances_debits_within_credits": (
        BalanceLimitExceeded,
        "debits would exceed credits on a limited account",
    ),
    "ck_balances_credits_within_debits": (
        BalanceLimitExceeded,
        "credits would exceed debits on a limited account",
    ),
    "ck_transfers_amount_positive": (InvalidAmount, "amount must be greater than zero"),
    "ck_transfers_distinct_accounts": (InvalidTransfer, "debit and credit account must differ"),
    "fk_transfers_debit_account": (CurrencyMismatch, "debit account currency differs"),
    "fk_transfers_credit_account": (CurrencyMismatch, "credit account currency differs"),
    "uq_transfers_idempotency": (IdempotencyConflict, "idempotency key already used"),
    "fk_balances_account_id": (UnknownAccount, "account does not exist"),
}

_RETRYABLE_PGCODES = {"40001", "40P01"}  # serialization_failure, deadlock_detected


def make_engine(url: str, **options: Any) -> sa.Engine:
    """An engine configured for the ledger on PostgreSQL or SQLite.

    SQLite gets foreign keys, WAL and `BEGIN IMMEDIATE`: a writer takes the lock up front
    instead of failing to upgrade a read lock half-way through a unit of work.
    """
    options.setdefault("json_serializer", dump_json)
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, **options)

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection: sa.Connection) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    # No pre-ping round trip per checkout: a connection the server dropped fails its unit of
    # work with `connection_invalidated`, which `run_in_transaction` retries on a fresh one.
    options.setdefault("pool_recycle", 1800)
    if url.startswith("postgresql+psycopg2") or url.startswith("postgresql://"):
        # Batched UPDATE executemany: one round trip, statements still run in list order.
        options.setdefault("executemany_mode", "values_plus_batch")
    return sa.create_engine(url, **options)


def make_session_factory(engine: sa.Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def unit_of_work(factory: Callable[[], Session], commit: bool = True) -> Iterator[Session]:
    """One transaction: commit on clean exit, roll back on any exception, always close.
    `commit=False` rolls back a clean exit too: a dry run does all the work and keeps none.

    Database refusals that have a ledger meaning leave as `LedgerError`s.
    """
    session = factory()
    try:
        yield session
        if commit:
            session.commit()
        else:
            session.rollback()
    except DBAPIError as error:
        session.rollback()
        translated = translate(error)
        if translated is not None:
            raise translated from error
        raise
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def run_in_transaction(
    factory: Callable[[], Session],
    work: Callable[[Session], T],
    attempts: int = 3,
    commit: bool = True,
) -> T:
    """Run `work` in one unit of work, retrying the whole unit on deadlock or serialization
    failure a bounded number of times.

    Raises: RetryableConflict when the attempts run out; any error `work` raises.
    """
    for attempt in range(1, attempts + 1):
        try:
            with unit_of_work(factory, commit) as session:
                return work(session)
        except DBAPIError as error:
            if not is_retryable(error):
                raise
            if attempt == attempts:
                raise RetryableConflict(
                    "the database kept aborting this unit of work; try again"
                ) from error
            time.sleep(random.uniform(0.005, 0.05) * attempt)
    raise AssertionError("unreachable")


def is_retryable(error: DBAPIError) -> bool:
    """Deadlocks and serialization failures on PostgreSQL; a busy database on SQLite; a
    connection the server closed."""
    if error.connection_invalidated:
        return True
    pgcode = getattr(error.orig, "pgcode", None)
    if pgcode in _RETRYABLE_PGCODES:
        return True
    return "database is locked" in str(error.orig)


def constraint_name(error: DBAPIError) -> str | None:
    """The name of the constraint or trigger a database refusal names, on either database."""
    diag = getattr(error.orig, "diag", None)
    name = getattr(diag, "constraint_name", None)
    if name:
        return str(name)
    text = str(error.orig)
    if IMMUTABLE_MARKER in text:
        return IMMUTABLE_MARKER
    for known in _CONSTRAINT_ERRORS:
        if known in text:
            return known
    return None


def translate(error: DBAPIError, **details: Any) -> LedgerError | None:
    """The ledger error a database refusal stands for, or None when it has no ledger meaning."""
    name = constraint_name(error)
    if name == IMMUTABLE_MARKER:
        return ImmutableTransfer("posted transfers cannot be updated or deleted", **details)
    if name in _CONSTRAINT_ERRORS:
        cls, message = _CONSTRAINT_ERRORS[name]
        return cls(message, constraint=name, **details)
    return None

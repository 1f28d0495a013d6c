"""Engines, the unit of work, and the one place database refusals become ledger errors.

Every request, job and CLI command opens exactly one unit of work; nothing below it commits.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from ledger.errors import (
    ArchivedPeriod,
    BalanceLimitExceeded,
    CurrencyMismatch,
    DatabaseUnavailable,
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

log = logging.getLogger(__name__)

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
    "pk_transfer_keys": (IdempotencyConflict, "idempotency key already used"),
    # the archive's tombstone partition, and a replay whose transfers were archived (0012)
    "transfers_archived": (ArchivedPeriod, "that instant is archived: its month left the database"),
    "fk_transfers_key": (InvalidTransfer, "a transfer is written with its key in transfer_keys"),
    "fk_balances_account_id": (UnknownAccount, "account does not exist"),
}

_RETRYABLE_PGCODES = {"40001", "40P01"}  # serialization_failure, deadlock_detected
# admin_shutdown (terminated, fast shutdown), crash_shutdown, cannot_connect_now (starting up,
# shutting down); with class 08 (connection exception) they say the server is not there.
_OUTAGE_PGCODES = {"57P01", "57P02", "57P03"}

CONNECT_TIMEOUT_SECONDS = 5
"""libpq waits for ever for a server that drops packets; this long, and it is an outage."""


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
    # work with `connection_invalidated` (the pool then replaces every connection opened before
    # the failure), which `run_in_transaction` retries once on a fresh one.
    options.setdefault("pool_recycle", 1800)
    if url.startswith("postgresql+psycopg2") or url.startswith("postgresql://"):
        # Batched UPDATE executemany: one round trip, statements still run in list order.
        options.setdefault("executemany_mode", "values_plus_batch")
        if "connect_timeout" not in sa.make_url(url).query:
            connect_args = options.setdefault("connect_args", {})
            connect_args.setdefault("connect_timeout", CONNECT_TIMEOUT_SECONDS)
    engine = sa.create_engine(url, **options)
    event.listen(engine, "handle_error", _lost_connection)
    return engine


def _lost_connection(context: sa.engine.ExceptionContext) -> None:
    """Have the pool drop a connection the server lost even when SQLAlchemy's list of libpq
    messages does not know the wording: an outage by SQLSTATE or by a driver error without one
    is a disconnect too, so no later checkout is handed the dead connection (or any other
    connection opened before it)."""
    error = context.sqlalchemy_exception
    if (
        context.connection is not None
        and not context.is_disconnect
        and isinstance(error, DBAPIError)
        and is_outage(error)
    ):
        context.is_disconnect = True


def make_session_factory(engine: sa.Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def unit_of_work(factory: Callable[[], Session], commit: bool = True) -> Iterator[Session]:
    """One transaction: commit on clean exit, roll back on any exception, always close.
    `commit=False` rolls back a clean exit too: a dry run does all the work and keeps none.

    Database refusals that have a ledger meaning leave as `LedgerError`s, an outage as
    `DatabaseUnavailable` (with `may_have_committed` when the connection was lost during
    COMMIT: pending changes are flushed first, so only the COMMIT itself is in flight then).
    """
    session = factory()
    committing = False
    try:
        yield session
        if commit:
            session.flush()
            committing = True
            session.commit()
        else:
            session.rollback()
    except DBAPIError as error:
        _roll_back(session)
        translated = translate(error, during_commit=committing)
        if translated is not None:
            raise translated from error
        raise
    except BaseException:
        _roll_back(session)
        raise
    finally:
        session.close()


def _roll_back(session: Session) -> None:
    """Roll back, unless the connection is gone: then the server has discarded the
    transaction already, and the error that brought us here is the one to report."""
    try:
        session.rollback()
    except DBAPIError as error:
        if not is_outage(error):
            raise
        log.warning("rollback on a lost connection skipped", extra={"reason": str(error.orig)})


CONFLICT_ATTEMPTS = 3
"""How often a unit of work or a lone statement runs when deadlocks or serialization failures
keep aborting it."""


def _pause_before_outage_retry() -> None:
    time.sleep(random.uniform(0.02, 0.1))


def _pause_before_conflict_retry(conflicts: int) -> None:
    """Longer after each conflict, jittered so the retriers do not collide again."""
    time.sleep(random.uniform(0.005, 0.05) * conflicts)


def run_in_transaction(
    factory: Callable[[], Session],
    work: Callable[[Session], T],
    attempts: int = CONFLICT_ATTEMPTS,
    commit: bool = True,
) -> T:
    """Run `work` in one unit of work, retrying the whole unit on deadlock or serialization
    failure a bounded number of times, and once on an outage that left nothing behind.

    An outage before COMMIT was sent (no connection, or one lost mid-unit) rolled the unit back,
    so running it again on a fresh connection is safe, and it rides out a dropped pooled
    connection. A connection lost during COMMIT is never retried here: the commit may have
    happened, and only the caller's idempotent retry can tell.

    Raises: RetryableConflict when the attempts run out; DatabaseUnavailable when the database
    is still unreachable on the retry, or was lost during COMMIT; any error `work` raises.
    """
    conflicts = 0
    outage_retried = False
    while True:
        try:
            with unit_of_work(factory, commit) as session:
                return work(session)
        except DatabaseUnavailable as outage:
            if outage.may_have_committed or outage_retried:
                log.warning(
                    "database unavailable",
                    extra={"reason": outage.cause, "may_have_committed": outage.may_have_committed},
                )
                raise
            outage_retried = True
            log.info("database unavailable; retrying once", extra={"reason": outage.cause})
            _pause_before_outage_retry()
        except DBAPIError as error:
            if not is_retryable(error):
                raise
            conflicts += 1
            if conflicts >= attempts:
                raise RetryableConflict(
                    "the database kept aborting this unit of work; try again"
                ) from error
            _pause_before_conflict_retry(conflicts)


def execute_alone(engine: sa.Engine, sql: str, params: tuple[Any, ...]) -> list[Any]:
    """Run one driver-level statement as its own transaction (autocommit: one round trip, no
    BEGIN and no COMMIT); its rows. For the per-SMS path: the pooled DBAPI connection is used
    directly, without SQLAlchemy's statement and result machinery.

    Refusals leave as in `unit_of_work`. A deadlock or serialization failure (nothing was
    applied) is retried like `run_in_transaction` does; an outage before the statement reached
    the server (no connection) is retried once. An outage with the statement sent is
    `DatabaseUnavailable` with `may_have_committed`, and the pool drops every connection opened
    before it, as SQLAlchemy does for its own statements.

    Raises: LedgerError (a translated refusal), DatabaseUnavailable, RetryableConflict,
    DBAPIError otherwise.
    """
    dbapi_error = engine.dialect.loaded_dbapi.Error
    conflicts = 0
    outage_retried = False
    while True:
        try:
            pooled = engine.raw_connection()
        except (DBAPIError, dbapi_error) as failure:  # the pool hands out the driver's errors
            error = (
                failure
                if isinstance(failure, DBAPIError)
                else DBAPIError.instance(None, None, failure, dbapi_error, dialect=engine.dialect)
            )
            assert isinstance(error, DBAPIError)
            translated = translate(error)
            if not isinstance(translated, DatabaseUnavailable) or outage_retried:
                raise translated or error from failure
            outage_retried = True
            _pause_before_outage_retry()
            continue
        connection = pooled.dbapi_connection
        assert connection is not None  # a fresh checkout holds its driver connection
        try:
            connection.autocommit = True
            cursor = connection.cursor()
            cursor.execute(sql, params)
            rows = list(cursor.fetchall())
            cursor.close()
            connection.autocommit = False
            return rows
        except dbapi_error as orig:
            wrapped = DBAPIError.instance(sql, params, orig, dbapi_error, dialect=engine.dialect)
            assert isinstance(wrapped, DBAPIError)  # a driver error wraps as one
            if is_outage(wrapped):
                engine.pool._invalidate(pooled, orig)  # as Connection does on a disconnect
                raise _outage_in_flight(wrapped) from orig
            connection.autocommit = False
            if is_retryable(wrapped):
                conflicts += 1
                if conflicts >= CONFLICT_ATTEMPTS:
                    raise RetryableConflict(
                        "the database kept aborting this statement; try again"
                    ) from orig
                _pause_before_conflict_retry(conflicts)
                continue
            translated = translate(wrapped)
            if translated is None:
                raise wrapped from orig
            raise translated from orig
        finally:
            pooled.close()


def _outage_in_flight(error: DBAPIError) -> LedgerError:
    translated = translate(error, during_commit=True)
    assert translated is not None  # an outage always translates
    return translated


def is_outage(error: DBAPIError) -> bool:
    """Whether `error` says the PostgreSQL server is not there (refused, shutting down,
    starting up, terminated, closed unexpectedly, a connection SQLAlchemy invalidated), as
    opposed to a refusal of the statement.

    By SQLSTATE class 08 and 57P01-57P03, or a driver-level OperationalError or InterfaceError
    without a SQLSTATE (libpq reports connection failures that way). Server-reported errors
    with another SQLSTATE (deadlocks, timeouts, constraints) are not outages. SQLite never has
    one: its "database is locked" is contention, retried by `is_retryable`.
    """
    if isinstance(error.orig, sqlite3.Error):
        return False
    if error.connection_invalidated:
        return True
    pgcode = getattr(error.orig, "pgcode", None)
    if pgcode:
        return str(pgcode).startswith("08") or pgcode in _OUTAGE_PGCODES
    return isinstance(error, sa.exc.OperationalError | sa.exc.InterfaceError)


def is_retryable(error: DBAPIError) -> bool:
    """Deadlocks and serialization failures on PostgreSQL; a busy database on SQLite; a
    connection the server closed (SQLite; on PostgreSQL that is an outage, see `is_outage`)."""
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


def translate(
    error: DBAPIError, *, during_commit: bool = False, **details: Any
) -> LedgerError | None:
    """The ledger error a database refusal stands for, or None when it has no ledger meaning.

    An outage is `DatabaseUnavailable`; `during_commit` says it struck while COMMIT was in
    flight, so the unit may have been committed.
    """
    if is_outage(error):
        cause = _driver_reason(error)
        if during_commit:
            return DatabaseUnavailable(
                "The connection to the database was lost while committing: the request may "
                "or may not have been applied. Retry it with the same idempotency key.",
                may_have_committed=True,
                cause=cause,
                **details,
            )
        return DatabaseUnavailable(
            "The database is unavailable; nothing was changed. Try again shortly.",
            cause=cause,
            **details,
        )
    name = constraint_name(error)
    if name == IMMUTABLE_MARKER:
        return ImmutableTransfer("posted transfers cannot be updated or deleted", **details)
    if name in _CONSTRAINT_ERRORS:
        cls, message = _CONSTRAINT_ERRORS[name]
        return cls(message, constraint=name, **details)
    return None


def _driver_reason(error: DBAPIError) -> str:
    """The driver's class and first line, e.g. "OperationalError: connection to server at …
    failed: Connection refused": for the logs (never SQL: that is in `error`, not its `orig`)."""
    first = next(iter(str(error.orig).strip().splitlines()), "")
    name = type(error.orig).__name__
    return f"{name}: {first}" if first else name

"""What a running app holds: its configuration, engine and session factory, and the way
a request runs one unit of work."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, TypeVar

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import Session, sessionmaker

from infra.config import Config
from infra.replica import Replica
from ledger.db import is_retryable, make_session_factory, run_in_transaction, unit_of_work
from ledger.errors import DatabaseUnavailable

T = TypeVar("T")

log = logging.getLogger("smsledger.api")


@dataclass
class Runtime:
    config: Config
    engine: sa.Engine
    sessions: sessionmaker[Session]
    clock: Callable[[], datetime]
    extras: dict[str, Any] = field(default_factory=dict)
    replica: Replica | None = None

    @cached_property
    def autocommit_sessions(self) -> sessionmaker[Session]:
        """Sessions whose every statement commits alone, for reads that are one statement (the
        plain pre-send check): no BEGIN and no COMMIT round trips. PostgreSQL only; on SQLite,
        whose transactions begin with `BEGIN IMMEDIATE`, the ordinary sessions."""
        if self.engine.dialect.name != "postgresql":
            return self.sessions
        return make_session_factory(self.engine.execution_options(isolation_level="AUTOCOMMIT"))


def runtime() -> Runtime:
    found: Runtime = current_app.extensions["smsledger"]
    return found


def transaction(work: Callable[[Session], T], autocommit: bool = False) -> T:
    """Run `work` as this request's unit of work (retried whole on deadlock, and once on a
    database outage that struck before COMMIT; `DatabaseUnavailable` answers 503 otherwise).
    `autocommit`: each statement commits alone (`Runtime.autocommit_sessions`), for work that
    reads in one statement."""
    state = runtime()
    return run_in_transaction(state.autocommit_sessions if autocommit else state.sessions, work)


def report(work: Callable[[Session], T]) -> T:
    """Run `work`, a read that may be seconds stale (statistics, lists, statements, reports,
    balances `as_of` a past instant), on the read replica when there is one within its lag
    limit (`DATABASE_REPLICA_MAX_LAG_S`), else as `transaction` does on the primary. A replica
    that fails the read is set aside and the primary answers it: a replica fault never fails a
    report. Never for a read a write depends on: that reads the primary, in its transaction."""
    state = runtime()
    replica = state.replica
    if replica is not None and replica.usable():
        try:
            with unit_of_work(replica.sessions, commit=False) as session:
                return work(session)
        except DatabaseUnavailable as outage:
            replica.mark_down(outage.cause or outage.message)
        except sa.exc.DBAPIError as error:
            if not is_retryable(error):  # e.g. a query cancelled by a conflict with recovery
                raise
            log.info("replica read conflicted with recovery; reading from the primary")
    return run_in_transaction(state.sessions, work)


def as_of_read(work: Callable[[Session], T], as_of: datetime | None) -> T:
    """A balance read: `as_of` an instant it may be a report (decision 0024); now, it is what
    the next action is decided on, so it reads the primary."""
    return report(work) if as_of is not None else transaction(work)


def dispatch_charges_now() -> str:
    """After a commit that made a charge due: have it dispatched at once instead of at the
    next sweep (RQ: a dispatch job; embedded: wake the in-process scheduler).

    Best-effort, because the commit already happened: the outbox row and the due sweep are the
    guarantee (DESIGN "Jobs and time"). A kick that fails (Redis down) is logged and the answer
    says "deferred": the charge waits for the sweep that runs once Redis is back. Never raises.
    """
    kick = runtime().extras.get("dispatch_charges")
    if kick is None:
        return "deferred"
    try:
        kick()
    except Exception as error:  # any failure of the hand-off; the sweep catches up
        log.warning(
            "Charge dispatch deferred to the next sweep",
            extra={"reason": f"{type(error).__name__}: {error}"},
        )
        return "deferred"
    return "dispatched"


def now() -> datetime:
    return runtime().clock()


def system_clock() -> datetime:
    return datetime.now(UTC)

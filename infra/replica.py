"""A streaming read replica for the reads that tolerate seconds of staleness (reports, lists,
statements), and how far behind the primary it is.

Everything that writes, and every read a write depends on (the pre-send check, the balances a
close uses), stays on the primary; see `infra.runtime.report` for the reads that may come here.
The replica is used only while its lag is at most `max_lag_s`: a replica that lags more, or
does not answer, is skipped and the primary serves the read, so a replica fault costs load on
the primary, never an answer.

Lag is measured, not assumed: the primary's WAL insert position is read first (insert, not
write: with `synchronous_commit = off` a commit may not be written yet when it is visible),
then the replica's replayed position. A replica that has replayed that position has no lag
(however long ago its last transaction was: an idle primary writes nothing to replay);
otherwise the lag is the time since the last transaction it replayed, which overstates it
when the primary was idle before its latest write: the error falls on the safe side (the
primary answers). The figure is measured at most once per `check_every_s` per process and
shared by every request meanwhile.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from ledger.db import make_session_factory

log = logging.getLogger("smsledger.replica")

_PRIMARY_POSITION = sa.text("SELECT pg_current_wal_insert_lsn()::text")
_REPLICA_LAG = sa.text(
    "SELECT CASE WHEN pg_last_wal_replay_lsn() >= CAST(:position AS pg_lsn) THEN 0.0"
    " ELSE extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()) END"
)


@dataclass(frozen=True)
class ReplicaState:
    """What `/readyz` and `/metrics` show: `up` (it answered the last measurement), `lag_s`
    (None when down or never replayed anything yet) and where reports read now."""

    up: bool
    lag_s: float | None
    reads_from: str


@dataclass
class Replica:
    engine: sa.Engine
    primary: sa.Engine
    max_lag_s: float
    check_every_s: float = 1.0
    sessions: sessionmaker[Session] = field(init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _checked_at: float = field(default=-math.inf, repr=False)
    _state: ReplicaState = field(
        default_factory=lambda: ReplicaState(False, None, "primary"), repr=False
    )

    def __post_init__(self) -> None:
        self.sessions = make_session_factory(self.engine)

    def state(self) -> ReplicaState:
        """The latest measurement, renewed when it is older than `check_every_s` (one thread
        measures; the others use the previous figure meanwhile)."""
        if time.monotonic() - self._checked_at >= self.check_every_s and self._lock.acquire(
            blocking=False
        ):
            try:
                self._state = self._measure()
                self._checked_at = time.monotonic()
            finally:
                self._lock.release()
        return self._state

    def usable(self) -> bool:
        return self.state().reads_from == "replica"

    def mark_down(self, reason: str) -> None:
        """A read on the replica failed: the primary serves reads until the next measurement
        finds the replica answering again."""
        _went_down(reason)
        self._state = ReplicaState(False, None, "primary")
        self._checked_at = time.monotonic()

    def _measure(self) -> ReplicaState:
        try:
            with self.primary.connect() as connection:
                position = connection.execute(_PRIMARY_POSITION).scalar_one()
        except sa.exc.SQLAlchemyError:
            # the primary is down: no report can be fresh, and reads on the primary will
            # answer 503; keep the replica's last figure
            return self._state
        try:
            with self.engine.connect() as connection:
                lag = connection.execute(_REPLICA_LAG, {"position": position}).scalar_one()
        except sa.exc.SQLAlchemyError as error:
            if self._state.up:
                _went_down(f"{type(error).__name__}: {error}".splitlines()[0])
            return ReplicaState(False, None, "primary")
        lag_s = None if lag is None else float(lag)
        fresh = lag_s is not None and lag_s <= self.max_lag_s
        return ReplicaState(True, lag_s, "replica" if fresh else "primary")


def _went_down(reason: str) -> None:
    log.warning("read replica unavailable; reading from the primary", extra={"reason": reason})

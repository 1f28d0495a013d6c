"""Holds: two-phase usage, in the manner of TigerBeetle's pending transfers.

A reserving pre-send check (`"reserve": true` with the message's `message_id`) sets the
message's cost aside as a hold, which counts against the customer's limits in every later check
until the usage post with that `message_id` captures it (one transfer; the hold is gone), a void
or `DELETE /api/usage/holds/{message_id}` releases it, or `hold_ttl_seconds` pass.

Holds are not ledger transfers: posted balances never include them. Concurrent reserving checks
of one customer are serialised by a transaction-level advisory lock on PostgreSQL (SQLite's
`BEGIN IMMEDIATE` serialises every transaction already), taken before the statement that reads
the state, so each check decides on every hold committed before it: with headroom H and cost
c, exactly floor(H / c) of any number of concurrent checks are allowed.

A hold whose message has been posted no longer counts even before it is deleted: a post racing
the check that places the hold (the post cannot see the uncommitted hold it should delete) must
not leave the message counted twice until the hold expires.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from billing.errors import HoldConflict, UnknownHold
from billing.tables import usage_holds
from ledger.model import Kind
from ledger.tables import UtcDateTime, transfer_keys, transfers
from ledger.transfer_keys import in_its_month


@dataclass(frozen=True, slots=True)
class Hold:
    message_id: str
    customer_id: str
    amount: int
    currency: str
    expires_at: datetime


def _usage_probe(message_id: Any, column: Any = None) -> sa.ScalarSelect[Any]:
    """`column` (default 1) of `message_id`'s usage transfer, as one probe of the
    `transfer_keys` primary key (then of its month's partition for a column). A scalar
    subquery with LIMIT is never turned into a join, where `NOT EXISTS` may become an
    anti-join that hashes the whole of `transfers` (measured: reserving checks went from ms
    to seconds once holds and transfers grew)."""
    key = (
        transfer_keys.c.kind == Kind.USAGE.value,
        transfer_keys.c.idempotency_key == message_id,
        transfer_keys.c.leg == 0,
    )
    if column is None:
        return sa.select(sa.literal(1)).where(*key).limit(1).scalar_subquery()
    return (
        sa.select(column)
        .select_from(transfer_keys)
        .join(transfers, in_its_month(transfer_keys))
        .where(*key)
        .limit(1)
        .scalar_subquery()
    )


def held_amount() -> sa.ScalarSelect[Any]:
    """The sum of `:user_id`'s live holds at `:now`, leaving out `:own_message_id`'s (a
    reserving check's replay decides again without its own hold): for the pre-send check's
    one-statement read. A plain check passes an empty `own_message_id`, which no hold has."""
    return (
        sa.select(sa.func.coalesce(sa.func.sum(usage_holds.c.amount_micros), 0))
        .where(
            usage_holds.c.customer_id == sa.bindparam("user_id"),
            usage_holds.c.expires_at > sa.bindparam("now", type_=UtcDateTime),
            usage_holds.c.message_id != sa.bindparam("own_message_id"),
            _usage_probe(usage_holds.c.message_id).is_(None),
        )
        .scalar_subquery()
    )


_HELD = sa.select(held_amount().label("held"))


def held_by(session: Session, user_id: str, now: datetime) -> int:
    """What `user_id`'s live holds set aside now (the summary and the widget show it)."""
    params = {"user_id": user_id, "now": now, "own_message_id": ""}
    return int(session.connection().execute(_HELD, params).scalar_one())


_LOCK = sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")


def lock_holds_of(session: Session, user_id: str) -> None:
    """Serialise reserving checks of `user_id` until the transaction ends. Must run in its own
    statement before the read it protects: a statement's snapshot is taken when it starts."""
    if session.get_bind().dialect.name == "postgresql":
        session.connection().execute(_LOCK, {"key": f"usage-hold:{user_id}"})


@dataclass(frozen=True, slots=True)
class Claim:
    """Who has `message_id` already: its hold (live or not) and the user of its usage post."""

    hold: Hold | None
    posted_by: str | None

    def live_hold(self, now: datetime) -> Hold | None:
        """The hold, if it still stands at `now`."""
        return self.hold if self.hold is not None and self.hold.expires_at > now else None


def _own(column: sa.ColumnElement[Any]) -> sa.ScalarSelect[Any]:
    return (
        sa.select(column)
        .where(usage_holds.c.message_id == sa.bindparam("own_message_id"))
        .scalar_subquery()
    )


def claim_columns() -> list[sa.Label[Any]]:
    """`:own_message_id`'s hold and the user of its usage post, as columns of the pre-send
    check's one-statement read (primary-key and unique-index probes; NULLs for a plain check's
    empty id). `claim_from` reads them back."""
    posted_by = _usage_probe(
        sa.bindparam("own_message_id"), transfers.c.metadata["user_id"].as_string()
    )
    return [
        _own(usage_holds.c.customer_id).label("own_hold_user"),
        _own(usage_holds.c.amount_micros).label("own_hold_amount"),
        _own(usage_holds.c.currency).label("own_hold_currency"),
        _own(usage_holds.c.expires_at).label("own_hold_expires_at"),
        posted_by.label("own_posted_by"),
    ]


def claim_from(row: Any, message_id: str) -> Claim:
    hold = (
        Hold(
            message_id,
            row.own_hold_user,
            int(row.own_hold_amount),
            row.own_hold_currency,
            row.own_hold_expires_at,
        )
        if row.own_hold_user is not None
        else None
    )
    return Claim(hold, row.own_posted_by)


def check_claim(claim: Claim, message_id: str, user_id: str) -> None:
    """Raises: HoldConflict when another user's hold or usage has `message_id`."""
    owner = claim.posted_by or (claim.hold.customer_id if claim.hold else None)
    if owner is not None and owner != user_id:
        raise _taken(message_id)


def _taken(message_id: str) -> HoldConflict:
    return HoldConflict(
        f"message_id {message_id!r} belongs to another user's message", message_id=message_id
    )


def _place_statement(insert_of: Any) -> Any:
    """Insert the hold, or replace this user's expired one: `INSERT … ON CONFLICT DO UPDATE`
    in the dialect of `insert_of`. Another user's hold is never taken over (two users racing
    for one message id): then no row comes back."""
    insert = insert_of(usage_holds).values(
        message_id=sa.bindparam("message_id"),
        customer_id=sa.bindparam("customer_id"),
        amount_micros=sa.bindparam("amount"),
        currency=sa.bindparam("currency"),
        created_at=sa.bindparam("now", type_=UtcDateTime),
        expires_at=sa.bindparam("expires_at", type_=UtcDateTime),
    )
    return insert.on_conflict_do_update(
        index_elements=["message_id"],
        set_={
            name: insert.excluded[name]
            for name in ("customer_id", "amount_micros", "currency", "created_at", "expires_at")
        },
        where=usage_holds.c.customer_id == insert.excluded.customer_id,
    ).returning(usage_holds.c.message_id)


_PLACE_STATEMENTS = {
    "postgresql": _place_statement(postgresql.insert),
    "sqlite": _place_statement(sqlite.insert),
}


def place_hold(
    session: Session,
    claim: Claim,
    message_id: str,
    user_id: str,
    amount: int,
    currency: str,
    now: datetime,
    ttl_seconds: int,
) -> Hold:
    """Hold `amount` for `message_id` until `ttl_seconds` from now. A live hold of this message
    stays as it was placed (a replayed check extends nothing); an expired one is replaced. The
    caller holds the lock and has checked `claim` is this user's: one statement at most."""
    live = claim.live_hold(now)
    if live is not None:
        return live
    expires_at = now + timedelta(seconds=ttl_seconds)
    placed = (
        session.connection()
        .execute(
            _PLACE_STATEMENTS[session.get_bind().dialect.name],
            {
                "message_id": message_id,
                "customer_id": user_id,
                "amount": amount,
                "currency": currency,
                "now": now,
                "expires_at": expires_at,
            },
        )
        .first()
    )
    if placed is None:
        raise _taken(message_id)
    return Hold(message_id, user_id, amount, currency, expires_at)


def release_hold(session: Session, message_id: str, now: datetime) -> Hold:
    """Free `message_id`'s live hold (the send failed).

    Raises: UnknownHold when there is none (never placed, captured, released, or expired).
    """
    row = session.execute(
        sa.delete(usage_holds)
        .where(usage_holds.c.message_id == message_id)
        .returning(*usage_holds.c)
    ).one_or_none()
    if (
        row is None
        or row.expires_at <= now
        or session.execute(sa.select(_usage_probe(message_id).is_not(None))).scalar_one()
    ):
        raise UnknownHold(f"no live hold for message {message_id!r}", message_id=message_id)
    return Hold(row.message_id, row.customer_id, row.amount_micros, row.currency, row.expires_at)


def drop_holds(session: Session, message_ids: Sequence[str]) -> None:
    """Delete the holds of these messages (their usage was posted, or voided): one statement."""
    if message_ids:
        session.execute(sa.delete(usage_holds).where(usage_holds.c.message_id.in_(message_ids)))


def purge_holds(session: Session, now: datetime) -> int:
    """Delete the holds that no longer count: expired, or captured by a post that could not
    see them. How many went."""
    result = session.execute(
        sa.delete(usage_holds).where(
            sa.or_(
                usage_holds.c.expires_at <= now,
                _usage_probe(usage_holds.c.message_id).is_not(None),
            )
        )
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]

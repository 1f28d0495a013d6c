"""Finding transfers by what identifies them across months: their idempotency key, or the
transfer they reverse.

`transfers` is partitioned by month on PostgreSQL, and a partitioned table keeps no index
that spans its partitions except on the partition key, so neither question can be answered
from `transfers` without visiting every month. `transfer_keys` (one row per leg, written with
it) answers both from one index, then each transfer is read from its own month by
(id, effective_at).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ledger.tables import transfer_keys, transfers


def in_its_month(keys: sa.FromClause) -> sa.ColumnElement[bool]:
    """The join condition from a `transfer_keys` row to its transfer, which names the month
    partition to read (run-time pruning) as well as the row."""
    return sa.and_(
        transfers.c.id == keys.c.transfer_id, transfers.c.effective_at == keys.c.effective_at
    )


def _in_keys(*where: sa.ColumnElement[bool]) -> sa.ColumnElement[bool]:
    found = sa.select(transfer_keys.c.transfer_id, transfer_keys.c.effective_at).where(*where)
    return sa.tuple_(transfers.c.id, transfers.c.effective_at).in_(found)


def keyed(kind: str, keys: str | Iterable[str]) -> sa.ColumnElement[bool]:
    """Transfers posted under `kind` and one of `keys` (or the one key)."""
    chosen = (
        transfer_keys.c.idempotency_key == keys
        if isinstance(keys, str)
        else transfer_keys.c.idempotency_key.in_(list(keys))
    )
    return _in_keys(transfer_keys.c.kind == kind, chosen)


def keyed_pairs(pairs: Iterable[tuple[str, str]]) -> sa.ColumnElement[bool]:
    """Transfers posted under one of the (kind, key) `pairs`."""
    return _in_keys(
        sa.tuple_(transfer_keys.c.kind, transfer_keys.c.idempotency_key).in_(list(pairs))
    )


def is_reversed(transfer_id: sa.ColumnElement[object], *where: sa.ColumnElement[bool]) -> sa.Exists:
    """Whether the transfer `transfer_id` (a column) has a reversal (matching `where`, on the
    reversal's `transfer_keys` row)."""
    return sa.exists().where(transfer_keys.c.reverses_id == transfer_id, *where)


def reversal_of(transfer_id: object) -> sa.Select[Any]:
    """The idempotency key of the reversal of `transfer_id`, if any."""
    return sa.select(transfer_keys.c.idempotency_key).where(
        transfer_keys.c.reverses_id == transfer_id
    )


def key_taken(session: Session, kind: str, key: str) -> bool:
    """Whether a transfer was ever posted under (kind, key), archived ones included."""
    found = session.execute(
        sa.select(sa.literal(1))
        .where(transfer_keys.c.kind == kind, transfer_keys.c.idempotency_key == key)
        .limit(1)
    )
    return found.first() is not None

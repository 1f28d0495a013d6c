"""Writing many transfers at once: one `INSERT … SELECT * FROM unnest(arrays) ON CONFLICT DO
NOTHING RETURNING id` on PostgreSQL, with one array parameter per column.

A multi-row `INSERT … VALUES` of 1,000 transfers sends and parses 15,000 parameters; fifteen
arrays are one short statement. Small postings (a single SMS, a manual entry) keep the plain
statement, and SQLite always does.
"""

from __future__ import annotations

import functools
import uuid
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ledger.db import dump_json
from ledger.tables import transfers

BULK_MIN_ROWS = 64
"""From this many rows on, PostgreSQL postings go through the array insert."""

COLUMNS = [column.name for column in transfers.columns]
_COLUMN_LIST = ", ".join(COLUMNS)


@functools.cache
def _insert_statement(dialect: str) -> Any:
    """`INSERT … ON CONFLICT DO NOTHING RETURNING id`, built once per dialect."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        insert(transfers)
        .on_conflict_do_nothing(index_elements=["kind", "idempotency_key", "leg"])
        .returning(transfers.c.id)
    )


_ARRAY_TYPES = {
    "id": "uuid[]",
    "journal_id": "uuid[]",
    "kind": "text[]",
    "idempotency_key": "text[]",
    "leg": "smallint[]",
    "fingerprint": "text[]",
    "debit_account_id": "bigint[]",
    "credit_account_id": "bigint[]",
    "amount": "bigint[]",
    "currency": "text[]",
    "effective_at": "timestamptz[]",
    "posted_at": "timestamptz[]",
    "description": "text[]",
    "metadata": "jsonb[]",
    "reverses_id": "uuid[]",
}
_UNNEST_INSERT = (
    f"INSERT INTO transfers ({_COLUMN_LIST}) SELECT * FROM unnest("
    + ", ".join(f"%({name})s::{_ARRAY_TYPES[name]}" for name in COLUMNS)
    + ") ON CONFLICT (kind, idempotency_key, leg) DO NOTHING RETURNING id"
)


def insert_transfers(session: Session, rows: list[dict[str, Any]]) -> set[uuid.UUID]:
    """Insert `rows` (sorted by kind, key, leg), skipping keys that exist; the ids inserted."""
    dialect = session.get_bind().dialect.name
    connection = session.connection()
    if dialect != "postgresql" or len(rows) < BULK_MIN_ROWS:
        return set(connection.execute(_insert_statement(dialect), rows).scalars())
    columns = {name: [_cell(name, row[name]) for row in rows] for name in COLUMNS}
    result = connection.exec_driver_sql(_UNNEST_INSERT, columns)
    return {uuid.UUID(str(row[0])) for row in result}


def _cell(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name == "metadata":
        return dump_json(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    return value

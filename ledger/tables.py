"""The ledger's tables, with named constraints that repeat the model's rules in the database.

Constraint names are the contract with `ledger/db.py`, which translates a refusal by its name.
The append-only triggers on `transfers` live in the migration (DDL the metadata cannot carry).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from ledger.model import AccountType, Kind

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(JSONB(), "postgresql")

HOT_SLOTS = 16
"""How many balance rows a hot account spreads its cached balance over."""


class UtcDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC in and out on both databases; naive datetimes are refused.

    SQLite has no time zone type, so UTC is stored without an offset and re-attached on read.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.utcoffset() is None:
            raise ValueError("naive datetime refused: the ledger stores UTC instants only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        moment: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)


def _one_of(column: str, values: list[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("code", sa.String(200), nullable=False, unique=True),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("customer_id", sa.String(64), nullable=True, index=True),
    sa.Column("debits_must_not_exceed_credits", sa.Boolean, nullable=False),
    sa.Column("credits_must_not_exceed_debits", sa.Boolean, nullable=False),
    sa.Column("hot", sa.Boolean, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.CheckConstraint(_one_of("type", [t.value for t in AccountType]), name="type_known"),
    # Lets transfers reference (account, currency) so the database refuses a currency mismatch.
    sa.UniqueConstraint("id", "currency"),
)

balances = sa.Table(
    "balances",
    metadata,
    sa.Column("account_id", BigId, sa.ForeignKey("accounts.id"), primary_key=True),
    sa.Column("slot", sa.SmallInteger, primary_key=True),
    sa.Column("debits", sa.BigInteger, nullable=False),
    sa.Column("credits", sa.BigInteger, nullable=False),
    # Copies of the account's flags: a CHECK can only see its own row, and the row lock taken by
    # the UPDATE is what makes the limit hold under concurrent posts (invariant 9).
    sa.Column("debits_must_not_exceed_credits", sa.Boolean, nullable=False),
    sa.Column("credits_must_not_exceed_debits", sa.Boolean, nullable=False),
    sa.CheckConstraint("debits >= 0 AND credits >= 0", name="non_negative"),
    sa.CheckConstraint(
        "NOT debits_must_not_exceed_credits OR debits <= credits", name="debits_within_credits"
    ),
    sa.CheckConstraint(
        "NOT credits_must_not_exceed_debits OR credits <= debits", name="credits_within_debits"
    ),
)

# On PostgreSQL `transfers` is range-partitioned by month of `effective_at` (migration 0011,
# decision 0026): its primary key there is (id, effective_at), since a partitioned table's unique
# keys must hold the partition key. What must be unique across every month lives in
# `transfer_keys`. SQLite keeps one plain table.
transfers = sa.Table(
    "transfers",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("journal_id", sa.Uuid, nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("idempotency_key", sa.String(200), nullable=False),
    sa.Column("leg", sa.SmallInteger, nullable=False),
    sa.Column("fingerprint", sa.String(32), nullable=False),
    sa.Column("debit_account_id", BigId, nullable=False),
    sa.Column("credit_account_id", BigId, nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("effective_at", UtcDateTime, nullable=False),
    sa.Column("posted_at", UtcDateTime, nullable=False),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("metadata", Json, nullable=True),
    # Which transfer this one undoes: at most one reversal each, held by `transfer_keys` (a
    # partitioned table can neither be referenced by id alone nor keep a unique column).
    sa.Column("reverses_id", sa.Uuid, nullable=True),
    sa.CheckConstraint("amount > 0", name="amount_positive"),
    sa.CheckConstraint("debit_account_id <> credit_account_id", name="distinct_accounts"),
    sa.CheckConstraint(_one_of("kind", [k.value for k in Kind]), name="kind_known"),
    sa.ForeignKeyConstraint(
        ["debit_account_id", "currency"],
        ["accounts.id", "accounts.currency"],
        name="fk_transfers_debit_account",
    ),
    sa.ForeignKeyConstraint(
        ["credit_account_id", "currency"],
        ["accounts.id", "accounts.currency"],
        name="fk_transfers_credit_account",
    ),
    # Every transfer holds its key: one that skipped `transfer_keys`, or reused a taken key
    # under a new id, is refused by the database (the idempotency guard cannot be bypassed).
    sa.ForeignKeyConstraint(
        ["kind", "idempotency_key", "leg", "id"],
        [
            "transfer_keys.kind",
            "transfer_keys.idempotency_key",
            "transfer_keys.leg",
            "transfer_keys.transfer_id",
        ],
        name="fk_transfers_key",
    ),
)

# Statements and `as_of` balances read one account's transfers in effective order; the
# included amount lets PostgreSQL answer sums from the index alone.
sa.Index(
    "ix_transfers_debit_effective",
    transfers.c.debit_account_id,
    transfers.c.effective_at,
    postgresql_include=["amount"],
)
sa.Index(
    "ix_transfers_credit_effective",
    transfers.c.credit_account_id,
    transfers.c.effective_at,
    postgresql_include=["amount"],
)

# One row per transfer leg, written in the same statement as the transfer: the global guard of
# idempotency (a key posts once, whatever the month it names) and of "reversed at most once",
# which the monthly partitions of `transfers` cannot hold. Looking a transfer up by key or by
# what it reverses goes through here (ledger/transfer_keys.py), then to its partition by
# (id, effective_at).
transfer_keys = sa.Table(
    "transfer_keys",
    metadata,
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("idempotency_key", sa.String(200), primary_key=True),
    sa.Column("leg", sa.SmallInteger, primary_key=True),
    sa.Column("transfer_id", sa.Uuid, nullable=False),
    sa.Column("effective_at", UtcDateTime, nullable=False),
    sa.Column("reverses_id", sa.Uuid, nullable=True),
    # What `transfers`' foreign key to its key row references.
    sa.UniqueConstraint(
        "kind", "idempotency_key", "leg", "transfer_id", name="uq_transfer_keys_transfer"
    ),
    # Partial: reversals are few, and an index entry per SMS for a NULL would cost every post.
    sa.Index(
        "uq_transfer_keys_reverses_id",
        "reverses_id",
        unique=True,
        postgresql_where=sa.text("reverses_id IS NOT NULL"),
        sqlite_where=sa.text("reverses_id IS NOT NULL"),
    ),
)


# Months whose transfers were archived and dropped (`smsledger archive`, docs/archives.md):
# everything before the latest one's end is the archive cut.
archived_months = sa.Table(
    "archived_months",
    metadata,
    sa.Column("month", sa.Date, primary_key=True),  # its first day
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("manifest_sha256", sa.String(64), nullable=False),
    sa.Column("transfers", sa.BigInteger, nullable=False),
    sa.Column("archived_at", UtcDateTime, nullable=False),
)

# Per account, the debits and credits of every archived transfer: what the transfers still in
# the database no longer sum to. `ledger check`, statements and opening balances add them.
archived_totals = sa.Table(
    "archived_totals",
    metadata,
    sa.Column("account_id", BigId, sa.ForeignKey("accounts.id"), primary_key=True),
    sa.Column("debits", sa.BigInteger, nullable=False),
    sa.Column("credits", sa.BigInteger, nullable=False),
    sa.CheckConstraint("debits >= 0 AND credits >= 0", name="non_negative"),
)

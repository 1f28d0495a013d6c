"""The billing domain's tables, on the ledger's metadata so one Alembic history owns them all."""

from __future__ import annotations

import sqlalchemy as sa

from ledger.tables import BigId, UtcDateTime, metadata

ROLES = ("admin", "service", "accountant")

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    # The first characters, shown in listings so a key can be recognised without storing it.
    sa.Column("key_prefix", sa.String(16), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("revoked_at", UtcDateTime, nullable=True),
    sa.CheckConstraint("role IN ('admin', 'service', 'accountant')", name="role_known"),
)

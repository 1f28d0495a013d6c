"""Alembic environment: target metadata is the ledger's and the billing domain's tables."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

import billing.tables  # noqa: F401 - registers the billing tables on the shared metadata
import reconciliation.tables  # noqa: F401 - and the reconciliation tables
from ledger.tables import metadata

config = context.config


def _partitions(connection: sa.Connection) -> set[str]:
    """The names of the partitions on PostgreSQL (migration 0011), none elsewhere. Read on a
    connection of its own: one left in a transaction would keep the migrations from
    committing theirs."""
    if connection.dialect.name != "postgresql":
        return set()
    found = connection.exec_driver_sql("SELECT relname FROM pg_class WHERE relispartition")
    return set(found.scalars())


def run_migrations() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url is required"
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        partitions = _partitions(connection)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            # A table's monthly partitions are the table itself, not tables of their own.
            include_name=lambda name, kind, _parent: not (kind == "table" and name in partitions),
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations()

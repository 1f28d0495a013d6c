"""Alembic environment: target metadata is the ledger's and the billing domain's tables."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

import billing.tables  # noqa: F401 - registers the billing tables on the shared metadata
import reconciliation.tables  # noqa: F401 - and the reconciliation tables
from ledger.tables import metadata

config = context.config


def run_migrations() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url is required"
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations()

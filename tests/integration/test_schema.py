"""Alembic owns the schema: the migrations match the tables in code, and run both ways."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

import migrations
from ledger.tables import metadata


@pytest.mark.postgres
def test_migrations_match_the_tables_on_postgres(pg_url: str) -> None:
    migrations.check(pg_url)


def test_migrations_match_the_tables_on_sqlite(sqlite_url: str) -> None:
    migrations.check(sqlite_url)


@pytest.mark.postgres
def test_migrations_downgrade_and_upgrade_again(pg_url: str) -> None:
    migrations.downgrade(pg_url, "base")
    engine = sa.create_engine(pg_url)
    with engine.connect() as connection:
        assert set(sa.inspect(connection).get_table_names()) <= {"alembic_version"}
    migrations.upgrade(pg_url)
    with engine.connect() as connection:
        assert set(metadata.tables) <= set(sa.inspect(connection).get_table_names())
    engine.dispose()

"""Alembic owns the schema: `upgrade` and `check` run it from code, on either database."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

HERE = Path(__file__).resolve().parent


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at `url` to `revision` (creating a SQLite file's folder first)."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(sa.make_url(url).database or "").parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), revision)


def check(url: str) -> None:
    """Raise when the tables in code and the migrated schema differ (`alembic check`)."""
    command.check(alembic_config(url))


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)

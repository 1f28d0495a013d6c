"""`smsledger partitions show|ensure`: the month partitions of the tables that grow per SMS
(infra/partitions.py), for an operator. The schedule makes them daily; `ensure` does the
same at once. Both say so and do nothing on SQLite, which has no partitions."""

from __future__ import annotations

import click
import sqlalchemy as sa
from flask.cli import AppGroup

from infra.partitions import PARTITIONED_TABLES, default_rows, ensure_partitions, months_ahead
from infra.runtime import runtime
from ledger.db import run_in_transaction, unit_of_work

partitions_group = AppGroup("partitions", help="Monthly partitions (PostgreSQL).")


def _postgresql() -> bool:
    if runtime().engine.dialect.name == "postgresql":
        return True
    click.echo("this database is not PostgreSQL: its tables are not partitioned")
    return False


@partitions_group.command("ensure")
def partitions_ensure() -> None:
    """Create the missing month partitions, one month back through three ahead."""
    if not _postgresql():
        return
    state = runtime()
    states = run_in_transaction(state.sessions, lambda s: ensure_partitions(s, state.clock()))
    for found in states:
        click.echo(f"{found.partition}: {found.state}")


@partitions_group.command("show")
def partitions_show() -> None:
    """Every partition with its range and row estimate; months ahead; default rows."""
    if not _postgresql():
        return
    state = runtime()
    with unit_of_work(state.sessions, commit=False) as session:
        rows = session.execute(
            sa.text(
                "SELECT parent.relname, child.relname, pg_get_expr(child.relpartbound, child.oid),"
                " greatest(child.reltuples, 0)::bigint FROM pg_inherits"
                " JOIN pg_class parent ON parent.oid = inhparent"
                " JOIN pg_class child ON child.oid = inhrelid"
                " WHERE parent.relname = ANY (:tables) ORDER BY 1, 2"
            ),
            {"tables": list(PARTITIONED_TABLES)},
        ).all()
        ahead, in_default = months_ahead(session, state.clock()), default_rows(session)
    for table, name, bound, estimate in rows:
        click.echo(f"{table}\t{name}\t{bound}\t~{estimate} rows")
    for table in PARTITIONED_TABLES:
        click.echo(
            f"{table}: {ahead[table]} month(s) ahead, {in_default[table]} row(s) in the default"
        )

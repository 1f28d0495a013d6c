"""`smsledger archive --before YYYY-MM [--dry-run]` and `smsledger archive verify [YYYY-MM…]`:
closed months written to Parquet under `ARCHIVE_DIR` with a manifest, and checked again
(infra/archive_plan.py, infra/archive_files.py; issue 18 §2).

Each ready month is written and read back (infra/archive_files.py), then dropped in one
transaction that records its totals (infra/archive_drop.py). The summary names every month
before the cut: archived, or what holds it back. Exit status 0 when every ready month was
archived, 1 when one was not, 2 on a usage error.

`SMSLEDGER_FAULT_PAUSE_ARCHIVE_AT` (infra/archive_runner.py) stops it where the fault tests
kill it.
"""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup, ScriptInfo

from infra.archive_files import ArchiveError, month_dir, verify_month
from infra.archive_plan import parse_month, plan
from infra.archive_runner import MonthOutcome, archive_months
from infra.runtime import runtime
from ledger.db import unit_of_work


def _root() -> Path:
    configured = runtime().config.archive_dir
    if not configured:
        click.echo("ARCHIVE_DIR is not set: say where archives go", err=True)
        sys.exit(2)
    return Path(configured)


def _month_option(text: str) -> date:
    try:
        return parse_month(text)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


@click.group("archive", cls=AppGroup, invoke_without_command=True)
@click.option("--before", metavar="YYYY-MM", help="archive the months before this one")
@click.option("--dry-run", is_flag=True, help="say what would be archived, write nothing")
@click.pass_context
def archive_group(context: click.Context, before: str | None, dry_run: bool) -> None:
    """Closed months to Parquet files under ARCHIVE_DIR (PostgreSQL)."""
    if context.invoked_subcommand is not None:
        return
    if not current_app:  # AppGroup gives its subcommands an app context, not itself
        context.with_resource(context.ensure_object(ScriptInfo).load_app().app_context())
    if before is None:
        click.echo("--before YYYY-MM is required (or: smsledger archive verify)", err=True)
        sys.exit(2)
    cut = _month_option(before)
    state = runtime()
    if state.engine.dialect.name != "postgresql":
        click.echo("archives need PostgreSQL's monthly partitions: this database has none")
        sys.exit(2)
    if dry_run:
        _dry_run(cut, before)
        return
    root = _root()
    outcomes = archive_months(state.sessions, root, cut, state.clock, click.echo)
    if not outcomes:
        click.echo(f"no month before {before} is in the database")
    for outcome in outcomes:
        click.echo(_outcome_line(outcome, root))
    sys.exit(1 if any(o.error for o in outcomes) else 0)


def _dry_run(cut: date, before: str) -> None:
    with unit_of_work(runtime().sessions, commit=False) as session:
        months = plan(session, cut)
    for month in months:
        label = month.month.strftime("%Y-%m")
        reasons = "; ".join(month.reasons)
        click.echo(f"{label}: ready" if month.ready else f"{label}: held back: {reasons}")
    if not months:
        click.echo(f"no month before {before} is in the database")


def _outcome_line(outcome: MonthOutcome, root: Path) -> str:
    label = outcome.plan.month.strftime("%Y-%m")
    if outcome.archived:
        path = month_dir(root, outcome.plan.month)
        return f"{label}: archived, {outcome.transfers} transfers, {path}"
    if outcome.error:
        return f"{label}: NOT archived: {outcome.error}"
    if outcome.plan.ready:
        return f"{label}: held back: waits for the month that failed"
    return f"{label}: held back: {'; '.join(outcome.plan.reasons)}"


@archive_group.command("verify")
@click.argument("months", nargs=-1, metavar="[YYYY-MM]...")
def archive_verify(months: tuple[str, ...]) -> None:
    """Re-check archived months (all under ARCHIVE_DIR when none is named): checksums, rows,
    totals, and the database while a month is still in it."""
    root = _root()
    if months:
        paths = [month_dir(root, _month_option(m)) for m in months]
    else:
        paths = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.endswith(".partial"))
    if not paths:
        click.echo(f"no archive under {root}")
        sys.exit(1)
    failed = False
    state = runtime()
    with unit_of_work(state.sessions, commit=False) as session:
        for path in paths:
            try:
                verify_month(session, path)
            except ArchiveError as error:
                click.echo(f"{path.name}: FAILED: {error}")
                failed = True
            else:
                click.echo(f"{path.name}: ok")
    sys.exit(1 if failed else 0)

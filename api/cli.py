"""The `smsledger` command line (SPEC §9), a Flask CLI group: also `flask --app wsgi …`.

Each command opens one unit of work and calls one service function, like a request does.
"""

from __future__ import annotations

import getpass
import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import AppGroup, FlaskGroup, with_appcontext

import migrations
from api.archive_cli import archive_group
from api.partitions_cli import partitions_group
from billing.access.api_keys import create_key, first_admin_key, list_keys, revoke_key
from billing.access.user_tokens import mint_user_token
from billing.chart import CUSTOMER_ID
from billing.errors import InvalidRate
from billing.instants import parse_bound
from billing.onboarding.legacy import migrate_legacy, parse_legacy
from billing.settings import FREQUENCIES
from billing.tables import ROLES
from billing.usage.rate_sheets import add_rates, parse_sheet
from infra.runtime import runtime
from jobs.billing import run_billing_cycle
from jobs.context import sippy_client
from ledger.beancount_journal import write_beancount
from ledger.checks import check_ledger
from ledger.db import run_in_transaction, unit_of_work
from ledger.errors import LedgerError
from ledger.general_ledger_csv import write_general_ledger_csv
from reconciliation.report import as_csv, as_html, as_text
from reconciliation.runs import RunReport, reconcile, run_report
from reconciliation.statements import fetch_statement, parse_statement_csv


def ready() -> None:
    """The embedded default (SQLite) migrates itself, so every command works on a fresh
    directory; a server database is migrated explicitly (`smsledger db upgrade`)."""
    url = runtime().config.database_url
    if url.startswith("sqlite"):
        migrations.upgrade(url)


db_group = AppGroup("db", help="Database schema.")
keys_group = AppGroup("keys", help="API keys.")
ledger_group = AppGroup("ledger", help="Ledger maintenance.")
rates_group = AppGroup("rates", help="The rate table.")


@rates_group.command("import")
@click.argument("sheet", type=click.File("r", encoding="utf-8"))
def rates_import(sheet: Any) -> None:
    """Load a CSV rate sheet (columns: prefix, price, currency[, country, valid_from,
    valid_to, plan]); identical rates already loaded are left as they are."""
    ready()
    state = runtime()
    try:
        rates = parse_sheet(sheet.read())
        with unit_of_work(state.sessions) as session:
            summary = add_rates(session, rates, state.clock())
    except (InvalidRate, UnicodeDecodeError) as error:
        click.echo(f"rate sheet refused: {error}", err=True)
        for problem in getattr(error, "details", {}).get("errors", [])[:50]:
            click.echo(f"  line {problem['line']}: {problem['message']}", err=True)
        for conflict in getattr(error, "details", {}).get("conflicts", []):
            click.echo(f"  {conflict}", err=True)
        sys.exit(1)
    click.echo(f"rates added: {summary.added}, already present: {summary.unchanged}")


@db_group.command("upgrade")
def db_upgrade() -> None:
    """Apply the Alembic migrations (PostgreSQL or SQLite)."""
    migrations.upgrade(runtime().config.database_url)
    click.echo("database is at the latest revision")


@keys_group.command("create")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--name", default="", help="a label to recognise the key by")
def keys_create(role: str, name: str) -> None:
    """Create an API key and print it once; only its digest is stored."""
    ready()
    state = runtime()
    with unit_of_work(state.sessions) as session:
        key, record = create_key(session, role, name, state.clock())
    click.echo(key)
    click.echo(f"created {record.role} key #{record.id} ({record.key_prefix}…)", err=True)


@keys_group.command("list")
def keys_list() -> None:
    """Every key: id, role, name, prefix, created, revoked (never the key itself)."""
    ready()
    with unit_of_work(runtime().sessions) as session:
        found = list_keys(session)
    for key, created, revoked in found:
        state = f"revoked {revoked:%Y-%m-%d %H:%M}" if revoked else "live"
        click.echo(
            f"#{key.id}\t{key.role}\t{key.name}\t{key.key_prefix}…\t{created:%Y-%m-%d}\t{state}"
        )


@keys_group.command("revoke")
@click.argument("key_id", type=int)
def keys_revoke(key_id: int) -> None:
    """Revoke key #KEY_ID: the API refuses it within seconds, its page sessions end at once."""
    ready()
    state = runtime()
    with unit_of_work(state.sessions) as session:
        revoked = revoke_key(session, key_id, state.clock())
    if not revoked:
        click.echo(f"no live key #{key_id}", err=True)
        sys.exit(1)
    click.echo(f"revoked key #{key_id}")


@ledger_group.command("check")
def ledger_check() -> None:
    """Recompute every balance from the transfers and verify the invariants."""
    ready()
    with unit_of_work(runtime().sessions) as session:
        problems = check_ledger(session)
    for problem in problems:
        click.echo(f"invariant {problem.invariant} broken at {problem.subject}: {problem.message}")
    if problems:
        sys.exit(1)
    click.echo("ledger ok: cached balances equal transfer sums; debits equal credits")


@click.command("bill")
@with_appcontext
@click.option("--type", "frequency", type=click.Choice(FREQUENCIES), required=True)
def bill(frequency: str) -> None:
    """Run a billing cycle now: close the due periods of one frequency into invoices."""
    ready()
    state = runtime()
    summary, duration_ms = run_billing_cycle(
        state.sessions, frequency, state.clock(), state.config.billing
    )
    click.echo(
        f"{frequency}: {summary.periods_closed} period(s) closed, {summary.invoices_created}"
        f" invoice(s), {summary.charges_enqueued} charge(s) queued, {summary.skipped} skipped,"
        f" {summary.errors} error(s) in {duration_ms} ms"
    )
    if summary.errors:
        sys.exit(1)


@click.command("token")
@with_appcontext
@click.option("--user-id", required=True, help="the user the token speaks for (`sub`)")
@click.option("--ttl-hours", default=24, show_default=True, type=click.IntRange(1, 24 * 365))
def token(user_id: str, ttl_hours: int) -> None:
    """Mint an end-user token signed with USER_TOKEN_SECRET (for testing; the host application
    issues real ones)."""
    state = runtime()
    secret = state.config.user_token_secret
    if not secret:
        click.echo("USER_TOKEN_SECRET is not set", err=True)
        sys.exit(2)
    if not CUSTOMER_ID.match(user_id):
        click.echo("--user-id may hold letters, digits, '.', '_' and '-' (1-64)", err=True)
        sys.exit(2)
    click.echo(mint_user_token(secret, user_id, state.clock(), timedelta(hours=ttl_hours)))


@click.command("sippy-sim")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8090, show_default=True, type=int)
@click.option("--accounts", "accounts_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--username", default="smsledger", show_default=True)
@click.option("--password", default="secret", show_default=True)
@click.option("--no-digest", is_flag=True, help="accept XML-RPC calls without digest auth")
def sippy_sim(
    host: str, port: int, accounts_file: str | None, username: str, password: str, no_digest: bool
) -> None:
    """Run the Sippy simulator (docs/sippy-simulator.md): XML-RPC on /xmlapi/xmlapi, its
    control API on /_sim/."""
    from sippy_simulator.server import serve as serve_simulator

    click.echo(f"Sippy simulator on http://{host}:{port}/xmlapi/xmlapi", err=True)
    serve_simulator(host, port, accounts_file, username, password, not no_digest)


@click.command("reconcile")
@with_appcontext
@click.option("--from", "start", required=True, help="RFC 3339 start of the range (inclusive)")
@click.option("--to", "end", required=True, help="RFC 3339 end of the range (exclusive)")
@click.option("--statement", type=click.Path(exists=True, dir_okay=False), help="a statement CSV")
@click.option("--map", "mapping", multiple=True, help="column mapping ours=theirs (repeatable)")
@click.option("--window-minutes", default=10, show_default=True, type=click.IntRange(0, 10080))
@click.option("--format", "fmt", type=click.Choice(["text", "json", "csv", "html"]), default="text")
@click.option("--out", type=click.File("w", encoding="utf-8"), default="-")
def reconcile_command(
    start: str,
    end: str,
    statement: str | None,
    mapping: tuple[str, ...],
    window_minutes: int,
    fmt: str,
    out: Any,
) -> None:
    """Reconcile the ledger with Sippy for a range (Sippy's API, or --statement FILE); exits 0
    when reconciled, 1 when differences remain."""
    ready()
    state = runtime()
    start_at, end_at = parse_bound(start), parse_bound(end)
    if start_at is None or end_at is None or end_at <= start_at:
        click.echo(
            "--from and --to must be dates (YYYY-MM-DD, midnight UTC) or RFC 3339 instants with"
            " offsets, --to after --from",
            err=True,
        )
        sys.exit(2)
    columns = dict(pair.split("=", 1) for pair in mapping if "=" in pair)
    try:
        if statement:
            with open(statement, "rb") as handle:
                loaded = parse_statement_csv(handle.read(), columns, statement)
        else:
            client = sippy_client(state.config)
            if client is None:
                click.echo("SIPPY_URL is not set: give --statement FILE", err=True)
                sys.exit(2)
            loaded = fetch_statement(client, start_at, end_at)
    except LedgerError as error:
        click.echo(f"{error.message} {error.details or ''}".rstrip(), err=True)
        sys.exit(2)
    who = f"cli:{getpass.getuser()}"
    source = "statement" if statement else "sippy"

    def work(session: Any) -> RunReport:
        run = reconcile(
            session, loaded, source, start_at, end_at, who, state.clock(), window_minutes * 60
        )
        return run_report(session, run.id, differences_only=False)

    report, items = run_in_transaction(state.sessions, work)
    if fmt == "json":
        out.write(json.dumps(report, indent=2) + "\n")
    elif fmt == "csv":
        out.write(as_csv(items))
    elif fmt == "html":
        out.write(as_html(report))
    else:
        out.write(as_text(report))
    sys.exit(0 if report["status"] == "reconciled" else 1)


@click.command("export")
@with_appcontext
@click.option("--format", "fmt", type=click.Choice(["beancount", "csv"]), required=True)
@click.option("--from", "start", default=None, help="date or RFC 3339 instant (inclusive)")
@click.option("--to", "end", default=None, help="date or RFC 3339 instant (exclusive)")
@click.option("--out", type=click.File("w", encoding="utf-8"), default="-")
def export_command(fmt: str, start: str | None, end: str | None, out: Any) -> None:
    """Export the ledger as a Beancount journal or a general-ledger CSV (docs/export.md):
    the entries effective in [--from, --to), read in one snapshot and streamed."""
    ready()
    start_at = parse_bound(start) if start is not None else None
    end_at = parse_bound(end) if end is not None else None
    if (
        (start is not None and start_at is None)
        or (end is not None and end_at is None)
        or (start_at is not None and end_at is not None and end_at <= start_at)
    ):
        click.echo(
            "--from and --to must be dates (YYYY-MM-DD, midnight UTC) or RFC 3339 instants with"
            " offsets, --to after --from",
            err=True,
        )
        sys.exit(2)
    write = write_beancount if fmt == "beancount" else write_general_ledger_csv
    with unit_of_work(runtime().sessions, commit=False) as session:
        summary = write(session, out, start_at, end_at)
    click.echo(
        f"exported {summary.entries} journal entries ({summary.transfers} transfers) on"
        f" {summary.accounts} accounts",
        err=True,
    )


def _redis() -> Any:
    from redis import Redis

    url = runtime().config.redis_url
    if not url:
        click.echo("REDIS_URL is not set: workers and the scheduler need Redis", err=True)
        sys.exit(2)
    return Redis.from_url(url)


@click.command("migrate-legacy")
@with_appcontext
@click.argument("export", type=click.File("r", encoding="utf-8"))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "json"]),
    default=None,
    help="default: from the file name",
)
@click.option("--month", default=None, help="YYYY-MM of the usage (default: this month)")
@click.option("--dry-run", is_flag=True, help="report what would change; write nothing")
def migrate_legacy_command(export: Any, fmt: str | None, month: str | None, dry_run: bool) -> None:
    """Onboard existing users and this month's usage (docs/migrate-legacy.md)."""
    ready()
    state = runtime()
    fmt = fmt or ("json" if export.name.endswith(".json") else "csv")
    now = state.clock()
    try:
        month_start = (
            datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
            if month
            else now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        )
    except ValueError:
        click.echo("--month must be YYYY-MM", err=True)
        sys.exit(2)
    users, errors = parse_legacy(export.read(), fmt)
    summary = run_in_transaction(
        state.sessions,
        lambda s: migrate_legacy(s, users, month_start, now, state.config.billing),
        commit=not dry_run,
    )
    summary.errors[:0] = errors
    click.echo(
        ("dry run: " if dry_run else "")
        + f"users processed: {summary.users_processed}, customers created:"
        f" {summary.customers_created}, custom settings created:"
        f" {summary.custom_settings_created}, initial billing records:"
        f" {summary.initial_billing_records}, errors: {len(summary.errors)},"
        f" warnings: {len(summary.warnings)}"
    )
    for line in summary.errors:
        click.echo(f"error: {line}", err=True)
    for line in summary.warnings:
        click.echo(f"warning: {line}", err=True)
    if summary.errors:
        sys.exit(1)


@click.command("worker")
@with_appcontext
@click.option("--burst", is_flag=True, help="exit when the queues are empty")
def worker(burst: bool) -> None:
    """Run an RQ worker on the billing, payments, notifications and reconciliation queues.
    Survives Redis outages: a fresh RQ worker starts once Redis answers again
    (`jobs.worker_loop`); SIGTERM or SIGINT stop it after the running job, a second one at once."""
    from jobs.worker_loop import WorkerLoop

    WorkerLoop(_redis(), burst=burst).run()


@click.command("scheduler")
@with_appcontext
@click.option("--burst", is_flag=True, help="enqueue what is due once, then exit")
def scheduler(burst: bool) -> None:
    """(Re)register the schedules and run rq-scheduler (run exactly one). Survives Redis
    outages and registers vanished schedules again (`jobs.scheduler_loop`)."""
    from jobs.scheduler_loop import SchedulerLoop

    loop = SchedulerLoop.on(_redis())
    if burst:
        ids = loop.run_once()
        done = f"schedules registered: {', '.join(ids)}" if ids else "another scheduler runs"
        click.echo(done, err=True)
        return
    loop.run()


@click.command("serve")
@with_appcontext
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int, envvar="PORT")
@click.option("--threads", default=8, show_default=True, type=int)
def serve(host: str, port: int, threads: int) -> None:
    """Run the API on the configured database (default: SQLite under ./var/), migrating first."""
    import waitress

    state = runtime()
    migrations.upgrade(state.config.database_url)
    with unit_of_work(state.sessions) as session:
        key = first_admin_key(session, state.clock())
    if key is not None:
        click.echo(f"No API keys yet: created an admin key (shown once): {key}")
    if not state.config.redis_url:
        from jobs import context
        from jobs.embedded import EmbeddedScheduler

        context.configure(
            context.from_config(state.config, sessions=state.sessions, clock=state.clock)
        )
        embedded = EmbeddedScheduler(state.clock)
        state.extras["dispatch_charges"] = embedded.wake
        embedded.start()
        click.echo("no REDIS_URL: billing jobs run in process (embedded scheduler)")
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    click.echo(f"smsledger on http://{host}:{port} ({state.engine.url.render_as_string()})")
    waitress.serve(app, host=host, port=port, threads=threads, ident="smsledger")


def register_commands(app: Flask) -> None:
    for command in (
        db_group,
        keys_group,
        ledger_group,
        partitions_group,
        archive_group,
        rates_group,
        bill,
        reconcile_command,
        export_command,
        token,
        sippy_sim,
        migrate_legacy_command,
        worker,
        scheduler,
        serve,
    ):
        app.cli.add_command(command)


def _app_factory() -> Flask:
    from api import create_app

    return create_app()


def _print_version(context: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not context.resilient_parsing:
        from importlib.metadata import version

        click.echo(f"smsledger {version('smsledger')}")
        context.exit()


main = FlaskGroup(
    name="smsledger",
    create_app=_app_factory,
    # smsledger's own commands only: Flask's `run`, `shell` and `routes` stay with `flask --app
    # wsgi …` for developers.
    add_default_commands=False,
    add_version_option=False,
    params=[
        click.Option(
            ["--version"],
            is_flag=True,
            expose_value=False,
            is_eager=True,
            callback=_print_version,
            help="Show smsledger's version and exit.",
        )
    ],
    help="""smsledger: the double-entry billing engine of an SMS platform that collects through
Sippy. Configuration comes from the environment and ./.env (README "Configuration"); without
DATABASE_URL everything runs on SQLite under ./var/.

\b
Start here:
  smsledger serve                 the API and pages on http://127.0.0.1:8000 (PORT=…)
  smsledger keys create --role …  an API key (admin, service, accountant)
  smsledger rates import FILE     the rate table
  smsledger sippy-sim             a Sippy simulator for trying charges""",
)
for _flask_option in main.params:  # Flask's developer options stay usable but out of the help
    if _flask_option.name in ("app", "debug") and isinstance(_flask_option, click.Option):
        _flask_option.hidden = True

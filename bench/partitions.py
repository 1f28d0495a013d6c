"""Monthly partitions against one plain table (decision 0026), on ledgers of the same size in
one run: posting, the daily close and `as_of` reads.

    .venv/bin/python -m bench.partitions [--transfers 10000000] [--customers 1000]
                                         [--day-transfers 100000] [--posts 2000] [--rounds 3]

One throwaway PostgreSQL, two databases with the same schema but for partitioning:
`partitioned` (the migrations: `transfers` and `invoice_usage` by month) and `plain` (the same
tables from the code's metadata, as plain tables: the same `transfer_keys`, keys and indexes,
so the difference is the partitioning alone). Each gets `--transfers` usage transfers spread
over the 365 days before the measured day, then `--day-transfers` on that day (bench.
close_period's rows, loaded by the same set-based SQL, keys included), then VACUUM ANALYZE.

Measured in alternating rounds, the median of `--rounds` per database:
- posting: `--posts` single usage posts by `post_alone` (one statement each), and batches of
  1,000 entries by `post_entries` (the bulk path);
- the daily close of the measured day (`close_periods`, rolled back but the last round);
- `as_of`: one customer's balance at an instant half a year back (100 customers), and the
  trial balance at that instant (every account).
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

import billing.tables  # noqa: F401 - registers the billing tables on the shared metadata
import migrations
import reconciliation.tables  # noqa: F401 - and the reconciliation tables
from bench.close_period import CLOSE_AT, DAY, LOAD
from bench.ledger_posting import bench_batches, bench_singles
from bench.repeated import load, provision, settle
from billing.invoicing.closing import close_periods
from billing.settings import BillingDefaults
from ledger.balances import account_balance, trial_balance
from ledger.checks import check_ledger
from ledger.db import make_engine, make_session_factory, unit_of_work
from ledger.tables import metadata
from tests.pgserver import PostgresServer

HISTORY_DAYS = 365
AS_OF = DAY - timedelta(days=182)
VERSIONS = Path(migrations.__file__).resolve().parent / "versions"


def _migration(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_migration_{name[:4]}", VERSIONS / name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_plain(url: str) -> None:
    """Head's schema as plain tables: the metadata's tables, indexes and keys, then what the
    migrations add beyond them (the append-only triggers, the per-SMS functions)."""
    engine = sa.create_engine(url)
    core, partitions = _migration("0001_ledger_core.py"), _migration("0011_monthly_partitions.py")
    with engine.begin() as connection:
        metadata.create_all(connection)
        for statement in core.POSTGRES_TRIGGERS:
            connection.exec_driver_sql(statement)
        connection.exec_driver_sql(partitions.POST_TRANSFER)
        connection.exec_driver_sql(
            partitions._send_state(old=False).replace("CREATE OR REPLACE", "CREATE")
        )
    engine.dispose()


def fill(url: str, transfers: int, customers: int, day_transfers: int, months: bool) -> float:
    """The history and the measured day; seconds it took. `months`: create the history's
    month partitions first (what the migration does for a database converted with its data)."""
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    started = time.perf_counter()
    with unit_of_work(sessions) as session:
        first = DAY - timedelta(days=HISTORY_DAYS)
        if months:
            for table in ("transfers", "invoice_usage"):
                session.execute(
                    sa.text("SELECT * FROM ledger_ensure_month_partitions(:t, :first, :last)"),
                    {"t": table, "first": first.date(), "last": (DAY + timedelta(days=40)).date()},
                )
        revenue = provision(session, customers, first, "revenue:sms:USD")
    per_day = transfers // HISTORY_DAYS
    params = {"customers": customers, "revenue": revenue}
    for back in range(HISTORY_DAYS, 0, -1):
        day, keys_from = DAY - timedelta(days=back), day_transfers + (back - 1) * per_day
        with unit_of_work(sessions) as session:
            load(session, LOAD, {**params, "transfers": per_day, "day": day, "first": keys_from})
    with unit_of_work(sessions) as session:
        load(session, LOAD, {**params, "transfers": day_transfers, "day": DAY, "first": 0})
    settle(engine)
    engine.dispose()
    return time.perf_counter() - started


def close_once(sessions: sessionmaker[Session], commit: bool) -> float:
    session = sessions()
    try:
        started = time.perf_counter()
        close_periods(session, "daily", CLOSE_AT, BillingDefaults())
        if commit:
            session.commit()
        return time.perf_counter() - started
    finally:
        session.rollback()
        session.close()


def as_of_reads(sessions: sessionmaker[Session], customers: int) -> tuple[float, float]:
    """(median ms of one customer's balance as of AS_OF, s of the trial balance as of it)."""
    chosen = random.Random(7).sample(range(customers), min(100, customers))
    with unit_of_work(sessions, commit=False) as session:
        each = []
        for n in chosen:
            started = time.perf_counter()
            account_balance(session, f"customer:c{n}:unbilled", as_of=AS_OF)
            each.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        trial_balance(session, as_of=AS_OF)
        return statistics.median(each), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--transfers", type=int, default=10_000_000)
    parser.add_argument("--customers", type=int, default=1_000)
    parser.add_argument("--day-transfers", type=int, default=100_000)
    parser.add_argument("--posts", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    server = PostgresServer()
    admin_url = server.start()
    names = ("partitioned", "plain")
    try:
        admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            for name in names:
                connection.exec_driver_sql(f"CREATE DATABASE {name}")
            version = str(connection.execute(sa.text("SHOW server_version")).scalar_one())
        admin.dispose()
        urls = {name: server.url(name) for name in names}
        migrations.upgrade(urls["partitioned"])
        make_plain(urls["plain"])
        loaded = {
            name: fill(
                urls[name], args.transfers, args.customers, args.day_transfers, name != "plain"
            )
            for name in names
        }
        engines = {name: make_engine(urls[name]) for name in names}
        sessions = {name: make_session_factory(engines[name]) for name in names}
        figures: dict[str, dict[str, list[float]]] = {name: {} for name in names}

        def record(name: str, measure: str, value: float) -> None:
            figures[name].setdefault(measure, []).append(value)

        measures: list[tuple[str, Callable[[str, int], None]]] = [
            (
                "singles",
                lambda n, _r: record(n, "singles", bench_singles(sessions[n], 1, args.posts)),
            ),
            (
                "batches",
                lambda n, _r: record(
                    n, "batches", statistics.median(bench_batches(sessions[n], 3))
                ),
            ),
            (
                "close",
                lambda n, r: record(n, "close", close_once(sessions[n], r == args.rounds - 1)),
            ),
        ]
        for round_number in range(args.rounds):
            for _label, measure in measures:
                for name in names if round_number % 2 == 0 else reversed(names):
                    measure(name, round_number)
            for name in names:
                balance_ms, trial_s = as_of_reads(sessions[name], args.customers)
                record(name, "balance_as_of", balance_ms)
                record(name, "trial_as_of", trial_s)
        checks = {}
        for name in names:
            with unit_of_work(sessions[name], commit=False) as session:
                checks[name] = check_ledger(session)
                count = session.execute(sa.text("SELECT count(*) FROM transfers")).scalar_one()
            engines[name].dispose()
    finally:
        server.stop()

    median = {n: {m: statistics.median(v) for m, v in figures[n].items()} for n in names}
    p, f = median["partitioned"], median["plain"]
    print(f"command: python -m bench.partitions {' '.join(sys.argv[1:])}".rstrip())
    print(f"machine: {platform.machine()}, python {platform.python_version()},")
    print(f"  PostgreSQL {version}")
    print(
        f"ledger: {count:,} transfers at the end, {args.customers:,} customers, history over"
        f" {HISTORY_DAYS} days; load (setup, not measured): partitioned"
        f" {loaded['partitioned']:.0f} s, plain {loaded['plain']:.0f} s"
    )
    print("| measure (median of rounds) | partitioned | plain | partitioned / plain |")
    print("|---|---|---|---|")
    rows = [
        ("single posts (post_alone), posts/s", "singles", "{:,.0f}"),
        ("batches of 1,000 (post_entries), entries/s", "batches", "{:,.0f}"),
        (f"daily close of {args.day_transfers:,} transfers, s", "close", "{:.2f}"),
        ("one balance as_of half a year back, ms", "balance_as_of", "{:.2f}"),
        ("trial balance as_of half a year back, s", "trial_as_of", "{:.2f}"),
    ]
    for label, key, fmt in rows:
        print(f"| {label} | {fmt.format(p[key])} | {fmt.format(f[key])} | {p[key] / f[key]:.2f} |")
    print(
        "| ledger check | "
        + " | ".join("ok" if not checks[n] else str(checks[n][:2]) for n in names)
        + " | |"
    )


if __name__ == "__main__":
    main()

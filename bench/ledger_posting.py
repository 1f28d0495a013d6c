"""Ledger posting throughput and balance-read latency on PostgreSQL, below HTTP.

    .venv/bin/python -m bench.ledger_posting [--batches 30] [--singles 2000] [--grow 0]

Starts a throwaway PostgreSQL exactly as the tests do, migrates it, and measures:
- batch posting: `post_entries` with 1,000 usage entries across 50 customers per unit of work;
- single-entry posting: one entry per unit of work, with 1 and 16 client threads;
- beside it, in the same database and in alternating rounds, the one-row floor: a prepared
  `INSERT` of a usage-shaped transfer and `COMMIT` on raw psycopg2 (`bench.copy_limit`'s), which
  no ledger committing each posting on its own can beat; the ratio is the median of the
  rounds' ratios;
- with `--grow N`: batches go on until `transfers` holds N rows, and the batch rate is reported
  as the table passes 10^4, 10^5 and 10^6 rows (median of the last 10 batches at each mark):
  how posting cost grows with the ledger;
- balance reads: `account_balance` now and `as_of` a past instant on an account with many
  transfers after it (the read subtracts them from the cached balance), the table settled
  (vacuumed) first as autovacuum leaves it.
Figures are medians of repetitions in one run; the command line is printed with them.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from bench.copy_limit import usage_rows
from bench.one_write_app import CREATE_TABLE as CREATE_FLOOR_TABLE
from bench.one_write_app import TABLE as FLOOR_TABLE
from bench.repeated import settle
from billing.chart import ensure_chart
from ledger.balances import account_balance
from ledger.bulk import COLUMNS
from ledger.db import make_engine, make_session_factory, run_in_transaction, unit_of_work
from ledger.model import EntryRequest, Kind, Leg
from ledger.posting import post_alone, post_entries, post_entry
from tests.pgserver import migrated_database

CUSTOMERS = 50
NOW = datetime(2026, 11, 24, tzinfo=UTC)


def usage(customer: int, micros: int = 7_500, at: datetime = NOW) -> EntryRequest:
    return EntryRequest(
        Kind.USAGE,
        f"msg-{uuid.uuid4()}",
        (Leg(f"customer:c{customer}:unbilled", "revenue:sms:USD", micros),),
        effective_at=at,
    )


def bench_batches(sessions, batches: int, size: int = 1000) -> list[float]:  # type: ignore[no-untyped-def]
    rates = []
    for batch in range(batches):
        entries = [usage((batch * size + n) % CUSTOMERS) for n in range(size)]
        started = time.perf_counter()
        with unit_of_work(sessions) as session:
            post_entries(session, entries, NOW)
        rates.append(size / (time.perf_counter() - started))
    return rates


def bench_growth(sessions, target: int, size: int = 1000) -> dict[int, float]:  # type: ignore[no-untyped-def]
    """Batch rate (median of the last 10 batches) as the table passes each power of ten."""
    with unit_of_work(sessions) as session:
        posted = session.execute(sa.text("SELECT count(*) FROM transfers")).scalar_one()
    marks = [10**k for k in range(4, 8) if posted < 10**k <= target]
    window: list[float] = []
    at_mark: dict[int, float] = {}
    while posted < target:
        window = [*window[-9:], *bench_batches(sessions, 1, size)]
        posted += size
        for mark in marks:
            if posted >= mark and mark not in at_mark:
                at_mark[mark] = statistics.median(window)
    return at_mark


def bench_singles(sessions, clients: int, total: int, alone: bool = True) -> float:  # type: ignore[no-untyped-def]
    """Entries/s posted one per transaction: by `post_alone` (one autocommitted statement), or
    with `alone=False` by `post_entry` inside a unit of work (BEGIN, the statement, COMMIT), as
    a caller that writes more in the same transaction does."""
    per_client = total // clients
    barrier = threading.Barrier(clients)

    def client(index: int) -> None:
        barrier.wait()
        for n in range(per_client):
            entry = usage((index * per_client + n) % CUSTOMERS)
            if alone:
                post_alone(sessions, entry, NOW)
            else:
                run_in_transaction(sessions, lambda s, e=entry: post_entry(s, e, NOW), attempts=10)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return clients * per_client / (time.perf_counter() - started)


def bench_floor_rounds(  # type: ignore[no-untyped-def]
    engine, sessions, rounds: int, per_round: int
) -> tuple[float, float, float, float]:
    """(alone, in a unit of work, floor, ratio alone / floor): single-entry posts both ways and
    one-row INSERT + COMMIT in alternating rounds on this database, medians over the rounds
    (the ratio the median of each round's pair)."""
    with engine.connect() as connection:
        debit_ids = list(
            connection.execute(
                sa.text("SELECT id FROM accounts WHERE code LIKE :pattern"),
                {"pattern": "customer:%:unbilled"},
            ).scalars()
        )
        revenue = connection.execute(
            sa.text("SELECT id FROM accounts WHERE code = 'revenue:sms:USD'")
        ).scalar_one()
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        # The floor's table: `transfers`' columns, indexes and checks, without its partitions,
        # its key in `transfer_keys` and its triggers (bench.one_write_app).
        cursor.execute(CREATE_FLOOR_TABLE)
        cursor.execute(
            f"PREPARE one_transfer AS INSERT INTO {FLOOR_TABLE} ({', '.join(COLUMNS)})"
            f" VALUES ({', '.join(f'${n + 1}' for n in range(len(COLUMNS)))})"
        )
        raw.commit()
        execute_one = f"EXECUTE one_transfer ({', '.join(['%s'] * len(COLUMNS))})"
        ours, in_unit, floor = [], [], []
        for round_number in range(rounds):
            rows = usage_rows(10_000_000 + round_number * per_round, per_round, debit_ids, revenue)
            started = time.perf_counter()
            for row in rows:
                cursor.execute(execute_one, row)
                raw.commit()
            floor.append(per_round / (time.perf_counter() - started))
            ours.append(bench_singles(sessions, 1, per_round))
            in_unit.append(bench_singles(sessions, 1, per_round, alone=False))
    finally:
        raw.close()
    ratios = [o / f for o, f in zip(ours, floor, strict=True)]
    return (
        statistics.median(ours),
        statistics.median(in_unit),
        statistics.median(floor),
        statistics.median(ratios),
    )


def bench_reads(sessions, repeats: int = 200) -> dict[str, float]:  # type: ignore[no-untyped-def]
    code = "customer:c0:unbilled"
    timings: dict[str, list[float]] = {"now": [], "as_of": []}
    past = NOW - timedelta(days=1)
    for _ in range(repeats):
        for label, as_of in (("now", None), ("as_of", past)):
            started = time.perf_counter()
            with unit_of_work(sessions) as session:
                account_balance(session, code, as_of)
            timings[label].append((time.perf_counter() - started) * 1000)
    return {f"{label} p50 ms": statistics.median(values) for label, values in timings.items()} | {
        f"{label} p99 ms": sorted(values)[int(len(values) * 0.99) - 1]
        for label, values in timings.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--singles", type=int, default=2000)
    parser.add_argument("--grow", type=int, default=0, help="post batches up to this many rows")
    parser.add_argument("--floor-rounds", type=int, default=5)
    args = parser.parse_args()

    with migrated_database() as (url, pg_version):
        engine = make_engine(url, pool_size=20, max_overflow=10)
        sessions = make_session_factory(engine)
        with unit_of_work(sessions) as session:
            for customer in range(CUSTOMERS):
                ensure_chart(session, f"c{customer}", "USD", NOW)

        growth = bench_growth(sessions, args.grow)
        batch_rates = bench_batches(sessions, args.batches)
        single_1 = bench_singles(sessions, 1, args.singles // 4)
        single_16 = bench_singles(sessions, 16, args.singles)
        ours, in_unit, floor, vs_floor = bench_floor_rounds(
            engine, sessions, args.floor_rounds, max(args.singles // 4, 50)
        )
        # Older history on the read account so `as_of` has a tail to subtract.
        with unit_of_work(sessions) as session:
            post_entries(session, [usage(0, at=NOW - timedelta(days=2)) for _ in range(1000)], NOW)
        # Read as production would find the table: autovacuum has set the visibility map, so
        # the tail is summed from the index alone (freshly written, every row visits the heap).
        settle(engine)
        with engine.connect() as connection:
            tail = connection.execute(
                sa.text(
                    "SELECT count(*) FROM transfers t JOIN accounts a ON a.id = t.debit_account_id"
                    " WHERE a.code = 'customer:c0:unbilled' AND t.effective_at > :past"
                ),
                {"past": NOW - timedelta(days=1)},
            ).scalar_one()
        reads = bench_reads(sessions)
        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT count(*) FROM transfers")).scalar_one()
        engine.dispose()

    command = " ".join(["python", "-m", "bench.ledger_posting", *sys.argv[1:]])
    print(f"command: {command}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python")
    print(f"  {platform.python_version()}, PostgreSQL {pg_version}")
    print(f"transfers in the table at the end: {rows}")
    print("| measure | median |")
    print("|---|---|")
    batch = statistics.median(batch_rates)
    print(f"| batch post, 1,000 entries per unit of work | {batch:,.0f} entries/s |")
    print(f"| single-entry posts, 1 client | {single_1:,.0f} posts/s |")
    print(f"| single-entry posts, 16 clients | {single_16:,.0f} posts/s |")
    print(f"| single-entry posts, 1 client, beside the floor | {ours:,.0f} posts/s |")
    print(f"| single-entry posts in a unit of work, beside the floor | {in_unit:,.0f} posts/s |")
    print(f"| one-row INSERT + COMMIT floor, same database | {floor:,.0f} rows/s |")
    print(
        f"| single-entry posts against the floor, median of {args.floor_rounds} rounds"
        f" | {vs_floor:.2f} |"
    )
    for mark, rate in growth.items():
        print(f"| batch post as `transfers` passes {mark:,} rows | {rate:,.0f} entries/s |")
    for label, value in reads.items():
        print(f"| balance read {label} | {value:.2f} |")
    print(f"`as_of` is a day back on an account with {tail:,} transfers after that instant.")


if __name__ == "__main__":
    main()

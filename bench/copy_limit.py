"""The physical limit for storing usage: `COPY` of usage-transfer rows straight into a table
shaped like `transfers` (`LIKE transfers INCLUDING ALL`: its indexes and checks; not its key
rows in `transfer_keys`, decision 0026), in batches of the
size ingestion takes, on the same throwaway PostgreSQL the tests start.

    .venv/bin/python -m bench.copy_limit [--rows 100000] [--batch 1000] [--singles 5000]
                                          [--repeat 3]

Each batch is one `COPY … FROM STDIN (FORMAT csv)` and one commit, rows shaped exactly as
ingestion writes them (ids, keys, fingerprints, metadata JSON); the cached balances are not
moved (COPY cannot), which is part of what ingestion pays for and the limit does not.
The same database then takes `--singles` rows of the same shape one per transaction (a
prepared `INSERT`, then `COMMIT`): the floor under posting one entry per transaction, which
no ledger that writes a row and commits can beat on this connection.
Figures are rows/s, medians of `--repeat` runs, each into a fresh database.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import platform
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
import uuid6

from bench.one_write_app import CREATE_TABLE as CREATE_FLOOR_TABLE
from bench.one_write_app import TABLE as FLOOR_TABLE
from bench.repeated import provision
from ledger.bulk import COLUMNS
from ledger.db import make_engine, make_session_factory, unit_of_work
from tests.pgserver import migrated_database

DAY = datetime(2026, 11, 23, tzinfo=UTC)


def usage_rows(start: int, size: int, debit_ids: list[int], revenue: int) -> list[list[Any]]:
    """`size` usage transfers in ingestion's shape, each a list in `COLUMNS` order."""
    rows = []
    for n in range(start, start + size):
        transfer = uuid6.uuid7()
        at = DAY + timedelta(seconds=n % 86400)
        metadata = {
            "user_id": f"c{n % len(debit_ids)}",
            "destination": "+447400123456",
            "country": "GB",
            "prefix": "4474",
            "segments": 1,
            "rate_id": 1,
            "unit_price": 7000,
            "priced_by": "rate",
        }
        row = {
            "id": transfer,
            "journal_id": transfer,
            "kind": "usage",
            "idempotency_key": f"copy-{n}",
            "leg": 0,
            "fingerprint": uuid.uuid4().hex,
            "debit_account_id": debit_ids[n % len(debit_ids)],
            "credit_account_id": revenue,
            "amount": 7000,
            "currency": "USD",
            "effective_at": at.isoformat(),
            "posted_at": at.isoformat(),
            "description": None,
            "metadata": json.dumps(metadata),
            "reverses_id": None,
        }
        rows.append([row[c] for c in COLUMNS])
    return rows


def batch_csv(start: int, size: int, debit_ids: list[int], revenue: int) -> io.StringIO:
    out = io.StringIO()
    writer = csv.writer(out)
    for row in usage_rows(start, size, debit_ids, revenue):
        writer.writerow(["" if cell is None else cell for cell in row])
    out.seek(0)
    return out


def limit_rates(rows: int, batch: int, customers: int, singles: int) -> tuple[float, float, str]:
    """Rows per second into a fresh database: `rows` copied in batches, then `singles` rows
    inserted one per transaction (one prepared `INSERT` and one commit each: the floor under any
    ledger that commits each posting on its own)."""
    with migrated_database() as (url, pg_version):
        engine = make_engine(url)
        with unit_of_work(make_session_factory(engine)) as session:
            revenue = provision(session, customers, DAY, "revenue:sms:USD")
            debit_ids = list(
                session.execute(
                    sa.text("SELECT id FROM accounts WHERE code LIKE :pattern"),
                    {"pattern": "customer:%:unbilled"},
                ).scalars()
            )
        statement = f"COPY {FLOOR_TABLE} ({', '.join(COLUMNS)}) FROM STDIN WITH (FORMAT csv)"
        buffers = [batch_csv(s, batch, debit_ids, revenue) for s in range(0, rows, batch)]
        one_by_one = usage_rows(rows, singles, debit_ids, revenue)
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            # The limit's table: `transfers`' columns, indexes and checks, without its
            # partitions, its key in `transfer_keys` and its triggers (bench.one_write_app).
            cursor.execute(CREATE_FLOOR_TABLE)
            started = time.perf_counter()
            for data in buffers:
                cursor.copy_expert(statement, data)
                raw.commit()
            copied = rows / (time.perf_counter() - started)
            cursor.execute(
                f"PREPARE one_transfer AS INSERT INTO {FLOOR_TABLE} ({', '.join(COLUMNS)})"
                f" VALUES ({', '.join(f'${n + 1}' for n in range(len(COLUMNS)))})"
            )
            raw.commit()
            execute_one = f"EXECUTE one_transfer ({', '.join(['%s'] * len(COLUMNS))})"
            started = time.perf_counter()
            for row in one_by_one:
                cursor.execute(execute_one, row)
                raw.commit()
            inserted = singles / (time.perf_counter() - started)
        finally:
            raw.close()
            engine.dispose()
    return copied, inserted, pg_version


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--singles", type=int, default=5_000)
    parser.add_argument("--customers", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results = [
        limit_rates(args.rows, args.batch, args.customers, args.singles) for _ in range(args.repeat)
    ]
    copied = [copy for copy, _, _ in results]
    inserted = [one for _, one, _ in results]
    print(f"command: python -m bench.copy_limit {' '.join(sys.argv[1:])}".rstrip())
    print(f"machine: {platform.machine()}, python {platform.python_version()},")
    print(f"  PostgreSQL {results[0][2]}")
    print("| measure | figure |")
    print("|---|---|")
    print(
        f"| COPY {args.rows:,} usage-transfer rows into `transfers`, batches of {args.batch:,},"
        f" median of {len(copied)} | {statistics.median(copied):,.0f} rows/s |"
    )
    print(f"| each run | {', '.join(f'{r:,.0f}' for r in copied)} rows/s |")
    print(
        f"| INSERT {args.singles:,} rows one per transaction, median of {len(inserted)}"
        f" | {statistics.median(inserted):,.0f} rows/s |"
    )
    print(
        f"| each run (one-row transactions) | {', '.join(f'{r:,.0f}' for r in inserted)} rows/s |"
    )


if __name__ == "__main__":
    main()

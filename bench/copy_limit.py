"""The physical limit for storing usage: `COPY` of usage-transfer rows straight into the
`transfers` table (its indexes, constraints and foreign keys as they are), in batches of the
size ingestion takes, on the same throwaway PostgreSQL the tests start.

    .venv/bin/python -m bench.copy_limit [--rows 100000] [--batch 1000] [--repeat 3]

Each batch is one `COPY … FROM STDIN (FORMAT csv)` and one commit, rows shaped exactly as
ingestion writes them (ids, keys, fingerprints, metadata JSON); the cached balances are not
moved (COPY cannot), which is part of what ingestion pays for and the limit does not. The
figure is rows/s, median of `--repeat` runs, each into a fresh database.
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

import sqlalchemy as sa
import uuid6

from bench.repeated import provision
from ledger.bulk import COLUMNS
from ledger.db import make_engine, make_session_factory, unit_of_work
from tests.pgserver import migrated_database

DAY = datetime(2026, 11, 23, tzinfo=UTC)


def batch_csv(start: int, size: int, debit_ids: list[int], revenue: int) -> io.StringIO:
    """`size` usage transfers in ingestion's shape, as CSV in `COLUMNS` order."""
    out = io.StringIO()
    writer = csv.writer(out)
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
        writer.writerow(["" if row[c] is None else row[c] for c in COLUMNS])
    out.seek(0)
    return out


def copy_rate(rows: int, batch: int, customers: int) -> tuple[float, str]:
    """Rows per second for `rows` copied in batches into a fresh database."""
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
        statement = f"COPY transfers ({', '.join(COLUMNS)}) FROM STDIN WITH (FORMAT csv)"
        buffers = [batch_csv(s, batch, debit_ids, revenue) for s in range(0, rows, batch)]
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            started = time.perf_counter()
            for data in buffers:
                cursor.copy_expert(statement, data)
                raw.commit()
            seconds = time.perf_counter() - started
        finally:
            raw.close()
            engine.dispose()
    return rows / seconds, pg_version


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--customers", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results = [copy_rate(args.rows, args.batch, args.customers) for _ in range(args.repeat)]
    rates = [rate for rate, _ in results]
    print(f"command: python -m bench.copy_limit {' '.join(sys.argv[1:])}".rstrip())
    print(f"machine: {platform.machine()}, python {platform.python_version()},")
    print(f"  PostgreSQL {results[0][1]}")
    print("| measure | figure |")
    print("|---|---|")
    print(
        f"| COPY {args.rows:,} usage-transfer rows into `transfers`, batches of {args.batch:,},"
        f" median of {len(rates)} | {statistics.median(rates):,.0f} rows/s |"
    )
    print(f"| each run | {', '.join(f'{r:,.0f}' for r in rates)} rows/s |")


if __name__ == "__main__":
    main()

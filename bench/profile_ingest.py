"""Where a single usage post spends its time: `ingest_usage` for one event per unit of work
(what the group committer runs when posts do not overlap), profiled with pyinstrument on the
benchmarks' throwaway PostgreSQL.

    .venv/bin/python -m bench.profile_ingest [--posts 600]
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from pathlib import Path

from pyinstrument import Profiler

from billing.settings import BillingDefaults
from billing.usage.ingestion import ingest_usage, validate_events
from billing.usage.rate_sheets import add_rates, parse_sheet
from ledger.db import make_engine, make_session_factory, run_in_transaction, unit_of_work
from tests.pgserver import migrated_database

RATES = Path(__file__).resolve().parents[1] / "examples" / "rates.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--posts", type=int, default=600)
    args = parser.parse_args()
    defaults = BillingDefaults()
    with migrated_database() as (url, _):
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        with unit_of_work(sessions) as session:
            add_rates(session, parse_sheet(RATES.read_text()), datetime(2026, 1, 1, tzinfo=UTC))

        def post(n: int) -> None:
            event = {
                "message_id": f"m{n}",
                "user_id": f"c{n % 50}",
                "destination": "+447400123456",
                "segments": 1,
            }
            events = validate_events([event])
            run_in_transaction(
                sessions, lambda s: ingest_usage(s, events, datetime.now(UTC), defaults)
            )

        for n in range(100):  # customers provisioned, caches warm
            post(1_000_000 + n)
        profiler = Profiler(interval=0.0002)
        profiler.start()
        started = time.perf_counter()
        for n in range(args.posts):
            post(n)
        seconds = time.perf_counter() - started
        profiler.stop()
        engine.dispose()
    print(f"{args.posts / seconds:,.0f} single posts/s, {seconds / args.posts * 1000:.2f} ms each")
    print(profiler.output_text(unicode=False, color=False))


if __name__ == "__main__":
    main()

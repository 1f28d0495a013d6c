"""django-hordak beside smsledger, in one run (issue 8): the same number of two-leg postings
through each ledger's own API, one per transaction and in batches of 1,000, on one throwaway
PostgreSQL.

    .venv/bin/python -m bench.peer.vs_hordak [--postings 5000] [--batch 1000]

django-hordak is installed from PyPI into its own environment (`var/bench/hordak-venv`, made on
first use: Django 5.1, django-hordak 2.0.0, psycopg2-binary) and runs `hordak_child.py` there;
smsledger posts the same entries through `ledger.posting` here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import venv
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from bench.repeated import provision
from ledger.db import make_engine, make_session_factory, unit_of_work
from ledger.model import EntryRequest, Kind, Leg
from ledger.posting import post_alone, post_entries
from tests.pgserver import PostgresServer

HERE = Path(__file__).resolve().parent
VENV = HERE.parents[1] / "var" / "bench" / "hordak-venv"
REQUIREMENTS = ("django-hordak==2.0.0", "Django>=4.2,<5.2", "psycopg2-binary>=2.9")


def hordak_python() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        venv.create(VENV, with_pip=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *REQUIREMENTS], check=True)
    return python


def smsledger_rates(url: str, total: int, batch: int) -> dict[str, float]:
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    with unit_of_work(sessions) as session:
        provision(session, 1, datetime.now(UTC), "revenue:sms:USD")

    def entry(n: int) -> EntryRequest:
        leg = Leg("customer:c0:unbilled", "revenue:sms:USD", 7_500)
        return EntryRequest(Kind.USAGE, f"peer-{n}", (leg,))

    started = time.perf_counter()
    for n in range(total):
        post_alone(sessions, entry(n), datetime.now(UTC))
    singles = total / (time.perf_counter() - started)
    started = time.perf_counter()
    for first in range(total, 2 * total, batch):
        with unit_of_work(sessions) as session:
            post_entries(
                session, [entry(n) for n in range(first, first + batch)], datetime.now(UTC)
            )
    batched = total / (time.perf_counter() - started)
    engine.dispose()
    return {"singles_per_s": singles, "batched_per_s": batched}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--postings", type=int, default=5_000)
    parser.add_argument("--batch", type=int, default=1_000)
    args = parser.parse_args()
    python = hordak_python()
    server = PostgresServer()
    admin_url = server.start()
    try:
        admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.exec_driver_sql("CREATE DATABASE hordak")
            connection.exec_driver_sql("CREATE DATABASE smsledger")
            version = connection.execute(sa.text("SHOW server_version")).scalar_one()
        admin.dispose()
        import migrations

        migrations.upgrade(server.url("smsledger"))
        ours = smsledger_rates(server.url("smsledger"), args.postings, args.batch)
        command = [str(python), str(HERE / "hordak_child.py"), server.url("hordak")]
        command += [str(args.postings), str(args.batch)]
        # Its own environment only: nothing of smsledger's on the path.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        child = subprocess.run(command, capture_output=True, text=True, env=env)
        if child.returncode != 0:
            sys.exit(f"django-hordak's run failed:\n{child.stderr[-3000:]}")
        theirs = json.loads(child.stdout.strip().splitlines()[-1])
    finally:
        server.stop()
    print(f"command: python -m bench.peer.vs_hordak {' '.join(sys.argv[1:])}".rstrip())
    print(f"machine: {platform.machine()}, python {platform.python_version()},")
    print(f"  PostgreSQL {version}")
    peer = ", ".join(f"{name} {number}" for name, number in theirs["versions"].items())
    print(f"peer: {peer} (its own environment, from PyPI)")
    print(f"| postings | smsledger | django-hordak {theirs['versions']['django-hordak']} | ratio |")
    print("|---|---|---|---|")
    kinds = (
        ("singles_per_s", "one per transaction"),
        ("batched_per_s", f"batches of {args.batch:,}"),
    )
    for key, label in kinds:
        ratio = ours[key] / theirs[key]
        print(
            f"| {args.postings:,} {label} | {ours[key]:,.0f}/s | {theirs[key]:,.0f}/s"
            f" | {ratio:.1f} times |"
        )


if __name__ == "__main__":
    main()

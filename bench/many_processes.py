"""Many processes, one system (docs/deploy.md): two API processes, two RQ workers and the
scheduler against a primary reached through PgBouncer (transaction mode) and a streaming
replica, with ingestion, closes, charges and reports at once; every invariant checked after.

    .venv/bin/python -m bench.many_processes [--seconds 90] [--customers 200] [--batch 50]
                                             [--posters 4] [--readers 2]

Everything is real and on this machine: PostgreSQL 15 (the primary, and a replica made by
`pg_basebackup`), Debian's pgbouncer, redis-server, the Sippy simulator over XML-RPC, and
`smsledger serve` (two), `smsledger worker` (two) and `smsledger scheduler` as subprocesses.
Half the customers bill daily (yesterday's usage, closed by `POST /api/cron/process-sms-billing`
in the middle of the run), half on a threshold of 200 messages (closed by the scheduler's
threshold job every minute while usage arrives); every invoice is charged by the workers in
Sippy. Posters send batches of `--batch` events to the two APIs in turn; readers ask for
billing statistics, the billing list, a trial balance `as_of` an hour back and an account's
transfers, which read the replica while it is in time.

At the end, once no charge is left open: `ledger check`, every customer's billing state
against its ledger (DESIGN invariant 10), every paid invoice debited in Sippy exactly once
for its amount and no other invoice debited, every accepted message posted exactly once, no
answer 500, and the transactions PgBouncer pooled.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import random
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa

import migrations
from billing.access.api_keys import create_key
from billing.customers import provision_customers, update_customer
from billing.payments.charging import OPEN_ATTEMPTS
from billing.tables import invoices, payment_attempts
from billing.usage.rate_sheets import add_rates, parse_sheet
from ledger.checks import check_ledger
from ledger.db import make_engine, make_session_factory, unit_of_work
from ledger.tables import transfers
from sippy_simulator.server import start_simulator
from tests.pgbouncer import PgBouncer
from tests.pgserver import PostgresServer, _free_port
from tests.processes import Launcher, smsledger_env, wait_until
from tests.redisserver import RedisServer
from tests.scenarios import SAMPLE_RATES, billing_disagreements, debits_for

THRESHOLD_MESSAGES = 200
CRON_SECRET = "bench-cron-secret"


class Api:
    """The two API processes' base URLs, taken in turn; every answer's status counted."""

    def __init__(self, bases: list[str], keys: dict[str, str]) -> None:
        self.bases = itertools.cycle(bases)
        self.keys = keys
        self.statuses: Counter[int] = Counter()
        self.lock = threading.Lock()

    def call(
        self, method: str, path: str, role: str, body: Any = None, base: str | None = None
    ) -> tuple[int, Any, float]:
        with self.lock:
            target = base or next(self.bases)
        token = CRON_SECRET if role == "cron" else self.keys[role]
        request = urllib.request.Request(
            target + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, text = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, text = error.code, error.read()
        took = time.perf_counter() - started
        with self.lock:
            self.statuses[status] += 1
        return status, json.loads(text) if text else None, took


def _accounts(customers: int) -> list[dict[str, Any]]:
    return [
        {
            "i_account": 5000 + n,
            "username": f"bench{n}",
            "currency": "USD",
            "balance": "1000000.00",
            "credit_limit": "0",
        }
        for n in range(customers)
    ]


class System:
    """Every part started (`with System(args) as system:`), stopped by PID in reverse."""

    def __init__(self, customers: int, keep_logs: bool) -> None:
        self.customers, self.keep_logs = customers, keep_logs
        self.primary, self.replica, self.redis = PostgresServer(), PostgresServer(), RedisServer()
        self.pooler: PgBouncer | None = None
        self.launch = Launcher(Path(tempfile.mkdtemp(prefix="smsledger-many-")))
        self.sim = start_simulator(accounts=_accounts(customers))
        self.users = [f"b{n}" for n in range(customers)]

    def __enter__(self) -> System:
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self) -> None:
        admin = sa.create_engine(self.primary.start(), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.exec_driver_sql("CREATE DATABASE smsledger")
            self.version = str(connection.execute(sa.text("SHOW server_version")).scalar_one())
        admin.dispose()
        direct_url = self.primary.url("smsledger")
        migrations.upgrade(direct_url)
        self.engine = make_engine(direct_url)
        self.sessions = make_session_factory(self.engine)
        keys = self._provision(datetime.now(UTC))
        self.replica.start_as_replica_of(self.primary)
        self.pooler = PgBouncer(self.primary, pool_size=8)
        self.pooler.start()
        env = smsledger_env(
            direct_url.replace(f":{self.primary.port}/", f":{self.pooler.port}/"),
            self.redis.start(),
            self.sim,
            DATABASE_REPLICA_URL=self.replica.url("smsledger"),
            CRON_SECRET=CRON_SECRET,
            SECRET_KEY="bench-cookie-signing-key-of-some-length",
        )
        ports = [_free_port(), _free_port()]
        for index, port in enumerate(ports):
            self.launch(f"api-{index + 1}", "serve", "--port", str(port), "--threads", "8", **env)
        for index in range(2):
            self.launch(f"worker-{index + 1}", "worker", **env)
        self.launch("scheduler", "scheduler", **env)
        self.bases = [f"http://127.0.0.1:{port}" for port in ports]
        for index, base in enumerate(self.bases):
            if not wait_until(lambda b=base: _ready(b), 60, 0.2):
                raise RuntimeError(f"{base}: {self.launch.log(f'api-{index + 1}')[-2000:]}")
        self.api = Api(self.bases, keys)
        self.threshold_users = set(self.users[1::2])
        for user in sorted(self.threshold_users):
            settings = {"userId": user, "frequency": "threshold"}
            status, answer, _ = self.api.call(
                "PUT",
                "/api/admin/sms/billing-settings",
                "admin",
                {**settings, "threshold_messages": THRESHOLD_MESSAGES},
            )
            if status != 200:
                raise RuntimeError(f"settings refused: {status} {answer}")

    def _provision(self, now: datetime) -> dict[str, str]:
        """Rates, the customers with their Sippy accounts, a key per role."""
        with unit_of_work(self.sessions) as session:
            add_rates(session, parse_sheet(SAMPLE_RATES.read_text()), now - timedelta(days=30))
            provision_customers(session, self.users, "USD", now - timedelta(days=3))
            for n, user in enumerate(self.users):
                update_customer(session, user, now, sippy_account_id=str(5000 + n))
            return {
                role: create_key(session, role, f"bench {role}", now)[0]
                for role in ("service", "admin", "accountant")
            }

    def __exit__(self, *_exc: object) -> None:
        if self.keep_logs:
            self.launch.stop_all()
        else:
            _quiet_stop(self.launch)
        self.sim.stop()
        if self.pooler is not None:
            self.pooler.stop()
        if hasattr(self, "engine"):
            self.engine.dispose()
        self.redis.stop()
        self.replica.stop()
        self.primary.stop()


class Load:
    """Posters and readers on threads until `stop`; what they sent and how long it took."""

    def __init__(self, system: System, batch: int) -> None:
        self.system, self.batch = system, batch
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.accepted: list[str] = []
        self.post_times: list[float] = []
        self.read_times: list[float] = []
        self.replica_samples: list[tuple[float, float | None]] = []
        self.numbers = itertools.count()
        now = datetime.now(UTC)
        self.yesterday = (now - timedelta(days=1)).replace(hour=0, minute=0, second=0)

    def _event(self, chooser: random.Random) -> dict[str, Any]:
        user = chooser.choice(self.system.users)
        sent = (
            datetime.now(UTC) - timedelta(seconds=chooser.randrange(60))
            if user in self.system.threshold_users
            else self.yesterday + timedelta(seconds=chooser.randrange(86_400))
        )
        return {
            "message_id": f"bench-{next(self.numbers)}",
            "user_id": user,
            "destination": "+447400123456",
            "segments": 1,
            "sent_at": sent.isoformat(),
        }

    def poster(self, index: int) -> None:
        chooser = random.Random(index)
        while not self.stop.is_set():
            events = [self._event(chooser) for _ in range(self.batch)]
            body = {"events": events}
            status, _answer, took = self.system.api.call("POST", "/api/usage", "service", body)
            with self.lock:
                self.post_times.append(took)
                if status in (200, 201):
                    self.accepted.extend(event["message_id"] for event in events)

    def watcher(self) -> None:
        """Every 2 s while the load runs: whether reports read the replica, and its lag."""
        while not self.stop.wait(2.0):
            base = self.system.bases[0]
            serving = _metric(base, "smsledger_replica_serving_reports")
            lag = _metric(base, "smsledger_replica_lag_seconds")
            with self.lock:
                self.replica_samples.append((serving or 0.0, lag))

    def reader(self, index: int) -> None:
        chooser = random.Random(100 + index)
        while not self.stop.is_set():
            as_of = urllib.parse.quote((datetime.now(UTC) - timedelta(hours=1)).isoformat())
            user = chooser.choice(self.system.users)
            path, role = chooser.choice(
                [
                    ("/api/admin/sms/billing-stats", "admin"),
                    ("/api/admin/sms/billing?limit=50", "admin"),
                    (f"/api/ledger/trial-balance?as_of={as_of}", "accountant"),
                    (f"/api/ledger/accounts/customer:{user}:unbilled/transfers", "accountant"),
                ]
            )
            _status, _answer, took = self.system.api.call("GET", path, role)
            with self.lock:
                self.read_times.append(took)


def close_now(system: System, frequency: str) -> dict[str, Any]:
    status, summary, took = system.api.call(
        "POST", f"/api/cron/process-sms-billing?type={frequency}", "cron"
    )
    return {"status": status, "seconds": took, "type": frequency, **(summary or {})}


def run_load(system: System, args: argparse.Namespace) -> tuple[Load, list[dict[str, Any]], float]:
    """The load for `args.seconds`, the daily close through the API half way; the load, the
    closes asked for (with the threshold close after the load) and the load's seconds."""
    load = Load(system, args.batch)
    threads = [threading.Thread(target=load.poster, args=(i,)) for i in range(args.posters)]
    threads += [threading.Thread(target=load.reader, args=(i,)) for i in range(args.readers)]
    threads.append(threading.Thread(target=load.watcher))
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(args.seconds / 2)
    closes = [close_now(system, "daily")]
    time.sleep(args.seconds / 2)
    load.stop.set()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    # the threshold customers' usage since the scheduler's last threshold run
    closes.append(close_now(system, "threshold"))
    return load, closes, seconds


def check(system: System, load: Load) -> tuple[list[str], Counter[str]]:
    """Every invariant's breaches (none: all hold), and the invoices by status."""
    with unit_of_work(system.sessions, commit=False) as session:
        problems = [str(p) for p in check_ledger(session)]
        for user in system.users:
            problems += [f"{user}: {p}" for p in billing_disagreements(session, user)]
        rows = session.execute(
            sa.select(invoices.c.id, invoices.c.status, invoices.c.amount_micros)
        ).all()
        usage = sa.select(transfers.c.idempotency_key).where(transfers.c.kind == "usage")
        keys = list(session.execute(usage).scalars())
    for invoice_id, status, amount in rows:
        charged = [Decimal(d["amount"]) * 1_000_000 for d in debits_for(system.sim, invoice_id)]
        if charged != ([amount] if status == "paid" else []):
            problems.append(f"{status} invoice {invoice_id} of {amount} debited {charged}")
    if set(load.accepted) - set(keys):
        problems.append(f"{len(set(load.accepted) - set(keys))} accepted messages not posted")
    if len(keys) != len(set(keys)):
        problems.append(f"{len(keys)} usage transfers for {len(set(keys))} messages")
    if system.api.statuses[500]:
        problems.append(f"{system.api.statuses[500]} answers 500")
    return problems, Counter(status for _, status, _ in rows)


def _replica_share(load: Load) -> str:
    samples = load.replica_samples
    on_replica = sum(1 for serving, _lag in samples if serving == 1.0)
    lags = sorted(lag for _serving, lag in samples if lag is not None)
    median = f"{lags[len(lags) // 2]:.2f}" if lags else "?"
    worst = f"{lags[-1]:.2f}" if lags else "?"
    return f"{on_replica} of {len(samples)} samples; lag median {median} s, max {worst} s"


def _ms(values: list[float], quantile: float) -> str:
    ordered = sorted(values) or [0.0]
    return f"{ordered[min(len(ordered) - 1, int(quantile * len(ordered)))] * 1000:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=90)
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--posters", type=int, default=4)
    parser.add_argument("--readers", type=int, default=2)
    parser.add_argument("--keep-logs", action="store_true", help="print each process's log")
    args = parser.parse_args()

    with System(args.customers, args.keep_logs) as system:
        load, closes, seconds = run_load(system, args)
        started = time.perf_counter()
        drained = wait_until(lambda: _open_charges(system.sessions) == 0, 180, 0.5)
        drain_seconds = time.perf_counter() - started
        problems, by_status = check(system, load)
        serving = _metric(system.bases[0], "smsledger_replica_serving_reports")
        lag = _metric(system.bases[0], "smsledger_replica_lag_seconds")
        assert system.pooler is not None
        pooled = system.pooler.transactions().get("smsledger", 0)
        statuses = dict(sorted(system.api.statuses.items()))
        version = system.version

    posts, reads, accepted = load.post_times, load.read_times, len(load.accepted)
    rows = [
        (
            "load",
            f"{seconds:.0f} s, {args.posters} posters ({args.batch} events a batch),"
            f" {args.readers} readers",
        ),
        (
            "usage accepted",
            f"{accepted:,} messages, {accepted / seconds:,.0f}/s",
        ),
        ("usage post (one batch), p50 / p99", f"{_ms(posts, 0.5)} / {_ms(posts, 0.99)} ms"),
        ("reports, p50 / p99", f"{len(reads):,}, {_ms(reads, 0.5)} / {_ms(reads, 0.99)} ms"),
        *(
            (
                f"{c['type']} close through the API",
                f"{c['seconds']:.2f} s, HTTP {c['status']},"
                f" {c.get('invoices_created', '?')} invoices",
            )
            for c in closes
        ),
        ("invoices at the end", str(dict(by_status))),
        ("charges drained after the load", f"{'yes' if drained else 'NO'}, {drain_seconds:.0f} s"),
        ("reports read on the replica, sampled every 2 s of the load", _replica_share(load)),
        ("the same at the end", f"{serving} (lag {lag} s)"),
        ("transactions pooled by pgbouncer", f"{pooled:,}"),
        ("answers by status", str(statuses)),
        ("invariants", "all hold" if not problems else "; ".join(problems[:5])),
    ]
    print(f"command: python -m bench.many_processes {' '.join(sys.argv[1:])}".rstrip())
    print(f"machine: {platform.machine()}, python {platform.python_version()},")
    print(f"  PostgreSQL {version}")
    print(
        "processes: smsledger serve x2 (waitress, 8 threads each), worker x2, scheduler;"
        " pgbouncer (transaction mode, pool 8) before the primary; a streaming replica; redis;"
        " the Sippy simulator"
    )
    print("| measure | figure |")
    print("|---|---|")
    for label, figure in rows:
        print(f"| {label} | {figure} |")
    if problems:
        sys.exit(1)


def _ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/readyz", timeout=5) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError:
        return False


def _open_charges(sessions: Any) -> int:
    """Invoices not settled yet that a worker will still act on, and attempts in flight."""
    with unit_of_work(sessions, commit=False) as session:
        waiting = session.execute(
            sa.select(sa.func.count()).where(invoices.c.status.in_(("pending", "processing")))
        ).scalar_one()
        open_attempts = session.execute(
            sa.select(sa.func.count()).where(payment_attempts.c.status.in_(OPEN_ATTEMPTS))
        ).scalar_one()
    return int(waiting) + int(open_attempts)


def _metric(base: str, name: str) -> float | None:
    with urllib.request.urlopen(base + "/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


def _quiet_stop(launch: Launcher) -> None:
    for process, _log in launch.started:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except Exception:
                process.kill()


if __name__ == "__main__":
    main()

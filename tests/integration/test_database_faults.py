"""PostgreSQL restarted under load: real gunicorn, real clients, a real `pg_ctl restart`.

Clients post single SMS (group-committed) and retry a 503 with the same `message_id`, the way
SPEC §7 asks clients to. While the database is away the API answers `503 database_unavailable`
with `Retry-After`, never a 500; once it is back the pool reconnects by itself; and every message
is in the ledger exactly once, whatever was lost mid-commit, with the ledger's invariants intact.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

import migrations
from billing.access.api_keys import create_key
from ledger.checks import check_ledger
from ledger.db import make_engine, make_session_factory, unit_of_work
from ledger.tables import transfers
from tests.conftest import NOW
from tests.pgserver import PostgresServer
from tests.scenarios import load_rates

pytestmark = [pytest.mark.faults, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = 8
RESTARTS = 3  # a fast restart is down for ~0.2 s: three make meeting it certain
LOAD_SECONDS = 1.5  # load before the first restart, between restarts and after the last
RETRY_PAUSE = 0.1  # shorter than Retry-After (1 s), to keep the test short
GIVE_UP_SECONDS = 30.0  # one message still refused after this long is a failure


@dataclass
class Deployment:
    server: PostgresServer
    url: str
    base: str
    key: str


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def deployment() -> Iterator[Deployment]:
    """A PostgreSQL cluster of this test's own (it gets restarted), a migrated database with
    rates and a service key, and gunicorn serving `wsgi:app` on it; gunicorn is stopped by its
    PID and the cluster removed afterwards."""
    server = PostgresServer()
    admin_url = server.start()
    gunicorn: subprocess.Popen[bytes] | None = None
    try:
        admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.exec_driver_sql("CREATE DATABASE faults")
        admin.dispose()
        url = server.url("faults")
        migrations.upgrade(url)
        engine = make_engine(url)
        sessions = load_rates(make_session_factory(engine), NOW)
        with unit_of_work(sessions) as session:
            key, _ = create_key(session, "service", "fault test", NOW)
        engine.dispose()

        port = _free_port()
        gunicorn = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "gunicorn"),
                *"-w 2 -k gthread --threads 8".split(),
                "-b",
                f"127.0.0.1:{port}",
                "--log-level",
                "warning",
                "wsgi:app",
            ],
            cwd=ROOT,
            env={**os.environ, "DATABASE_URL": url, "LOG_FORMAT": "json"},
        )
        base = f"http://127.0.0.1:{port}"
        _wait_until_up(base, gunicorn)
        yield Deployment(server, url, base, key)
    finally:
        if gunicorn is not None:
            os.kill(gunicorn.pid, 15)  # SIGTERM: gunicorn's graceful stop
            try:
                gunicorn.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(gunicorn.pid, 9)
                gunicorn.wait(timeout=5)
        server.stop()


def _wait_until_up(base: str, gunicorn: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert gunicorn.poll() is None, "gunicorn exited while starting"
        try:
            if requests.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise AssertionError("gunicorn did not become ready")


@dataclass
class Tally:
    """What the clients saw, shared by their threads."""

    statuses: Counter[int] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    retry_after: set[str | None] = field(default_factory=set)
    posted: set[str] = field(default_factory=set)
    transport_errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _client(index: int, deployment: Deployment, stop: threading.Event, tally: Tally) -> None:
    """Post one SMS after another; a 503 (or a dropped connection) is retried with the same
    message_id until it is answered 200 or 201."""
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {deployment.key}"
    number = 0
    while not stop.is_set():
        number += 1
        message_id = f"c{index}-{number}"
        event = {
            "message_id": message_id,
            "user_id": f"u{index % 3}",
            "destination": "+447400123456",
            "segments": 1,
        }
        deadline = time.monotonic() + GIVE_UP_SECONDS
        while time.monotonic() < deadline:
            try:
                answer = http.post(f"{deployment.base}/api/usage", json=event, timeout=30)
            except requests.RequestException:
                with tally.lock:
                    tally.transport_errors += 1
                time.sleep(RETRY_PAUSE)
                continue
            with tally.lock:
                tally.statuses[answer.status_code] += 1
                if answer.status_code >= 400:
                    tally.codes[answer.json()["error"]["code"]] += 1
                if answer.status_code == 503:
                    tally.retry_after.add(answer.headers.get("Retry-After"))
            if answer.status_code in (200, 201):
                with tally.lock:
                    tally.posted.add(message_id)
                break
            if answer.status_code != 503:
                return  # anything else is a failure the assertions report
            time.sleep(RETRY_PAUSE)


def _usage_in_ledger(url: str) -> tuple[int, int, list[object]]:
    """Usage transfers, distinct message ids among them, and the ledger check's problems."""
    engine = make_engine(url)
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            count, distinct = session.execute(
                sa.select(
                    sa.func.count(), sa.func.count(sa.distinct(transfers.c.idempotency_key))
                ).where(transfers.c.kind == "usage")
            ).one()
            return int(count), int(distinct), list(check_ledger(session))
    finally:
        engine.dispose()


def test_a_postgres_restart_under_load_answers_503_never_500_and_loses_nothing(
    deployment: Deployment,
) -> None:
    tally, stop = Tally(), threading.Event()
    clients = [
        threading.Thread(target=_client, args=(i, deployment, stop, tally), daemon=True)
        for i in range(CLIENTS)
    ]
    started = time.monotonic()
    for client in clients:
        client.start()
    restart_seconds = []
    for _ in range(RESTARTS):
        time.sleep(LOAD_SECONDS)
        restart_began = time.monotonic()
        deployment.server.restart()
        restart_seconds.append(round(time.monotonic() - restart_began, 2))
    time.sleep(LOAD_SECONDS)
    stop.set()
    for client in clients:
        client.join(timeout=GIVE_UP_SECONDS + 10)
    duration = time.monotonic() - started

    count, distinct, problems = _usage_in_ledger(deployment.url)
    requests_sent = sum(tally.statuses.values())
    print(
        f"\nrequests={requests_sent} statuses={dict(tally.statuses)} codes={dict(tally.codes)} "
        f"transport_errors={tally.transport_errors} messages={len(tally.posted)} "
        f"restarts={restart_seconds}s duration={duration:.1f}s"
    )
    assert not [c for c in clients if c.is_alive()], "a client is still retrying"
    assert tally.statuses[500] == 0
    assert set(tally.statuses) <= {200, 201, 503}, tally.statuses
    assert tally.statuses[503] > 0, "no request met the outage"
    assert set(tally.codes) == {"database_unavailable"}, tally.codes
    assert tally.retry_after == {"1"}
    assert tally.transport_errors == 0
    assert (count, distinct) == (len(tally.posted), len(tally.posted))
    assert problems == []
    after = requests.get(f"{deployment.base}/readyz", timeout=5)
    assert after.status_code == 200

"""The embedded default (SQLite) runs the same migrations and keeps the same rules; and the
README's run command really serves the API on a fresh directory."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from billing.chart import ensure_chart
from infra.config import Config
from ledger import db
from ledger.balances import account_balance, trial_balance
from ledger.checks import check_ledger
from ledger.db import make_engine, make_session_factory, unit_of_work
from ledger.errors import BalanceLimitExceeded, IdempotencyConflict, ImmutableTransfer
from ledger.model import EntryRequest, Kind, Leg
from ledger.posting import post_entries, post_entry, reverse_transfer
from sippy_simulator.server import SimulatorHandle
from tests.client import ApiClient
from tests.conftest import NOW
from tests.scenarios import SAMPLE_RATES, sms


def usage(key: str, micros: int = 7_500) -> EntryRequest:
    return EntryRequest(Kind.USAGE, key, (Leg("customer:42:unbilled", "revenue:sms:USD", micros),))


def test_the_ledger_keeps_its_rules_on_sqlite(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    sessions = make_session_factory(engine)
    with unit_of_work(sessions) as session:
        ensure_chart(session, "42", "USD", NOW)
        results = post_entries(session, [usage("m1"), usage("m2"), usage("m1")], NOW)
    assert [r.status for r in results] == ["posted", "posted", "duplicate"]
    with pytest.raises(IdempotencyConflict), unit_of_work(sessions) as session:
        post_entry(session, usage("m1", micros=1), NOW)
    with pytest.raises(BalanceLimitExceeded), unit_of_work(sessions) as session:
        invoice = EntryRequest(
            Kind.INVOICE, "i1", (Leg("customer:42:receivable", "customer:42:unbilled", 15_001),)
        )
        post_entry(session, invoice, NOW)
    with unit_of_work(sessions) as session:
        reverse_transfer(session, results[0].transfers[0].id, "r1", NOW)
    with pytest.raises(ImmutableTransfer), unit_of_work(sessions) as session:
        session.execute(sa.text("UPDATE transfers SET amount = 1"))
    with pytest.raises(ImmutableTransfer), unit_of_work(sessions) as session:
        session.execute(sa.text("DELETE FROM transfers"))
    with unit_of_work(sessions) as session:
        assert account_balance(session, "customer:42:unbilled").balance == 7_500
        assert account_balance(session, "customer:42:unbilled", NOW).as_of == NOW
        assert all(t.balanced for t in trial_balance(session).currencies.values())
        assert check_ledger(session) == []
    engine.dispose()


def test_raw_sql_breaking_a_rule_is_refused_by_name_on_sqlite(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    sessions = make_session_factory(engine)
    with unit_of_work(sessions) as session:
        ensure_chart(session, "42", "USD", NOW)
    with pytest.raises(sa.exc.DBAPIError) as raised, sessions() as session:
        session.execute(
            sa.text(
                "UPDATE balances SET credits = 1 WHERE account_id = (SELECT id FROM accounts"
                " WHERE code = 'customer:42:unbilled')"
            )
        )
    assert db.constraint_name(raised.value) == "ck_balances_credits_within_debits"
    engine.dispose()


def test_the_api_answers_on_sqlite(make_api: Callable[..., ApiClient], sqlite_url: str) -> None:
    api = make_api(Config(database_url=sqlite_url))
    with unit_of_work(api.sessions) as session:
        ensure_chart(session, "42", "USD", NOW)
    admin = api.as_role("admin")
    entry = {
        "idempotency_key": "adj-1",
        "kind": "adjustment",
        "transfers": [
            {
                "debit_account": "adjustments:USD",
                "credit_account": "customer:42:receivable",
                "amount": "1.50",
            }
        ],
    }
    assert admin.post("/api/ledger/transfers", entry).status_code == 201
    assert admin.post("/api/ledger/transfers", entry).status_code == 200
    trial = admin.get("/api/ledger/trial-balance").json
    assert trial["currencies"]["USD"] == {"debits": "1.50", "credits": "1.50", "balanced": True}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_smsledger_serve_runs_the_api_and_pages_on_a_fresh_directory(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    command = [str(Path(sys.executable).parent / "smsledger"), "serve", "--port", str(port)]
    server = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        key = None
        deadline = time.monotonic() + 30
        while key is None and time.monotonic() < deadline:
            line = server.stdout.readline()  # type: ignore[union-attr]
            found = re.search(r"(sk_\S+)", line)
            key = found.group(1) if found else None
        assert key, "serve did not print the first admin key"
        base = f"http://127.0.0.1:{port}"
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
        headers = {"Authorization": f"Bearer {key}"}
        trial = requests.get(f"{base}/api/ledger/trial-balance", headers=headers, timeout=5)
        assert trial.status_code == 200 and trial.json()["currencies"] == {}
        assert (tmp_path / "var" / "smsledger.db").exists()
        browser = requests.Session()  # the pages, as a browser without JavaScript uses them
        form = browser.get(f"{base}/admin/sms", timeout=5).text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)
        assert csrf is not None
        signed = browser.post(
            f"{base}/admin/sms/sign-in", data={"api_key": key, "csrf_token": csrf.group(1)}
        )
        assert signed.status_code == 200 and "Billing records" in signed.text
        secret = tmp_path / "var" / "secret_key"
        assert secret.stat().st_mode & 0o777 == 0o600
    finally:
        server.terminate()
        server.wait(timeout=10)
        server.stdout.close()  # type: ignore[union-attr]


def test_usage_and_the_check_work_on_sqlite(
    make_api: Callable[..., ApiClient], sqlite_url: str
) -> None:
    api = make_api(Config(database_url=sqlite_url))
    runner = api.app.test_cli_runner()
    assert runner.invoke(args=["rates", "import", str(SAMPLE_RATES)]).exit_code == 0
    service = api.as_role("service")
    event = {"message_id": "m1", "user_id": "42", "destination": "+447400123456", "segments": 1}
    batch = {"events": [event, {**event, "message_id": "m2", "destination": "+12025550123"}]}
    assert service.post("/api/usage", batch).status_code == 201
    assert service.post("/api/usage", event).status_code == 200
    check = service.post("/api/usage/check", {"user_id": "42", "message_count": 1}).json
    assert check["allowed"] is True and check["unbilled"] == "0.013"
    reserving = {"user_id": "42", "destination": "+447400123456", "reserve": True}
    held = service.post("/api/usage/check", {**reserving, "message_id": "m3"}).json
    assert held["hold"]["status"] == "held" and held["held"] == "0.007"
    assert service.post("/api/usage", {**event, "message_id": "m3"}).status_code == 201
    after = service.post("/api/usage/check", {"user_id": "42"}).json
    assert (after["unbilled"], after["held"]) == ("0.02", "0.00")  # captured by its post
    service.post("/api/usage/check", {**reserving, "message_id": "m4"})
    assert service.delete("/api/usage/holds/m4").status_code == 200


def test_cli_commands_work_on_a_fresh_directory(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    smsledger = str(Path(sys.executable).parent / "smsledger")
    imported = subprocess.run(
        [smsledger, "rates", "import", str(SAMPLE_RATES)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert imported.returncode == 0, imported.stderr
    assert "rates added: 19" in imported.stdout
    key = subprocess.run(
        [smsledger, "keys", "create", "--role", "service"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert key.returncode == 0 and key.stdout.strip().startswith("sk_")
    assert len(key.stdout.strip().splitlines()) == 1  # only the key on stdout
    check = subprocess.run(
        [smsledger, "ledger", "check"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert check.returncode == 0 and "ledger ok" in check.stdout


def test_a_daily_close_works_on_sqlite(sqlite_url: str) -> None:
    from datetime import UTC, datetime

    from billing.invoicing.closing import close_periods
    from billing.settings import BillingDefaults
    from billing.tables import invoice_lines, invoices
    from billing.usage.ingestion import ingest_usage, validate_events
    from billing.usage.rate_sheets import add_rates, parse_sheet

    engine = make_engine(sqlite_url)
    sessions = make_session_factory(engine)
    posted_at = datetime(2026, 11, 24, 1, tzinfo=UTC)
    events = validate_events([sms(f"m{n}", f"2026-11-23T1{n}:00:00Z") for n in range(3)])
    with unit_of_work(sessions) as session:
        add_rates(session, parse_sheet(SAMPLE_RATES.read_text()), posted_at)
        ingest_usage(session, events, posted_at, BillingDefaults())
    with unit_of_work(sessions) as session:
        summary = close_periods(
            session, "daily", datetime(2026, 11, 24, 2, tzinfo=UTC), BillingDefaults()
        )
    assert summary.invoices_created == 1
    with unit_of_work(sessions) as session:
        (invoice,) = session.execute(sa.select(invoices)).all()
        assert (invoice.usage_micros, invoice.amount_micros) == (21_000, 20_000)
        assert session.execute(sa.select(invoice_lines.c.messages)).scalar_one() == 3
        assert account_balance(session, "customer:42:unbilled").balance == 0
        assert check_ledger(session) == []
    engine.dispose()


def test_the_embedded_scheduler_closes_and_charges_on_sqlite(
    sqlite_url: str, start_sim: Callable[..., SimulatorHandle]
) -> None:
    """One tick of the in-process scheduler: the daily close, then the charge through the
    simulator, then the "invoice issued"/"paid" notifications kept for the user."""
    from datetime import UTC, datetime

    from billing.customers import create_customer
    from billing.payments.sippy_client import SippyClient
    from billing.settings import BillingDefaults
    from billing.tables import invoices, notifications
    from billing.usage.ingestion import ingest_usage, validate_events
    from billing.usage.rate_sheets import add_rates, parse_sheet
    from jobs import context
    from jobs.embedded import EmbeddedScheduler
    from reconciliation.runs import reconcile
    from reconciliation.statements import fetch_statement

    sessions = make_session_factory(make_engine(sqlite_url))
    now = datetime(2026, 11, 24, 2, 0, 30, tzinfo=UTC)
    event = sms("m1", "2026-11-23T10:00:00Z")
    with unit_of_work(sessions) as session:
        add_rates(session, parse_sheet(SAMPLE_RATES.read_text()), now)
        create_customer(session, "42", "USD", now, sippy_account_id="1001")
        ingest_usage(session, validate_events([event]), now, BillingDefaults())
    sim = start_sim(clock=lambda: now)
    gateway = SippyClient(sim.xmlapi_url, "smsledger", "secret", timeout_s=5)
    context.configure(context.JobContext(sessions, lambda: now, BillingDefaults(), gateway=gateway))
    EmbeddedScheduler(lambda: now).tick()
    with unit_of_work(sessions) as session:
        status = session.execute(sa.select(invoices.c.status)).scalar_one()
        kinds = session.execute(sa.select(notifications.c.kind)).scalars().all()
    assert status == "paid" and sorted(kinds) == ["invoice_issued", "invoice_paid"]
    assert len(sim.state.payments(1001)) == 1
    # ... and reconciling the day against the simulator's statement finds them equal.
    start, end = datetime(2026, 11, 24, tzinfo=UTC), datetime(2026, 11, 25, tzinfo=UTC)
    statement = fetch_statement(gateway, start, end)
    with unit_of_work(sessions) as session:
        run = reconcile(session, statement, "sippy", start, end, "smoke", now)
    assert run.status == "reconciled" and run.totals["matched"] == 1

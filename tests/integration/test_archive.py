"""Archives of closed months (issue 18 §2, the writing and checking half): which months are
ready and what holds the others back; a month written to Parquet with its manifest, read back
by `archive verify` and by DuckDB as docs/archives.md shows; an interrupted write replaced, a
second run idempotent, a damaged file caught."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from billing.customers import update_customer
from billing.payments.sippy_client import SippyClient
from billing.settings import BillingDefaults
from billing.tables import invoices
from infra.archive_files import ArchiveError, verify_month, write_month
from infra.archive_plan import parse_month, plan
from infra.config import Config
from infra.partitions import ensure_partitions
from jobs import context
from jobs.payments import dispatch_charges
from ledger.checks import check_ledger
from ledger.db import run_in_transaction, unit_of_work
from ledger.tables import archived_months, archived_totals, transfers
from sippy_simulator.server import SimulatorHandle
from tests.client import ApiClient
from tests.processes import COMMAND
from tests.scenarios import at, close, load_rates, post, sms

pytestmark = pytest.mark.postgres

SEPTEMBER, OCTOBER = at(2026, 9, 10, 12), at(2026, 10, 12, 9)


@pytest.fixture
def history(sessions: sessionmaker[Session], sim: SimulatorHandle) -> sessionmaker[Session]:
    """September's usage billed and paid in Sippy; October's usage posted, not billed yet."""
    run_in_transaction(sessions, lambda s: ensure_partitions(s, at(2026, 10, 15), back=1))
    load_rates(sessions)
    post(sessions, SEPTEMBER, sms("s1", SEPTEMBER), sms("s2", SEPTEMBER, user="43"))
    with unit_of_work(sessions) as session:
        for user, account in (("42", "1001"), ("43", "1002")):
            update_customer(session, user, SEPTEMBER, sippy_account_id=account)
    close(sessions, "daily", at(2026, 9, 11, 2))
    context.configure(
        context.JobContext(
            sessions,
            lambda: at(2026, 9, 11, 3),
            BillingDefaults(),
            gateway=SippyClient(sim.xmlapi_url, "smsledger", "secret", timeout_s=5),
        )
    )
    dispatch_charges()
    post(sessions, OCTOBER, sms("o1", OCTOBER))
    with unit_of_work(sessions, commit=False) as session:
        assert set(session.execute(sa.select(invoices.c.status)).scalars()) == {"paid"}
    return sessions


def test_the_plan_takes_the_paid_month_and_names_what_holds_the_rest(
    history: sessionmaker[Session],
) -> None:
    with unit_of_work(history, commit=False) as session:
        months = {m.month.strftime("%Y-%m"): m for m in plan(session, date(2026, 12, 1))}
    assert months["2026-09"].ready and months["2026-09"].reasons == []
    assert months["2026-10"].reasons == ["1 usage transfer(s) not invoiced yet"]
    assert months["2026-11"].reasons == ["waits for 2026-10"]
    # an unpaid invoice holds its month back too
    with unit_of_work(history) as session:
        session.execute(sa.update(invoices).values(status="failed"))
    with unit_of_work(history, commit=False) as session:
        (september, *_rest) = plan(session, date(2026, 10, 1))
    assert not september.ready
    assert september.reasons[0].startswith("invoice ") and "is failed" in september.reasons[0]


def test_a_month_is_written_verified_and_queryable_with_duckdb(
    history: sessionmaker[Session], tmp_path: Path
) -> None:
    september = date(2026, 9, 1)
    # a write interrupted before: its partial directory is replaced, never taken for a month
    (tmp_path / "2026-09.partial").mkdir()
    (tmp_path / "2026-09.partial" / "transfers.parquet").write_bytes(b"half a file")
    with unit_of_work(history, commit=False) as session:
        written = write_month(session, tmp_path, september, at(2026, 12, 2))
        in_database = session.execute(
            sa.select(sa.func.count(), sa.func.sum(transfers.c.amount)).where(
                transfers.c.effective_at >= at(2026, 9, 1),
                transfers.c.effective_at < at(2026, 10, 1),
            )
        ).one()
    assert not (tmp_path / "2026-09.partial").exists()
    manifest = json.loads((tmp_path / "2026-09" / "manifest.json").read_text())
    assert manifest == written.manifest
    files = manifest["files"]
    assert files["transfers"]["rows"] == in_database[0] > 0
    assert files["invoices"]["rows"] == 2 and files["payment_attempts"]["rows"] == 2
    assert files["invoice_usage"]["rows"] == 2
    assert manifest["totals"]["customer:42:unbilled"]["debits"] == 7000
    # the archive answers the accountant's question without the database
    query = duckdb.connect()  # in memory: it reads the files where they are
    archived = query.execute(
        f"SELECT count(*), sum(amount) FROM '{tmp_path}/2026-09/transfers.parquet'"
    ).fetchone()
    assert archived == (in_database[0], in_database[1])
    usage = query.execute(
        f"SELECT idempotency_key, amount FROM '{tmp_path}/2026-09/transfers.parquet'"
        " WHERE kind = 'usage' ORDER BY idempotency_key"
    ).fetchall()
    assert usage == [("s1", 7000), ("s2", 7000)]
    assert _documented_query(tmp_path / "2026-09") == [("42", 1, 7000), ("43", 1, 7000)]
    # a second run keeps what was written
    with unit_of_work(history, commit=False) as session:
        again = write_month(session, tmp_path, september, at(2026, 12, 3))
        assert again.manifest["written_at"] == manifest["written_at"]
        verify_month(session, tmp_path / "2026-09")
    verify_month(None, tmp_path / "2026-09")  # the files alone, without the database


def _documented_query(month: Path) -> object:
    """docs/archives.md's DuckDB example, run as written on `month` instead of its example's."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "archives.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    code = code.replace("archive/2025-11", str(month))
    namespace: dict[str, object] = {}
    exec(code, namespace)  # our own documentation: the point is to run it as written
    return namespace["per_customer"]


def test_verify_catches_a_damaged_file_and_a_database_that_moved_on(
    history: sessionmaker[Session], tmp_path: Path
) -> None:
    with unit_of_work(history, commit=False) as session:
        write_month(session, tmp_path, date(2026, 9, 1), at(2026, 12, 2))
    damaged = tmp_path / "2026-09" / "invoices.parquet"
    content = bytearray(damaged.read_bytes())
    content[len(content) // 2] ^= 0xFF
    damaged.write_bytes(bytes(content))
    with pytest.raises(ArchiveError, match="SHA-256"):
        verify_month(None, tmp_path / "2026-09")


def test_the_command_line_dry_run_writes_nothing_and_the_run_writes_the_ready_month(
    history: sessionmaker[Session],
    make_api: Callable[..., ApiClient],
    pg_url: str,
    tmp_path: Path,
) -> None:
    api = make_api(Config(database_url=pg_url, archive_dir=str(tmp_path)))
    runner = api.app.test_cli_runner()
    dry = runner.invoke(args=["archive", "--before", "2026-12", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert dry.output.splitlines() == [
        "2026-09: ready",
        "2026-10: held back: 1 usage transfer(s) not invoiced yet",
        "2026-11: held back: waits for 2026-10",
    ]
    assert list(tmp_path.iterdir()) == []
    done = runner.invoke(args=["archive", "--before", "2026-12"])
    assert done.exit_code == 0, done.output
    assert done.output.startswith("2026-09: archived, ")
    checked = runner.invoke(args=["archive", "verify"])
    assert (checked.exit_code, checked.output) == (0, "2026-09: ok\n")
    bad = runner.invoke(args=["archive", "--before", "2026-13"])
    assert bad.exit_code == 2 and "is not a month" in bad.output


def test_a_month_is_parsed_strictly() -> None:
    assert parse_month("2026-01") == date(2026, 1, 1)
    for text in ("2026-1", "2026-00", "26-01", "2026-01-01", ""):
        with pytest.raises(ValueError, match="expected YYYY-MM"):
            parse_month(text)
    assert datetime(2026, 1, 1, tzinfo=UTC).month == 1


def _archive_command(pg_url: str, root: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    """`smsledger archive …` as its own process on the test's database."""
    return subprocess.Popen(
        [COMMAND, "archive", *args],
        env={**os.environ, "DATABASE_URL": pg_url, "ARCHIVE_DIR": str(root), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _state(sessions: sessionmaker[Session]) -> tuple[bool, int, int]:
    """(September's partition still there, archived months, accounts with archived totals)."""
    with unit_of_work(sessions, commit=False) as session:
        there = session.execute(sa.text("SELECT to_regclass('transfers_p2026_09')")).scalar()
        months = session.execute(sa.select(sa.func.count()).select_from(archived_months))
        totals = session.execute(sa.select(sa.func.count()).select_from(archived_totals))
        return there is not None, int(months.scalar_one()), int(totals.scalar_one())


@pytest.mark.faults
@pytest.mark.parametrize("point", ["written", "dropped"])
def test_an_archive_killed_after_writing_or_while_dropping_is_finished_by_the_next_run(
    history: sessionmaker[Session], pg_url: str, tmp_path: Path, point: str
) -> None:
    paused = _archive_command(
        pg_url, tmp_path, "--before", "2026-10", SMSLEDGER_FAULT_PAUSE_ARCHIVE_AT=point
    )
    assert paused.stdout is not None
    assert paused.stdout.readline().strip() == f"paused at {point}"
    os.kill(paused.pid, signal.SIGKILL)
    paused.wait(timeout=10)
    paused.stdout.close()
    # nothing half-done: the files are complete, the month is still wholly in the database
    assert (tmp_path / "2026-09" / "manifest.json").exists()
    assert _state(history) == (True, 0, 0)
    again = _archive_command(pg_url, tmp_path, "--before", "2026-10")
    output, _ = again.communicate(timeout=120)
    assert again.returncode == 0, output
    assert output.startswith("2026-09: archived, ")
    assert _state(history)[:2] == (False, 1)
    with unit_of_work(history, commit=False) as session:
        assert check_ledger(session) == []
    rerun = _archive_command(pg_url, tmp_path, "--before", "2026-10")
    output, _ = rerun.communicate(timeout=120)
    assert (rerun.returncode, output) == (0, "no month before 2026-10 is in the database\n")


def test_after_the_drop_every_balance_check_and_statement_stays_and_earlier_is_410(
    history: sessionmaker[Session],
    make_api: Callable[..., ApiClient],
    pg_url: str,
    tmp_path: Path,
) -> None:
    api = make_api(Config(database_url=pg_url, archive_dir=str(tmp_path)))
    accountant, service = api.as_role("accountant"), api.as_role("service")
    october = "2026-10-15T00:00:00Z"
    statement = "/api/ledger/accounts/customer:42:unbilled/transfers?from=2026-10-01T00:00:00Z"
    reads = ["/api/ledger/trial-balance", f"/api/ledger/trial-balance?as_of={october}", statement]
    before = [accountant.get(path).json for path in reads]
    unbilled_statement = accountant.get("/api/ledger/accounts/customer:42:unbilled/transfers")
    done = api.app.test_cli_runner().invoke(args=["archive", "--before", "2026-10"])
    assert done.exit_code == 0, done.output
    assert [accountant.get(path).json for path in reads] == before
    with unit_of_work(history, commit=False) as session:
        assert check_ledger(session) == []
        assert session.execute(sa.text("SELECT to_regclass('transfers_p2026_09')")).scalar() is None
    # without `from`, a statement starts at the cut: the same as asked from it
    assert accountant.get("/api/ledger/accounts/customer:42:unbilled/transfers").json == before[2]
    assert unbilled_statement.status_code == 200
    # before the cut: 410, naming the archive
    for path in (
        "/api/ledger/trial-balance?as_of=2026-09-15T00:00:00Z",
        "/api/ledger/accounts/customer:42:unbilled?as_of=2026-09-15T00:00:00Z",
        "/api/ledger/accounts/customer:42:unbilled/transfers?from=2026-09-01T00:00:00Z",
    ):
        refused = accountant.get(path)
        assert refused.status_code == 410, (path, refused.json)
        assert refused.json["error"]["code"] == "archived"
        assert refused.json["error"]["details"]["archive"] == str(tmp_path / "2026-09")
    # a new message dated in the archived month, and a replay of an archived one: 410, not posted
    for event in (sms("late-1", at(2026, 9, 20)), sms("s1", SEPTEMBER)):
        refused = service.post("/api/usage", json=event)
        assert refused.status_code == 410, refused.json
        assert refused.json["error"]["code"] == "archived"
    # nor can anything reach into the archived month: a void, a refund, a reconciliation run
    admin = api.as_role("admin")
    with unit_of_work(history, commit=False) as session:
        paid = session.execute(sa.select(invoices.c.id)).scalars().first()
    for refused in (
        service.post("/api/usage/s1/void", json={"reason": "sent twice"}),
        admin.post("/api/admin/sms/billing", json={"billingId": str(paid), "action": "refund"}),
        accountant.post(
            "/api/reconciliation/runs",
            json={"from": "2026-09-01T00:00:00Z", "to": "2026-10-01T00:00:00Z", "source": "sippy"},
        ),
    ):
        assert refused.status_code == 410, refused.json
        assert refused.json["error"]["code"] == "archived"
    with unit_of_work(history, commit=False) as session:
        assert check_ledger(session) == []
    # the partitions job leaves the archived months alone
    run_in_transaction(history, lambda s: ensure_partitions(s, at(2026, 10, 15), back=2))
    verify_month(None, tmp_path / "2026-09")


def test_the_scheduled_archive_is_off_by_default_and_keeps_the_retention_months(
    history: sessionmaker[Session], tmp_path: Path
) -> None:
    from jobs.archive import archive_closed_months

    assert Config.from_environ({}).archive_scheduled is False
    with pytest.raises(ValueError, match="needs ARCHIVE_DIR"):
        Config.from_environ({"SMS_BILLING_ARCHIVE_SCHEDULED": "true"})
    with pytest.raises(ValueError, match="SMS_BILLING_RETENTION_MONTHS"):
        Config.from_environ({"SMS_BILLING_RETENTION_MONTHS": "0"})
    december = at(2026, 12, 2, 3)
    context.configure(context.JobContext(history, lambda: december, BillingDefaults()))
    assert archive_closed_months() == []  # off: nothing read, nothing written
    assert list(tmp_path.iterdir()) == []
    config = Config.from_environ(
        {
            "ARCHIVE_DIR": str(tmp_path),
            "SMS_BILLING_ARCHIVE_SCHEDULED": "true",
            "SMS_BILLING_RETENTION_MONTHS": "2",
        }
    )
    context.configure(context.from_config(config, sessions=history, clock=lambda: december))
    outcomes = archive_closed_months()  # keeps October and November
    assert [(o.plan.month, o.archived) for o in outcomes] == [(date(2026, 9, 1), True)]
    assert archive_closed_months() == []  # nothing left before the cut

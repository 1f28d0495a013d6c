"""The command line: keys are printed once and stored hashed; `ledger check` names the account
whose cached balance no longer equals its transfers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from billing.access.api_keys import digest
from billing.chart import ensure_chart
from billing.tables import api_keys
from ledger.db import unit_of_work
from ledger.model import EntryRequest, Kind, Leg
from ledger.posting import post_entry
from tests.client import ApiClient
from tests.conftest import NOW

pytestmark = pytest.mark.postgres


def test_a_created_key_is_printed_once_and_stored_only_as_a_digest(
    app_and_keys: tuple[Any, dict[str, str]],
) -> None:
    app, _ = app_and_keys
    result = app.test_cli_runner().invoke(args=["keys", "create", "--role", "service"])
    assert result.exit_code == 0, result.output
    key = result.output.splitlines()[0]
    assert key.startswith("sk_")
    with unit_of_work(app.extensions["smsledger"].sessions) as session:
        stored = session.execute(sa.select(api_keys).where(api_keys.c.role == "service")).all()
    assert digest(key) in {row.key_hash for row in stored}
    assert all(key not in str(tuple(row)) for row in stored)
    refused = app.test_cli_runner().invoke(args=["keys", "create", "--role", "root"])
    assert refused.exit_code != 0


def test_ledger_check_passes_then_names_a_broken_account(
    app_and_keys: tuple[Any, dict[str, str]],
) -> None:
    app, _ = app_and_keys
    sessions = app.extensions["smsledger"].sessions
    with unit_of_work(sessions) as session:
        ensure_chart(session, "42", "USD", NOW)
        entry = EntryRequest(Kind.USAGE, "m1", (Leg("customer:42:unbilled", "revenue:sms:USD", 5),))
        post_entry(session, entry, NOW)
    runner = app.test_cli_runner()
    ok = runner.invoke(args=["ledger", "check"])
    assert ok.exit_code == 0 and "ledger ok" in ok.output
    with unit_of_work(sessions) as session:
        session.execute(
            sa.text(
                "UPDATE balances SET debits = debits + 1 WHERE account_id ="
                " (SELECT id FROM accounts WHERE code = 'customer:42:unbilled')"
            )
        )
    broken = runner.invoke(args=["ledger", "check"])
    assert broken.exit_code == 1
    assert "invariant 6 broken at customer:42:unbilled" in broken.output
    assert "invariant 2 broken at USD" not in broken.output  # transfers still balance


def test_db_upgrade_brings_an_empty_database_to_the_latest_revision(
    pg_admin_url: str, clock: object
) -> None:
    import sqlalchemy as sa

    from api import create_app
    from infra.config import Config

    admin = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql("DROP DATABASE IF EXISTS cli_upgrade")
        connection.exec_driver_sql("CREATE DATABASE cli_upgrade")
    url = sa.make_url(pg_admin_url).set(database="cli_upgrade").render_as_string(False)
    app = create_app(Config(database_url=url))
    result = app.test_cli_runner().invoke(args=["db", "upgrade"])
    assert result.exit_code == 0 and "latest revision" in result.output
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        assert "transfers" in sa.inspect(connection).get_table_names()
    engine.dispose()
    app.extensions["smsledger"].engine.dispose()
    with admin.connect() as connection:
        connection.exec_driver_sql("DROP DATABASE cli_upgrade WITH (FORCE)")
    admin.dispose()


def test_token_mints_a_user_token_the_api_accepts(
    make_api: Callable[..., ApiClient], pg_url: str
) -> None:
    from datetime import UTC, datetime

    from infra.config import Config
    from tests.conftest import Clock

    secret = "a-user-token-secret-of-32-bytes-or-more"
    api = make_api(Config(database_url=pg_url, user_token_secret=secret), Clock(datetime.now(UTC)))
    result = api.app.test_cli_runner().invoke(args=["token", "--user-id", "42"])
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    answer = api.bearer(token).get("/api/user/notifications")
    assert answer.status_code == 200 and answer.json["total"] == 0
    bad = api.app.test_cli_runner().invoke(args=["token", "--user-id", "no spaces"])
    assert bad.exit_code == 2
    unset = make_api(Config(database_url=pg_url))
    assert unset.app.test_cli_runner().invoke(args=["token", "--user-id", "42"]).exit_code == 2


def test_partitions_ensure_makes_the_months_around_the_clock_and_show_lists_them(
    app_and_keys: tuple[Any, dict[str, str]],
) -> None:
    app, _ = app_and_keys
    runner = app.test_cli_runner()
    ensured = runner.invoke(args=["partitions", "ensure"])
    assert ensured.exit_code == 0, ensured.output
    states = dict(line.split(": ") for line in ensured.output.splitlines())
    # the app's clock is in November 2026: October through February, both tables
    assert set(states) == {
        f"{table}_p{month}"
        for table in ("transfers", "invoice_usage")
        for month in ("2026_10", "2026_11", "2026_12", "2027_01", "2027_02")
    }
    assert set(states.values()) <= {"created", "exists"}
    again = runner.invoke(args=["partitions", "ensure"])
    assert set(dict(line.split(": ") for line in again.output.splitlines()).values()) == {"exists"}
    shown = runner.invoke(args=["partitions", "show"])
    assert shown.exit_code == 0, shown.output
    assert (
        "transfers\ttransfers_p2026_11\tFOR VALUES FROM ('2026-11-01 00:00:00+00')" in shown.output
    )
    assert "transfers_default\tDEFAULT" in shown.output
    # three after the clock's month at least (the migration made them from today's date too)
    summary = [line for line in shown.output.splitlines() if line.startswith("transfers: ")]
    assert len(summary) == 1 and summary[0].endswith("month(s) ahead, 0 row(s) in the default")
    assert int(summary[0].split()[1]) >= 3

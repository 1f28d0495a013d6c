"""A real streaming replica (`pg_basebackup` of a primary of this module's own, both PostgreSQL
15 on 127.0.0.1): reports read from it while it is within `DATABASE_REPLICA_MAX_LAG_S`, and
from the primary when it lags more or is down; reads a write depends on always read the
primary; `/readyz` and `/metrics` show the replica's state and lag.

Which database answered is told by what it knows: with the replica's replay paused, a transfer
posted since exists only on the primary.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa

import migrations
from infra.config import Config
from ledger.db import make_engine, make_session_factory
from tests.conftest import NOW, Clock, build_app
from tests.pgserver import PostgresServer
from tests.scenarios import load_rates

pytestmark = [pytest.mark.faults, pytest.mark.postgres]

MAX_LAG_S = 4.0
ACCOUNT = "customer:c1:unbilled"
STATEMENT = f"/api/ledger/accounts/{ACCOUNT}/transfers"


@dataclass
class Pair:
    primary: PostgresServer
    replica: PostgresServer
    primary_url: str
    replica_url: str

    def replica_sql(self, sql: str) -> Any:
        engine = sa.create_engine(self.replica_url, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as connection:
                return connection.execute(sa.text(sql)).scalar()
        finally:
            engine.dispose()


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    primary, replica = PostgresServer(), PostgresServer()
    try:
        admin = sa.create_engine(primary.start(), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.exec_driver_sql("CREATE DATABASE billing")
        admin.dispose()
        primary_url = primary.url("billing")
        migrations.upgrade(primary_url)
        engine = make_engine(primary_url)
        load_rates(make_session_factory(engine), NOW)
        engine.dispose()
        replica.start_as_replica_of(primary)
        yield Pair(primary, replica, primary_url, replica.url("billing"))
    finally:
        replica.stop()
        primary.stop()


@pytest.fixture
def client(pair: Pair) -> Iterator[tuple[Any, dict[str, str]]]:
    pair.replica_sql("SELECT pg_wal_replay_resume()")
    config = Config(
        database_url=pair.primary_url,
        database_replica_url=pair.replica_url,
        database_replica_max_lag_s=MAX_LAG_S,
    )
    app, keys = build_app(pair.primary_url, Clock(), config)
    app.extensions["smsledger"].replica.check_every_s = 0.0  # measure on every read
    yield app.test_client(), keys
    app.extensions["smsledger"].engine.dispose()
    app.extensions["smsledger"].replica.engine.dispose()


def _post(client: Any, key: str, message_id: str) -> None:
    answer = client.post(
        "/api/usage",
        json={
            "message_id": message_id,
            "user_id": "c1",
            "destination": "+447400123456",
            "segments": 1,
        },
        headers={"Authorization": f"Bearer {key}"},
    )
    assert answer.status_code == 201, answer.get_json()


def _post_and_replay(client: Any, key: str, message_id: str) -> None:
    """Post, then wait until the replica has replayed everything the primary wrote."""
    _post(client, key, message_id)
    _until(lambda: _replica_state(client)["lag_s"] == 0.0)


def _statement_total(client: Any, key: str) -> int:
    answer = client.get(STATEMENT, headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200, answer.get_json()
    return int(answer.get_json()["total"])


def _balance(client: Any, key: str) -> str:
    answer = client.get(
        f"/api/ledger/accounts/{ACCOUNT}", headers={"Authorization": f"Bearer {key}"}
    )
    assert answer.status_code == 200, answer.get_json()
    return str(answer.get_json()["balance"])


def _replica_state(client: Any) -> dict[str, Any]:
    answer = client.get("/readyz")
    assert answer.status_code == 200, answer.get_json()
    return dict(answer.get_json()["replica"])


def _until(condition: Any, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        time.sleep(0.1)


def _metrics(client: Any) -> dict[str, float]:
    text = client.get("/metrics").get_data(as_text=True)
    return {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line.startswith("smsledger_replica_")
    }


def test_reports_read_the_replica_within_its_lag_and_the_primary_beyond_it(
    pair: Pair, client: tuple[Any, dict[str, str]]
) -> None:
    api, keys = client
    _post_and_replay(api, keys["service"], "replica-a")
    assert _replica_state(api)["reports_from"] == "replica"
    seen = _statement_total(api, keys["accountant"])

    pair.replica_sql("SELECT pg_wal_replay_pause()")
    _post(api, keys["service"], "replica-b")
    # the replica has not applied the new transfer: a report that still reads it misses it,
    # while the balance (a read a write depends on) comes from the primary and has it
    state = _replica_state(api)
    if state["reports_from"] == "replica":  # unless the machine stalled past the lag limit
        assert _statement_total(api, keys["accountant"]) == seen
    assert _balance(api, keys["accountant"]) != "0"

    _until(lambda: _replica_state(api)["reports_from"] == "primary")
    state = _replica_state(api)
    assert state["up"] is True and state["lag_s"] > MAX_LAG_S
    assert _statement_total(api, keys["accountant"]) == seen + 1
    metrics = _metrics(api)
    assert metrics["smsledger_replica_up"] == 1.0
    assert metrics["smsledger_replica_serving_reports"] == 0.0
    assert metrics["smsledger_replica_lag_seconds"] > MAX_LAG_S

    pair.replica_sql("SELECT pg_wal_replay_resume()")
    _until(lambda: _replica_state(api)["lag_s"] == 0.0)
    assert _replica_state(api)["reports_from"] == "replica"
    assert _statement_total(api, keys["accountant"]) == seen + 1
    assert _metrics(api)["smsledger_replica_lag_seconds"] == 0.0


def test_a_replica_that_goes_down_hands_reports_to_the_primary_and_takes_them_back(
    pair: Pair, client: tuple[Any, dict[str, str]]
) -> None:
    api, keys = client
    _post_and_replay(api, keys["service"], "down-a")
    replica = api.application.extensions["smsledger"].replica
    replica.check_every_s = 3600.0  # the state says "usable" when the replica dies
    before = _statement_total(api, keys["accountant"])
    pair.replica.stop_now()
    try:
        _post(api, keys["service"], "down-b")
        # the read fails on the replica and the primary answers it, with the newest transfer
        on_primary = _statement_total(api, keys["accountant"])
        assert on_primary == before + 1
        assert api.get("/readyz").get_json()["replica"]["up"] is False
        replica.check_every_s = 0.0
        answer = api.get("/readyz")
        assert answer.status_code == 200  # without the replica the service is still ready
        assert answer.get_json()["replica"] == {
            "up": False,
            "lag_s": None,
            "max_lag_s": MAX_LAG_S,
            "reports_from": "primary",
        }
        assert _metrics(api) == {
            "smsledger_replica_up": 0.0,
            "smsledger_replica_serving_reports": 0.0,
        }
        assert (
            api.get(
                "/api/admin/sms/billing-stats", headers={"Authorization": f"Bearer {keys['admin']}"}
            ).status_code
            == 200
        )
    finally:
        pair.replica.start_again()
    _until(lambda: _replica_state(api)["lag_s"] == 0.0)
    assert _replica_state(api)["reports_from"] == "replica"
    assert _statement_total(api, keys["accountant"]) == on_primary


def test_the_replica_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="DATABASE_REPLICA_MAX_LAG_S"):
        Config.from_environ({"DATABASE_REPLICA_MAX_LAG_S": "0"})
    with pytest.raises(ValueError, match="DATABASE_REPLICA_MAX_LAG_S"):
        Config.from_environ({"DATABASE_REPLICA_MAX_LAG_S": "soon"})
    with pytest.raises(ValueError, match="PostgreSQL streaming replica"):
        Config.from_environ({"DATABASE_REPLICA_URL": "sqlite:///replica.db"})
    config = Config.from_environ({"DATABASE_REPLICA_URL": "postgresql://r/billing"})
    assert config.database_replica_max_lag_s == 5.0

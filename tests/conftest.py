"""Shared fixtures: a throwaway PostgreSQL cluster for the session, a database migrated once by
Alembic and used as a template, and a fresh copy of it for every test that asks.

A copy per test (about 0.1 s) instead of a rolled-back outer transaction: the tests commit for
real, so triggers, constraints and concurrent units of work behave as in production.

Also the one HTTP client of the tests (`api`, `make_api`: see `tests.client`) and the Sippy
simulator (`sim`, `start_sim`), each stopped after the test that started it.

For the job and fault tests: a Redis to stop and start again (`restartable_redis`, a
`tests.redisserver.RedisServer`) and a client of it (`redis`), `smsledger` subprocesses
(`launch`: see `tests.processes`), each stopped by its PID after the test, and all they run on
together (`rig`).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from redis import Redis
from sqlalchemy.orm import Session, sessionmaker

import migrations
from api import create_app
from billing.access.api_keys import create_key
from infra.config import Config
from ledger.db import make_engine, make_session_factory, unit_of_work
from sippy_simulator.server import SimulatorHandle, start_simulator
from tests import redisserver
from tests.client import ApiClient
from tests.pgserver import PostgresServer
from tests.processes import Launcher, Rig, smsledger_env
from tests.redisserver import RedisServer

TEMPLATE = "smsledger_template"
_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """Admin URL of a PostgreSQL cluster: `SMSLEDGER_TEST_PG_ADMIN_URL`, or one started here."""
    given = os.environ.get("SMSLEDGER_TEST_PG_ADMIN_URL")
    if given:
        yield given
        return
    server = PostgresServer()
    try:
        yield server.start()
    finally:
        server.stop()


def _admin(url: str) -> sa.Engine:
    return sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


@pytest.fixture(scope="session")
def pg_template(pg_admin_url: str) -> str:
    admin = _admin(pg_admin_url)
    with admin.connect() as connection:
        connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {TEMPLATE}")
        connection.exec_driver_sql(f"CREATE DATABASE {TEMPLATE}")
    url = sa.make_url(pg_admin_url).set(database=TEMPLATE).render_as_string(hide_password=False)
    migrations.upgrade(url)
    return url


@pytest.fixture
def pg_url(pg_admin_url: str, pg_template: str) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for one test; reached through
    `SMSLEDGER_TEST_PG_VIA` (a pooler's host:port) when set, created and dropped directly."""
    name = f"test_{os.getpid()}_{next(_counter)}"
    admin = _admin(pg_admin_url)
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    url = sa.make_url(pg_admin_url).set(database=name)
    via = os.environ.get("SMSLEDGER_TEST_PG_VIA")
    if via:  # host:port of a pooler in front of the cluster (tests/pgbouncer.py)
        host, port = via.rsplit(":", 1)
        url = url.set(host=host, port=int(port))
    yield url.render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def sqlite_url(tmp_path: object) -> str:
    url = f"sqlite:///{tmp_path}/smsledger.db"
    migrations.upgrade(url)
    return url


@pytest.fixture
def engine(pg_url: str) -> Iterator[sa.Engine]:
    engine = make_engine(pg_url, pool_size=20, max_overflow=10)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: sa.Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


class Clock:
    """A controllable clock handed to the app and services."""

    def __init__(self, start: datetime = NOW) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def build_app(
    database_url: str, clock: Clock, config: Config | None = None
) -> tuple[Any, dict[str, str]]:
    app = create_app(config or Config(database_url=database_url), clock=clock)
    app.config["TESTING"] = True
    keys = {}
    runtime = app.extensions["smsledger"]
    with unit_of_work(runtime.sessions) as session:
        for role in ("admin", "service", "accountant"):
            keys[role], _ = create_key(session, role, f"test {role}", clock())
    return app, keys


@pytest.fixture
def app_and_keys(pg_url: str, clock: Clock) -> Iterator[tuple[object, dict[str, str]]]:
    app, keys = build_app(pg_url, clock)
    yield app, keys
    app.extensions["smsledger"].engine.dispose()  # type: ignore[attr-defined]


@pytest.fixture
def api(app_and_keys: tuple[Any, dict[str, str]]) -> ApiClient:
    """The client of the default app (`app_and_keys`): `api.as_role("admin").get(path)`."""
    app, keys = app_and_keys
    return ApiClient(app, keys)


@pytest.fixture
def make_api(clock: Clock) -> Iterator[Callable[..., ApiClient]]:
    """`make_api(config)`: an app built with `config` on the test's clock (or on the clock
    given as second argument) and its client; each app's engine is disposed after the test."""
    built: list[ApiClient] = []

    def make(config: Config, clock: Clock = clock) -> ApiClient:
        app, keys = build_app(config.database_url, clock, config)
        built.append(ApiClient(app, keys))
        return built[-1]

    yield make
    for client in built:
        client.dispose()


@pytest.fixture
def start_sim() -> Iterator[Callable[..., SimulatorHandle]]:
    """`start_sim(**options)`: a Sippy simulator started with `start_simulator`'s options;
    each one started is stopped after the test."""
    started: list[SimulatorHandle] = []

    def start(**options: Any) -> SimulatorHandle:
        started.append(start_simulator(**options))
        return started[-1]

    yield start
    for handle in started:
        handle.stop()


@pytest.fixture
def sim(start_sim: Callable[..., SimulatorHandle], clock: Clock) -> SimulatorHandle:
    """A Sippy simulator with its default accounts, on the test's clock."""
    return start_sim(clock=clock)


@pytest.fixture
def restartable_redis() -> Iterator[RedisServer]:
    """A `redis-server` of the test's own, to `stop()` and `start()` again (empty: no
    persistence); removed after the test."""
    with redisserver.restartable_redis() as server:
        yield server


@pytest.fixture
def redis(restartable_redis: RedisServer) -> Iterator[Redis]:
    """A client of `restartable_redis` (it reconnects by itself after a restart)."""
    connection = Redis.from_url(restartable_redis.url)
    yield connection
    connection.close()


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launcher]:
    """`launch(name, *args, **env)`: `smsledger *args` with `env` over the test's environment,
    its output in `tmp_path/name.log` (`launch.log(name)`); each one still running is stopped
    by its PID after the test."""
    launcher = Launcher(tmp_path)
    yield launcher
    launcher.stop_all()


@pytest.fixture
def rig(
    pg_url: str,
    sessions: sessionmaker[Session],
    restartable_redis: RedisServer,
    redis: Redis,
    start_sim: Callable[..., SimulatorHandle],
    launch: Launcher,
) -> Rig:
    """The test's database, `restartable_redis` and a Sippy simulator on real time (the
    subprocesses' clock), for `smsledger` processes to `start` on: see `tests.processes.Rig`."""
    sim = start_sim()
    env = smsledger_env(pg_url, restartable_redis.url, sim)
    return Rig(sessions, restartable_redis, redis, sim, launch, env)

"""`python -m tests.simulation [--seed N] [--customers C] [--days D]`: run the seeded simulation
(`tests.simulation.simulator`) on its own throwaway PostgreSQL and Sippy simulator, print a
summary, and exit 1 (printing the seed and the command that replays it) when an invariant broke.
Without `--seed` a random seed is drawn and printed first, so any run can be replayed. The app's
own log is kept by the simulation (its errors are quoted in the violations), not printed."""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import sqlalchemy as sa

import migrations
from infra.config import Config
from sippy_simulator.server import SimulatorHandle, start_simulator
from tests.client import ApiClient
from tests.conftest import Clock, build_app
from tests.pgserver import PostgresServer
from tests.simulation.simulator import SimConfig, SimulationFailed, simulate

DATABASE = "simulation"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.simulation", description=__doc__)
    parser.add_argument("--seed", type=int, default=None, help="default: a random seed")
    parser.add_argument("--customers", type=int, default=40)
    parser.add_argument("--days", type=int, default=20)
    parser.add_argument(
        "--ops-per-customer-day", type=float, default=SimConfig.ops_per_customer_day
    )
    return parser.parse_args(argv)


@contextmanager
def throwaway_database() -> Iterator[str]:
    """A fresh PostgreSQL cluster with one migrated database; removed afterwards."""
    server = PostgresServer()
    admin_url = server.start()
    try:
        admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.exec_driver_sql(f"CREATE DATABASE {DATABASE}")
        admin.dispose()
        url = server.url(DATABASE)
        migrations.upgrade(url)
        yield url
    finally:
        server.stop()


def run(config: SimConfig) -> int:
    with ExitStack() as cleanup:
        url = cleanup.enter_context(throwaway_database())

        def make_api(app_config: Config, clock: Clock) -> ApiClient:
            client = ApiClient(*build_app(app_config.database_url, clock, app_config))
            cleanup.callback(client.dispose)
            return client

        def start_sim(**options: Any) -> SimulatorHandle:
            handle = start_simulator(**options)
            cleanup.callback(handle.stop)
            return handle

        try:
            summary = simulate(config, url, make_api, start_sim)
        except SimulationFailed as failure:
            print(failure, flush=True)
            print(f"FAILED: seed {config.seed}; replay with: {config.command}", flush=True)
            return 1
        print(summary.render(), flush=True)
        return 0


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    config = SimConfig(
        seed=seed,
        customers=args.customers,
        days=args.days,
        ops_per_customer_day=args.ops_per_customer_day,
    )
    print(f"simulation {config.label}: starting ({config.command})", flush=True)
    return run(config)


if __name__ == "__main__":
    sys.exit(main())

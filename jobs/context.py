"""The worker's composition root: what a job runs against (database, clock, billing defaults).

A worker process builds it from the environment on first use; the embedded mode and the tests
hand it in with `configure`. Job functions stay module-level and take ids or names only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from billing.config import BillingDefaults, Config
from ledger.db import make_engine, make_session_factory


@dataclass(frozen=True)
class JobContext:
    sessions: Callable[[], Session]
    clock: Callable[[], datetime]
    defaults: BillingDefaults


_current: list[JobContext] = []


def configure(context: JobContext) -> None:
    _current[:] = [context]


def from_config(config: Config) -> JobContext:
    engine = make_engine(config.database_url)
    return JobContext(make_session_factory(engine), lambda: datetime.now(UTC), config.billing)


def current() -> JobContext:
    """The configured context, or one built from the environment (`.env` included)."""
    if not _current:
        from dotenv import load_dotenv

        load_dotenv()
        configure(from_config(Config.from_environ()))
    return _current[0]

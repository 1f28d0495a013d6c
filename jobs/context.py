"""The worker's composition root: what a job runs against (database, clock, billing defaults,
Sippy, webhook signing) and how a job hands work to another.

A worker process builds it from the environment on first use; the embedded mode and the tests
hand it in with `configure`. Job functions stay module-level and take ids or names only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from billing.notifications.webhooks import Sender, post_with_requests
from billing.payments.charge_runner import Gateway
from billing.payments.charging import ChargePolicy
from billing.payments.sippy_client import SippyClient
from billing.settings import BillingDefaults
from infra.archive_runner import ArchivePolicy
from infra.config import Config
from infra.metrics import observe_sippy
from ledger.db import make_engine, make_session_factory

# (queue name, job function, its arguments, job id or None for a fresh one).
Enqueue = Callable[[str, Callable[..., Any], tuple[Any, ...], str | None], None]


@dataclass(frozen=True)
class JobContext:
    sessions: Callable[[], Session]
    clock: Callable[[], datetime]
    defaults: BillingDefaults
    gateway: Gateway | None = None
    # The same client, seen as the source of Sippy's statement (reconciliation).
    sippy: SippyClient | None = None
    charge_policy: ChargePolicy = field(default_factory=ChargePolicy)
    webhook_secret: str | None = None
    send_webhook: Sender = field(default_factory=post_with_requests)
    enqueue: Enqueue | None = None
    # The scheduled archive (None: off, the default; docs/archives.md).
    archive: ArchivePolicy | None = None


_current: list[JobContext] = []


def configure(context: JobContext) -> None:
    _current[:] = [context]


def charge_policy(config: Config) -> ChargePolicy:
    return ChargePolicy(
        retry_backoff=tuple(timedelta(minutes=m) for m in config.retry_backoff_minutes),
        in_flight_grace=timedelta(seconds=config.sippy_in_flight_grace_s),
    )


def sippy_client(config: Config) -> SippyClient | None:
    """The Sippy client `SIPPY_*` describes; None when `SIPPY_URL` is unset (charges wait).
    Its calls are timed and counted in `/metrics` (`smsledger_sippy_*`): billing may not import
    the metrics, so the client is handed their observer here."""
    if not config.sippy_url:
        return None
    return SippyClient(
        config.sippy_url,
        config.sippy_username,
        config.sippy_password,
        config.sippy_timeout_s,
        config.sippy_terminal_faults,
        observe=observe_sippy,
    )


def from_config(
    config: Config,
    enqueue: Enqueue | None = None,
    *,
    sessions: Callable[[], Session] | None = None,
    clock: Callable[[], datetime] | None = None,
    client: SippyClient | None = None,
) -> JobContext:
    """The context `config` describes. A worker gets its own engine and the system clock; the
    embedded mode (and the simulation) pass the app's sessions and clock, jobs then run in
    process; `client` replaces the Sippy client `SIPPY_*` describes."""
    if sessions is None:
        sessions = make_session_factory(make_engine(config.database_url))
    gateway = client or sippy_client(config)
    return JobContext(
        sessions,
        clock or (lambda: datetime.now(UTC)),
        config.billing,
        gateway=gateway,
        sippy=gateway,
        charge_policy=charge_policy(config),
        webhook_secret=config.webhook_signing_secret,
        enqueue=enqueue,
        archive=ArchivePolicy(Path(config.archive_dir), config.retention_months)
        if config.archive_scheduled and config.archive_dir
        else None,
    )


def rq_enqueue(redis_url: str) -> Enqueue:
    """Hand jobs to RQ queues on `redis_url`."""
    from redis import Redis
    from rq import Queue

    connection = Redis.from_url(redis_url)

    def enqueue(
        queue: str, func: Callable[..., Any], args: tuple[Any, ...], job_id: str | None
    ) -> None:
        Queue(queue, connection=connection).enqueue(func, *args, job_id=job_id)

    return enqueue


def current() -> JobContext:
    """The configured context, or one built from the environment (`.env` included): a worker
    hands follow-up jobs to RQ."""
    if not _current:
        from dotenv import load_dotenv

        load_dotenv()
        config = Config.from_environ()
        configure(from_config(config, rq_enqueue(config.redis_url) if config.redis_url else None))
    return _current[0]


def hand_off(
    queue: str, func: Callable[..., Any], args: tuple[Any, ...], job_id: str | None = None
) -> None:
    """Run `func(*args)` as another job: on RQ when the context enqueues, inline otherwise."""
    context = current()
    if context.enqueue is None:
        func(*args)
    else:
        context.enqueue(queue, func, args, job_id)

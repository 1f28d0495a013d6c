"""`GET /metrics` in Prometheus' text format, and the request hooks that count and time every
HTTP request by endpoint (the route's rule, not the raw path, so ids do not explode labels).

Two parts make one answer: what this process (or, with `PROMETHEUS_MULTIPROC_DIR`, every
process) counted (`infra.metrics`), and figures read from the database at this scrape
(`database_families`): invoices by status, open charge attempts, the outbox and webhook
backlogs. Those are never process-local gauges, so each gunicorn worker answers the same
numbers and no dead worker's value lingers. They cost a handful of aggregates over indexed
columns, under a statement timeout; when the database does not answer, the scrape still
answers 200 with everything else and `smsledger_metrics_database_up 0`: an outage must not
blind the alerts on Sippy, jobs and the pre-send check.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session

from api.blueprint import Blueprint
from billing.invoice import InvoiceStatus
from billing.invoicing.stats import invoice_counts
from billing.outbox import Topic
from billing.payments.charging import OPEN_ATTEMPTS
from billing.tables import notifications, outbox, payment_attempts
from infra.metrics import HTTP_LATENCY, HTTP_REQUESTS
from infra.partitions import default_rows, months_ahead
from infra.runtime import now, runtime
from ledger.db import unit_of_work

log = logging.getLogger("smsledger.api")

blp = Blueprint("metrics", __name__, description="Prometheus metrics")

STUCK_CHARGE_AFTER = timedelta(minutes=15)
"""An attempt still open this long is stuck: an unanswered one is looked up after
`SIPPY_IN_FLIGHT_GRACE_S` (120 s by default) by the sweep that runs every minute."""
SCRAPE_STATEMENT_TIMEOUT_MS = 2000
"""PostgreSQL gives up on a scrape's query after this long (Prometheus' scrape timeout is
10 s by default; a connect to a server that drops packets takes up to 5 s)."""


@blp.route("/metrics")
@blp.doc(
    responses={
        "200": {"description": "prometheus-client's text format", "content": {"text/plain": {}}}
    }
)
def metrics() -> Response:
    """Every metric of infra/metrics.py, and the database's figures counted now."""
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    scrape = CollectorRegistry(auto_describe=False)
    scrape.register(_Snapshot([*database_families(now()), *replica_families()]))
    # `content_type`, not `mimetype`: the constant carries its charset, and Flask would add
    # a second one to a text/* mimetype.
    return Response(
        generate_latest(registry) + generate_latest(scrape), content_type=CONTENT_TYPE_LATEST
    )


class _Snapshot(Collector):
    """Families read once, handed to a registry of this scrape only."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def database_families(at: datetime) -> list[Metric]:
    """The database's figures as metric families; only `smsledger_metrics_database_up 0` when
    the database does not answer (never raises)."""
    up = GaugeMetricFamily(
        "smsledger_metrics_database_up",
        "1 when this scrape read the database's figures, 0 when the database did not answer",
    )
    started = time.perf_counter()
    try:
        with unit_of_work(runtime().sessions, commit=False) as session:
            families = _read(session, at)
    except Exception as error:  # an outage, a timeout: answer what the processes counted
        log.warning(
            "Metrics: the database did not answer",
            extra={"reason": f"{type(error).__name__}: {error}"},
        )
        up.add_metric([], 0)
        return [up]
    up.add_metric([], 1)
    took = GaugeMetricFamily(
        "smsledger_metrics_database_seconds", "Time this scrape spent reading the database"
    )
    took.add_metric([], time.perf_counter() - started)
    return [up, took, *families]


def replica_families() -> list[Metric]:
    """With `DATABASE_REPLICA_URL`: whether the replica answers, its lag (absent while
    unknown) and whether reports read from it now (infra.replica)."""
    replica = runtime().replica
    if replica is None:
        return []
    state = replica.state()
    families = [
        _gauge("smsledger_replica_up", "1 when the read replica answered", float(state.up)),
        _gauge(
            "smsledger_replica_serving_reports",
            "1 when reports read from the replica, 0 when from the primary (down or lagging)",
            float(state.reads_from == "replica"),
        ),
    ]
    if state.lag_s is not None:
        families.append(
            _gauge(
                "smsledger_replica_lag_seconds",
                "How far the read replica's replay is behind the primary",
                state.lag_s,
            )
        )
    return families


def _read(session: Session, at: datetime) -> list[Metric]:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text(f"SET LOCAL statement_timeout = {SCRAPE_STATEMENT_TIMEOUT_MS}"))
    return [
        _invoices(session),
        *_open_charges(session, at),
        *_outbox(session, at),
        *_webhooks(session, at),
        *_partitions(session, at),
    ]


def _age(at: datetime, oldest: datetime | None) -> float:
    return max(0.0, (at - oldest).total_seconds()) if oldest is not None else 0.0


def _invoices(session: Session) -> Metric:
    family = GaugeMetricFamily(
        "smsledger_invoices",
        "Invoices by status (read from the database at scrape)",
        labels=["status"],
    )
    counts = invoice_counts(session)
    for status in InvoiceStatus:
        family.add_metric([status.value], counts[status])
    return family


def _open_charges(session: Session, at: datetime) -> list[Metric]:
    """Charge attempts sent (or about to be) whose answer is not recorded: their invoices are
    in `processing`. Read on the (status, started_at) index."""
    a = payment_attempts.c
    opened = a.status.in_(OPEN_ATTEMPTS)
    count, oldest = session.execute(
        sa.select(sa.func.count(), sa.func.min(a.started_at)).where(opened)
    ).one()
    stuck = session.execute(
        sa.select(sa.func.count()).where(opened, a.started_at < at - STUCK_CHARGE_AFTER)
    ).scalar_one()
    return [
        _gauge("smsledger_charges_open", "Charge attempts without a recorded answer", count),
        _gauge(
            "smsledger_charges_stuck",
            "Charge attempts open longer than "
            f"{int(STUCK_CHARGE_AFTER.total_seconds() // 60)} minutes (invoice in processing)",
            stuck,
        ),
        _gauge(
            "smsledger_charges_oldest_open_age_seconds",
            "Age of the oldest open charge attempt (0 when none is open)",
            _age(at, oldest),
        ),
    ]


def _outbox(session: Session, at: datetime) -> list[Metric]:
    """Undispatched outbox rows by topic (the partial index on pending rows)."""
    pending = GaugeMetricFamily(
        "smsledger_outbox_pending", "Outbox rows not yet dispatched, by topic", labels=["topic"]
    )
    age = GaugeMetricFamily(
        "smsledger_outbox_oldest_pending_age_seconds",
        "Age of the oldest undispatched outbox row, by topic (0 when none)",
        labels=["topic"],
    )
    found = {
        topic: (count, oldest)
        for topic, count, oldest in session.execute(
            sa.select(outbox.c.topic, sa.func.count(), sa.func.min(outbox.c.created_at))
            .where(outbox.c.dispatched_at.is_(None))
            .group_by(outbox.c.topic)
        ).all()
    }
    for topic in Topic:  # every known topic, zero included: an alert needs the series
        count, oldest = found.get(topic.value, (0, None))
        pending.add_metric([topic.value], count)
        age.add_metric([topic.value], _age(at, oldest))
    return [pending, age]


def _webhooks(session: Session, at: datetime) -> list[Metric]:
    """Notifications whose webhook is still to be delivered (the partial index on pending),
    and those of them due now. A pending one may wait for its next retry for hours (the
    backoff runs to 12 h), so the backlog an alert watches is the due part: due since its
    retry time, or since it was created when never tried."""
    n = notifications.c
    pending = n.delivery_status == "pending"
    due_since = sa.func.coalesce(n.next_delivery_at, n.created_at)
    total = session.execute(sa.select(sa.func.count()).where(pending)).scalar_one()
    due, oldest = session.execute(
        sa.select(sa.func.count(), sa.func.min(due_since)).where(
            pending, sa.or_(n.next_delivery_at.is_(None), n.next_delivery_at <= at)
        )
    ).one()
    return [
        _gauge("smsledger_webhooks_pending", "Notifications whose webhook is not delivered", total),
        _gauge("smsledger_webhooks_due", "Undelivered webhooks whose (next) attempt is due", due),
        _gauge(
            "smsledger_webhooks_oldest_due_age_seconds",
            "How long the longest-waiting due webhook has been due (0 when none)",
            _age(at, oldest),
        ),
    ]


def _partitions(session: Session, at: datetime) -> list[Metric]:
    """On PostgreSQL, per partitioned table: how many months after this one have their
    partition (the daily job keeps 3), and the rows of its default partition (months that had
    none: they cannot be archived month by month)."""
    ahead, in_default = months_ahead(session, at), default_rows(session)
    if not ahead:
        return []
    ready = GaugeMetricFamily(
        "smsledger_partition_months_ahead",
        "Consecutive months after the current one that have their partition",
        labels=["table"],
    )
    stray = GaugeMetricFamily(
        "smsledger_partition_default_rows",
        "Rows in the table's default partition (months without their own partition)",
        labels=["table"],
    )
    for table, months in ahead.items():
        ready.add_metric([table], months)
        stray.add_metric([table], in_default[table])
    return [ready, stray]


def _gauge(name: str, documentation: str, value: float) -> Metric:
    return GaugeMetricFamily(name, documentation, value=value)


def _start() -> None:
    g.request_started = time.perf_counter()


def _finish(response: Response) -> Response:
    started = g.pop("request_started", None)
    if started is not None and request.endpoint != "metrics.metrics":
        endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
        HTTP_REQUESTS.labels(request.method, endpoint, str(response.status_code)).inc()
        HTTP_LATENCY.labels(request.method, endpoint).observe(time.perf_counter() - started)
    return response


def instrument(app: Flask) -> None:
    """Count and time every request (the blueprint is registered with the API, documented)."""
    app.before_request(_start)
    app.after_request(_finish)

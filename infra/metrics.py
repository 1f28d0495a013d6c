"""What smsledger counts for Prometheus (`/metrics`): one place for every metric, incremented by
the HTTP adapter, the jobs and the services. With several processes (gunicorn workers, RQ
workers) set `PROMETHEUS_MULTIPROC_DIR` to one shared, emptied-at-start directory for all of
them: prometheus-client then aggregates across processes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "smsledger_http_requests_total", "HTTP requests answered", ["method", "endpoint", "status"]
)
HTTP_LATENCY = Histogram(
    "smsledger_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
USAGE_EVENTS = Counter(
    "smsledger_usage_events_total",
    "Usage events received",
    ["outcome"],  # posted, duplicate
)
INVOICES = Gauge(
    "smsledger_invoices", "Invoices by status (read from the database at scrape)", ["status"]
)
CHARGES = Counter(
    "smsledger_charge_outcomes_total",
    "Charge steps by what happened (paid, failed, unknown, in_flight, ...)",
    ["outcome"],
)
JOB_DURATION = Histogram(
    "smsledger_job_duration_seconds",
    "Time a job took",
    ["job"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900),
)
JOB_FAILURES = Counter("smsledger_job_failures_total", "Jobs that raised", ["job"])
DELIVERIES = Counter(
    "smsledger_notification_deliveries_total",
    "Webhook deliveries by outcome (delivered, retrying, failed, skipped)",
    ["outcome"],
)


@contextmanager
def timed_job(name: str) -> Iterator[None]:
    """Observe a job's duration, and count it when it raises."""
    started = time.perf_counter()
    try:
        yield
    except BaseException:
        JOB_FAILURES.labels(name).inc()
        raise
    finally:
        JOB_DURATION.labels(name).observe(time.perf_counter() - started)

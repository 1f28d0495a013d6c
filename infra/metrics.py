"""What smsledger counts for Prometheus (`/metrics`): one place for every metric, incremented by
the HTTP adapter and the jobs. With several processes (gunicorn workers, RQ workers) set
`PROMETHEUS_MULTIPROC_DIR` to one shared, emptied-at-start directory for all of them:
prometheus-client then aggregates across processes.

The services below this layer (billing, reconciliation) never import this module (the layers
contract): what they measure reaches it through a callable the composition root hands them,
like `observe_sippy` for the Sippy client (`jobs.context.sippy_client`). Figures read from the
database at scrape time (invoices by status, backlogs) are not here: `api.metrics` collects
them per scrape, so every process and every scrape sees the database's own numbers.

deploy/prometheus/alerts.yml and deploy/grafana/smsledger.json use these names;
tests/api/test_alert_rules.py fails when one of them refers to a metric that is gone."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram

from billing.payments.sippy_client import SIPPY_METHODS
from billing.settings import FREQUENCIES

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
PRESEND_FAIL_OPEN = Counter(
    "smsledger_presend_fail_open_total",
    "Pre-send checks answered 503 allowed=true because the engine could not decide",
    ["reason"],  # database_unavailable, error
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
BILLING_CYCLES = Counter(
    "smsledger_billing_cycles_total",
    "Billing cycles run by a job, by frequency and outcome (ok, failed)",
    ["frequency", "outcome"],
)
BILLING_CYCLE_LAST_SUCCESS = Gauge(
    "smsledger_billing_cycle_last_success_timestamp_seconds",
    "When a billing cycle of this frequency last finished without errors (Unix time)",
    ["frequency"],
    # The newest across processes, and kept after the process that set it ends: a cycle runs
    # in an RQ work horse that lives for one job.
    multiprocess_mode="max",
)
DELIVERIES = Counter(
    "smsledger_notification_deliveries_total",
    "Webhook deliveries by outcome (delivered, retrying, failed, skipped)",
    ["outcome"],
)

SIPPY_OUTCOMES = (
    "ok",
    "fault_terminal",  # an XML-RPC fault no retry cures (SIPPY_TERMINAL_FAULT_CODES)
    "fault_retryable",  # any other fault code
    "auth_failed",  # HTTP 401: our credentials, a configuration error
    "timeout",
    "transport_error",  # connection refused or reset, HTTP 5xx or another status
    "malformed",  # an answer that is not XML-RPC or not a struct
)
SIPPY_LATENCY = Histogram(
    "smsledger_sippy_request_duration_seconds",
    "Time a Sippy XML-RPC call took, by method and outcome",
    ["method", "outcome"],
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
SIPPY_REQUESTS = Counter(
    "smsledger_sippy_requests_total",
    "Sippy XML-RPC calls by method and outcome (" + ", ".join(SIPPY_OUTCOMES) + ")",
    ["method", "outcome"],
)


def observe_sippy(method: str, outcome: str, seconds: float) -> None:
    """The Sippy client's observer (`SippyClient(observe=...)`): one call's method, outcome
    and duration. Both labels come from fixed lists, so the series stay bounded."""
    method = method if method in SIPPY_METHODS else "other"
    outcome = outcome if outcome in SIPPY_OUTCOMES else "other"
    SIPPY_LATENCY.labels(method, outcome).observe(seconds)
    SIPPY_REQUESTS.labels(method, outcome).inc()


def record_billing_cycle(frequency: str, errors: int, finished_at: float) -> None:
    """Count a billing cycle; a cycle without errors also moves its last-success time. Every
    runner of a cycle calls it, through `jobs.billing.run_billing_cycle`."""
    BILLING_CYCLES.labels(frequency, "failed" if errors else "ok").inc()
    if not errors:
        BILLING_CYCLE_LAST_SUCCESS.labels(frequency).set(finished_at)


JOBS = (
    *(f"billing_cycle_{frequency}" for frequency in FREQUENCIES),
    "charge_invoice",
    "refund_invoice",
    "dispatch_charges",
    "deliver_notifications",
    "reconcile_yesterday",
)


def _start_at_zero() -> None:
    """Create the series the alert rules watch with `increase()` at 0: a counter whose first
    sample is already 1 shows no increase, so the first failure after a restart would go
    unseen (deploy/prometheus/alerts.yml)."""
    for frequency in FREQUENCIES:
        for outcome in ("ok", "failed"):
            BILLING_CYCLES.labels(frequency, outcome)
    for job in JOBS:
        JOB_FAILURES.labels(job)
    for outcome in ("paid", "failed"):
        CHARGES.labels(outcome)
    for reason in ("database_unavailable", "error"):
        PRESEND_FAIL_OPEN.labels(reason)


_start_at_zero()


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

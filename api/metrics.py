"""`GET /metrics` in Prometheus' text format, and the request hooks that count and time every
HTTP request by endpoint (the route's rule, not the raw path, so ids do not explode labels)."""

from __future__ import annotations

import os
import time

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)

from api.blueprint import Blueprint
from billing.invoicing.stats import invoice_counts
from infra.metrics import HTTP_LATENCY, HTTP_REQUESTS, INVOICES
from infra.runtime import transaction

blp = Blueprint("metrics", __name__, description="Prometheus metrics")


@blp.route("/metrics")
@blp.doc(
    responses={
        "200": {"description": "prometheus-client's text format", "content": {"text/plain": {}}}
    }
)
def metrics() -> Response:
    """Every metric of billing/metrics.py; invoices by status are counted now."""
    for status, count in transaction(invoice_counts).items():
        INVOICES.labels(status).set(count)
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    # `content_type`, not `mimetype`: the constant carries its charset, and Flask would add
    # a second one to a text/* mimetype.
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


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

"""Webhook delivery to a real HTTP receiver on 127.0.0.1: signed bodies that verify, retries
with backoff until a success and none after it, a delivery log row per try, and notifications
without a URL stored for the user only."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from billing.customers import create_customer
from billing.notifications.delivery_runner import deliver_due
from billing.notifications.store import store_notifications
from billing.notifications.webhooks import (
    DELIVERY_BACKOFF,
    SIGNATURE_HEADER,
    deliveries_of,
    post_with_requests,
    verify_signature,
)
from billing.settings import put_settings
from billing.tables import notifications
from ledger.db import unit_of_work
from tests.conftest import Clock
from tests.scenarios import DEFAULTS, at, rows

pytestmark = pytest.mark.postgres

SECRET = "whsec-test"


class Receiver:
    """An HTTP endpoint that records what it is sent and answers the statuses it is given."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.statuses: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((dict(self.headers), body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/sms"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.stop()


def notify(sessions: sessionmaker[Session], clock: Clock, user: str, key: str) -> None:
    with unit_of_work(sessions) as session:
        store_notifications(
            session,
            [
                {
                    "customer_id": user,
                    "kind": "invoice_paid",
                    "dedupe_key": key,
                    "payload": {"invoice_id": key, "amount_micros": 1_230_000, "currency": "USD"},
                    "created_at": clock.now,
                }
            ],
        )


def deliver(sessions: sessionmaker[Session], clock: Clock, secret: str | None = SECRET) -> Any:
    return deliver_due(sessions, post_with_requests(2.0), secret, clock, DEFAULTS)


def customer(sessions: sessionmaker[Session], user: str, url: str | None) -> None:
    with unit_of_work(sessions) as session:
        create_customer(session, user, "USD", at(2026, 11, 1), webhook_url=url)


def test_a_delivered_webhook_is_signed_and_its_body_is_the_public_notification(
    sessions: sessionmaker[Session], clock: Clock, receiver: Receiver
) -> None:
    customer(sessions, "42", receiver.url)
    notify(sessions, clock, "42", "paid-1")
    assert deliver(sessions, clock).report() == {
        "delivered": 1,
        "retrying": 0,
        "failed": 0,
        "skipped": 0,
    }
    ((headers, body),) = receiver.received
    assert verify_signature(SECRET, headers[SIGNATURE_HEADER], body, clock.now.timestamp())
    assert not verify_signature("other", headers[SIGNATURE_HEADER], body, clock.now.timestamp())
    assert not verify_signature(
        SECRET, headers[SIGNATURE_HEADER], body + b" ", clock.now.timestamp()
    )
    late = clock.now.timestamp() + 3600
    assert not verify_signature(SECRET, headers[SIGNATURE_HEADER], body, late)
    sent = json.loads(body)
    assert sent["type"] == "invoice_paid" and sent["user_id"] == "42"
    assert sent["data"] == {"invoice_id": "paid-1", "amount": "1.23", "currency": "USD"}
    (row,) = rows(sessions, notifications)
    assert (row.delivery_status, row.delivery_attempts) == ("delivered", 1)
    assert deliver(sessions, clock).delivered == 0 and len(receiver.received) == 1


def test_failed_deliveries_are_retried_with_backoff_and_stop_after_success(
    sessions: sessionmaker[Session], clock: Clock, receiver: Receiver
) -> None:
    customer(sessions, "42", receiver.url)
    notify(sessions, clock, "42", "paid-1")
    receiver.statuses = [500, 503]
    assert deliver(sessions, clock).retrying == 1
    assert deliver(sessions, clock).retrying == 0  # not due yet
    clock.now += DELIVERY_BACKOFF[0]
    assert deliver(sessions, clock).retrying == 1
    clock.now += DELIVERY_BACKOFF[1]
    assert deliver(sessions, clock).delivered == 1
    clock.now += timedelta(days=1)
    assert deliver(sessions, clock).report()["delivered"] == 0
    assert len(receiver.received) == 3
    (row,) = rows(sessions, notifications)
    with unit_of_work(sessions) as session:
        log = deliveries_of(session, row.id)
    assert [(d.attempt_no, d.status_code, d.succeeded) for d in log] == [
        (1, 500, False),
        (2, 503, False),
        (3, 200, True),
    ]


def test_a_webhook_that_never_answers_well_is_failed_after_the_last_retry(
    sessions: sessionmaker[Session], clock: Clock, receiver: Receiver
) -> None:
    customer(sessions, "42", receiver.url)
    notify(sessions, clock, "42", "paid-1")
    receiver.statuses = [500] * 10
    outcomes = []
    for wait in (timedelta(0), *DELIVERY_BACKOFF):
        clock.now += wait
        outcomes.append(deliver(sessions, clock).report())
    assert [o["retrying"] for o in outcomes] == [1] * 5 + [0]
    assert outcomes[-1]["failed"] == 1
    (row,) = rows(sessions, notifications)
    assert (row.delivery_status, row.delivery_attempts) == ("failed", 6)
    clock.now += timedelta(days=7)
    deliver(sessions, clock)
    assert len(receiver.received) == 6


def test_an_unreachable_url_counts_as_a_failed_try(
    sessions: sessionmaker[Session], clock: Clock
) -> None:
    customer(sessions, "42", "http://127.0.0.1:9/nothing-listens")
    notify(sessions, clock, "42", "paid-1")
    assert deliver(sessions, clock).retrying == 1
    (row,) = rows(sessions, notifications)
    with unit_of_work(sessions) as session:
        (entry,) = deliveries_of(session, row.id)
    assert entry.status_code is None and "ConnectionError" in entry.error


def test_notifications_without_a_url_are_kept_for_the_user_and_the_settings_url_serves(
    sessions: sessionmaker[Session], clock: Clock, receiver: Receiver
) -> None:
    customer(sessions, "42", None)
    customer(sessions, "43", None)
    with unit_of_work(sessions) as session:
        put_settings(session, "43", {"webhook_url": receiver.url}, DEFAULTS, clock.now)
    notify(sessions, clock, "42", "a")
    notify(sessions, clock, "43", "b")
    summary = deliver(sessions, clock)
    assert (summary.skipped, summary.delivered) == (1, 1)
    statuses = {row.customer_id: row.delivery_status for row in rows(sessions, notifications)}
    assert statuses == {"42": "skipped", "43": "delivered"}


def test_nothing_is_sent_unsigned(
    sessions: sessionmaker[Session], clock: Clock, receiver: Receiver
) -> None:
    customer(sessions, "42", receiver.url)
    notify(sessions, clock, "42", "paid-1")
    assert deliver(sessions, clock, secret=None).report()["delivered"] == 0
    assert receiver.received == []
    assert deliver(sessions, clock).delivered == 1

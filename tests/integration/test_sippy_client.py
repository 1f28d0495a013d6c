"""The Sippy client against the simulator over HTTP: Sippy's two balance signs normalised to
one, every answer sorted into accepted / declined / unknown, payment lookups by reference across
pages, and wire formats pinned. No database."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from billing.payments.sippy_client import SippyAuthFailed, SippyClient, SippyFault, SippyUnreachable
from billing.payments.sippy_wire import format_time, from_double, parse_time, to_double
from ledger.money import Money
from sippy_simulator.server import SimulatorHandle

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture
def sim(start_sim: Callable[..., SimulatorHandle]) -> SimulatorHandle:
    """A simulator at T0 with two accounts of this module's own: 1001 in USD, 1002 in EUR."""
    return start_sim(
        clock=lambda: T0,
        accounts=[
            {
                "i_account": 1001,
                "username": "a",
                "currency": "USD",
                "balance": "10.00",
                "credit_limit": "0",
            },
            {
                "i_account": 1002,
                "username": "b",
                "currency": "EUR",
                "balance": "-3.50",
                "credit_limit": "20",
            },
        ],
    )


@pytest.fixture
def client(sim: SimulatorHandle) -> SippyClient:
    return SippyClient(sim.xmlapi_url, "smsledger", "secret", timeout_s=0.5)


def usd(text: str) -> Money:
    return Money.parse(text, "USD")


def test_both_balance_methods_read_the_same_ui_sign(client: SippyClient) -> None:
    """sippy-api.md: 10.00 prepaid, debit 2.50 -> listAccounts 7.5, getAccountInfo -7.5."""
    assert client.debit(1001, usd("2.50"), "r1", T0).status == "accepted"
    info = client.account_balance(1001)
    listed = {a.account_id: a for a in client.list_accounts()}
    assert info.balance_micros == listed[1001].balance_micros == 7_500_000
    assert info.available_micros == 7_500_000
    owing = client.account_balance(1002)
    assert owing == listed[1002]
    assert (owing.balance_micros, owing.credit_limit_micros) == (-3_500_000, 20_000_000)
    assert owing.available_micros == 16_500_000 and owing.currency == "EUR"
    raw = client.call("getAccountInfo", {"i_account": 1001})["balance"]
    assert raw == -7.5  # the wire really carries the opposite sign: the client flips it


def test_answers_are_sorted_into_accepted_declined_and_unknown(
    sim: SimulatorHandle, client: SippyClient
) -> None:
    assert client.debit(1001, usd("20.00"), "r", T0).status == "declined"  # 402, terminal
    declined = client.debit(1001, Money.parse("1", "EUR"), "r", T0)
    assert (declined.code, declined.retryable) == ("409", False)
    sim.state.inject_fault(method="accountDebit", kind="fault", fault_code=500, fault_string="x")
    temporary = client.debit(1001, usd("1"), "r", T0)
    assert (temporary.status, temporary.code, temporary.retryable) == ("declined", "500", True)
    for kind, code in (("reset", "connection"), ("http_5xx", "http_5xx"), ("slow", "timeout")):
        sim.state.inject_fault(method="accountDebit", kind=kind, delay_s=1)
        outcome = client.debit(1001, usd("1"), f"r-{kind}", T0)
        assert (outcome.status, outcome.code) == ("unknown", code)
    sim.state.inject_fault(method="accountDebit", kind="http_401")
    refused = client.debit(1001, usd("1"), "r", T0)
    assert (refused.status, refused.code, refused.retryable) == ("declined", "http_401", False)


def test_other_calls_raise_typed_errors(sim: SimulatorHandle, client: SippyClient) -> None:
    with pytest.raises(SippyFault) as fault:
        client.account_balance(9999)
    assert fault.value.fault_code == 403
    with pytest.raises(SippyAuthFailed):
        SippyClient(sim.xmlapi_url, "smsledger", "nope").account_balance(1001)
    with pytest.raises(SippyUnreachable) as unreachable:
        SippyClient("http://127.0.0.1:9/xmlapi/xmlapi", "u", "p", 0.5).list_accounts()
    assert unreachable.value.code == "connection"
    with pytest.raises(SippyUnreachable) as not_xmlrpc:
        SippyClient(sim.url + "/_sim/accounts", None, None).list_accounts()
    assert not_xmlrpc.value.code == "http_400"


class NotXml(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "9")
        self.end_headers()
        self.wfile.write(b"<html>oops")

    def log_message(self, *args: Any) -> None:
        pass


def test_an_unreadable_answer_is_an_unknown_outcome() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), NotXml)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = SippyClient(f"http://127.0.0.1:{server.server_port}/", None, None, 2)
        outcome = client.debit(1001, usd("1"), "r", T0)
        assert (outcome.status, outcome.code) == ("unknown", "malformed")
    finally:
        server.shutdown()
        server.server_close()


def test_a_debit_is_found_by_its_reference_across_pages(
    sim: SimulatorHandle, client: SippyClient
) -> None:
    for n in range(205):
        assert client.debit(1001, usd("0.01"), f"bulk-{n}", T0).status == "accepted"
    client.call(
        "accountCredit",
        {"i_account": 1001, "amount": 1.0, "currency": "USD", "payment_notes": "bulk-204"},
    )
    found = client.find_debit(1001, "bulk-204", T0 - DAY, T0 + DAY)
    assert found is not None and found.type == "debit" and found.amount == usd("0.01")
    assert found.time == T0 and found.succeeded
    assert client.find_debit(1001, "bulk-205", T0 - DAY, T0 + DAY) is None
    assert client.find_debit(1001, "bulk-1", T0 + DAY, T0 + 2 * DAY) is None  # outside window
    assert len(client.payments(None, T0 - DAY, T0 + DAY, "credit")) == 1


def test_an_https_url_is_spoken_with_tls(start_sim: Callable[..., SimulatorHandle]) -> None:
    """TLS comes from requests: an https URL to a plain-HTTP port fails as transport."""
    sim = start_sim()
    port = sim.url.rsplit(":", 1)[1]
    tls = SippyClient(f"https://127.0.0.1:{port}/xmlapi/xmlapi", "smsledger", "secret", 2)
    with pytest.raises(SippyUnreachable):
        tls.list_accounts()
    assert tls.debit(1001, usd("1"), "r", T0).status == "unknown"
    assert sim.state.payments() == []


def test_sippy_dates_are_english_utc_whatever_the_locale() -> None:
    assert format_time(datetime(2009, 11, 18, 9, 57, 29, tzinfo=UTC)) == (
        "09:57:29.000 GMT Wed Nov 18 2009"
    )
    moment = datetime(2026, 2, 1, 23, 5, 0, tzinfo=UTC)
    assert parse_time(format_time(moment)) == moment
    for bad in ("2026-02-01", "09:57:29.000 GMT Mitt Nov 18 2009", ""):
        with pytest.raises(ValueError):
            parse_time(bad)


def test_wire_amounts_are_exact_in_the_minor_unit() -> None:
    assert to_double(20_000, "USD") == 0.02 and to_double(1_230_000, "JPY") == 1.0
    assert from_double(0.1 + 0.2, "USD") == 300_000  # 0.30000000000000004 -> 0.30
    assert from_double(-7.5, "USD") == -7_500_000 and from_double(3, "BHD") == 3_000_000

"""The Sippy simulator driven over real HTTP as a client would: XML-RPC bodies from
`xmlrpc.client`, Digest auth from `requests`, and the JSON control API. No database."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import xmlrpc.client
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from requests.auth import HTTPDigestAuth

from sippy_simulator.server import SimulatorHandle, load_accounts
from sippy_simulator.switch import (
    FAULT_BAD_PARAMETER,
    FAULT_BLOCKED,
    FAULT_CODES,
    FAULT_CURRENCY_MISMATCH,
    FAULT_INSUFFICIENT_CREDIT,
    FAULT_NOT_REGISTERED,
    FAULT_NOT_XMLRPC,
    FAULT_PAYMENT_NOT_FOUND,
    FAULT_UNKNOWN_METHOD,
    SimulatorState,
    format_sippy_time,
    parse_sippy_time,
)
from tests.conftest import Clock

T0 = datetime(2009, 11, 18, 9, 57, 29, tzinfo=UTC)


class Client:
    """What the real client does: one XML-RPC struct, POSTed as text/xml with digest auth."""

    def __init__(self, sim: SimulatorHandle, password: str = "secret") -> None:
        self.url = sim.xmlapi_url
        self.session = requests.Session()
        self.session.auth = HTTPDigestAuth("smsledger", password)

    def post(self, method: str, params: Any, timeout: float = 5) -> requests.Response:
        body = xmlrpc.client.dumps((params,), method, allow_none=True).encode()
        headers = {"Content-Type": "text/xml"}
        return self.session.post(self.url, data=body, headers=headers, timeout=timeout)

    def call(self, method: str, params: Any, timeout: float = 5) -> Any:
        """The answer struct. Raises: xmlrpc.client.Fault."""
        response = self.post(method, params, timeout)
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"] == "text/xml"
        return xmlrpc.client.loads(response.content)[0][0]

    def debit(self, i_account: int, amount: float, **more: Any) -> Any:
        return self.call("accountDebit", charge(i_account, amount, **more))


@pytest.fixture
def clock() -> Clock:
    """The clock of the simulator (`sim`, in tests.conftest): T0, moved by hand."""
    return Clock(T0)


@pytest.fixture
def client(sim: SimulatorHandle) -> Iterator[Client]:
    client = Client(sim)
    yield client
    client.session.close()


def charge(i_account: int = 1001, amount: float = 1.0, **more: Any) -> dict[str, Any]:
    """The struct of accountDebit / accountCredit / accountAddFunds."""
    return {"i_account": i_account, "amount": amount, "currency": "USD"} | more


def fault_of(client: Client, method: str, params: Any) -> xmlrpc.client.Fault:
    with pytest.raises(xmlrpc.client.Fault) as caught:
        client.call(method, params)
    return caught.value


def control(sim: SimulatorHandle, verb: str, path: str, body: Any = None) -> requests.Response:
    return requests.request(verb, sim.url + path, json=body, timeout=5)


# -- transport and authentication -------------------------------------------------------------


def test_digest_with_the_right_password_is_answered(client: Client) -> None:
    first = client.call("getAccountInfo", {"i_account": 1001})
    again = client.call("getAccountInfo", {"username": "demo1002"})  # reuses the nonce
    assert (first["i_account"], again["i_account"]) == (1001, 1002)


def test_a_wrong_password_gets_401_with_a_digest_challenge(sim: SimulatorHandle) -> None:
    client = Client(sim, password="wrong")
    with client.session:
        response = client.post("accountDebit", charge())
    assert response.status_code == 401
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Digest ")
    assert 'realm="sippy"' in challenge and 'qop="auth"' in challenge and "nonce=" in challenge
    assert sim.state.payments() == []


def test_no_credentials_at_all_get_401(sim: SimulatorHandle) -> None:
    body = xmlrpc.client.dumps(({"i_account": 1001},), "getAccountInfo").encode()
    response = requests.post(sim.xmlapi_url, data=body, timeout=5)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Digest ")


def test_a_forged_digest_response_is_refused(sim: SimulatorHandle) -> None:
    body = xmlrpc.client.dumps(({"i_account": 1001},), "getAccountInfo").encode()
    nonce_source = requests.post(sim.xmlapi_url, data=body, timeout=5)
    nonce = nonce_source.headers["WWW-Authenticate"].split('nonce="')[1].split('"')[0]
    forged = (
        f'Digest username="smsledger", realm="sippy", nonce="{nonce}", uri="/xmlapi/xmlapi", '
        f'qop=auth, nc=00000001, cnonce="abc", response="{"0" * 32}"'
    )
    for header in (forged, "Basic c21zbGVkZ2VyOnNlY3JldA==", "Digest garbage"):
        answer = requests.post(
            sim.xmlapi_url, data=body, headers={"Authorization": header}, timeout=5
        )
        assert answer.status_code == 401


def test_without_digest_a_plain_xmlrpc_client_is_answered(
    start_sim: Callable[..., SimulatorHandle],
) -> None:
    sim = start_sim(digest=False)
    with xmlrpc.client.ServerProxy(sim.xmlapi_url, allow_none=True) as proxy:
        info: Any = proxy.getAccountInfo({"i_account": 1001})
    assert info["username"] == "demo1001"


def test_a_body_that_is_not_one_xmlrpc_struct_is_a_fault(client: Client) -> None:
    garbage = client.session.post(client.url, data=b"<not-xml", timeout=5)
    assert garbage.status_code == 200
    with pytest.raises(xmlrpc.client.Fault) as caught:
        xmlrpc.client.loads(garbage.content)
    assert caught.value.faultCode == FAULT_NOT_XMLRPC
    assert fault_of(client, "getAccountInfo", 1001).faultCode == FAULT_BAD_PARAMETER
    assert fault_of(client, "chargeEverybody", {}).faultCode == FAULT_UNKNOWN_METHOD


def test_unknown_paths_and_verbs_are_refused(sim: SimulatorHandle) -> None:
    assert requests.get(sim.xmlapi_url, timeout=5).status_code == 405
    assert requests.get(sim.url + "/elsewhere", timeout=5).status_code == 404


# -- accounts and balances --------------------------------------------------------------------


def test_demo_accounts_are_1001_to_1010_with_100_usd(sim: SimulatorHandle) -> None:
    accounts = sim.state.accounts()
    assert [a["i_account"] for a in accounts] == list(range(1001, 1011))
    assert {(a["currency"], a["balance"], a["credit_limit"], a["blocked"]) for a in accounts} == {
        ("USD", Decimal("100.00"), Decimal("0.00"), False)
    }
    assert accounts[0]["username"] == "demo1001"


def test_a_debit_lowers_the_ui_balance_and_raises_getaccountinfo(
    sim: SimulatorHandle, client: Client
) -> None:
    """sippy-api.md's worked example: 10.00 prepaid, limit 0, debit 2.50 -> 7.5 and -7.5."""
    sim.state.put_account(sim.state.account(1001) | {"balance": Decimal("10.00")})

    def balances() -> tuple[float, float]:
        listed = client.call("listAccounts", {"offset": 0, "limit": 1})["accounts"][0]
        return listed["balance"], client.call("getAccountInfo", {"i_account": 1001})["balance"]

    assert balances() == (10.0, -10.0)
    assert client.debit(1001, 2.5) == {"result": "OK"}
    assert balances() == (7.5, -7.5)


def test_credit_and_add_funds_raise_the_balance_as_credit_rows(
    sim: SimulatorHandle, client: Client
) -> None:
    params = charge(1003, 0.1)
    assert client.call("accountCredit", params) == {"result": "OK"}
    assert client.call("accountAddFunds", params | {"amount": 20}) == {"result": "OK"}
    assert sim.state.balance(1003) == Decimal("120.10")
    rows = sim.state.payments(1003)
    assert [(r["type"], r["method"], r["amount"]) for r in rows] == [
        ("credit", "accountCredit", Decimal("0.10")),
        ("credit", "accountAddFunds", Decimal("20.00")),
    ]


def test_wire_amounts_are_quantised_to_the_currency(sim: SimulatorHandle, client: Client) -> None:
    client.debit(1001, 0.125)  # rounds half up to 0.13
    assert sim.state.balance(1001) == Decimal("99.87")
    rounds_to_zero = fault_of(client, "accountDebit", charge(1001, 0.004))
    assert rounds_to_zero.faultCode == FAULT_BAD_PARAMETER


def test_create_account_gives_a_new_i_account(sim: SimulatorHandle, client: Client) -> None:
    created = client.call("createAccount", {"username": "alice", "balance": 5.5})
    assert created == {"result": "OK", "i_account": 1011}
    info = client.call("getAccountInfo", {"username": "alice"})
    assert (info["i_account"], info["balance"], info["base_currency"]) == (1011, -5.5, "USD")
    duplicate = fault_of(client, "createAccount", {"username": "alice"})
    assert duplicate.faultCode == FAULT_BAD_PARAMETER


# -- payment history --------------------------------------------------------------------------


def test_every_charge_appends_a_payment_row_with_its_notes(
    sim: SimulatorHandle, client: Client
) -> None:
    client.debit(1001, 2.5, payment_notes="smsledger:INV-1:A-1")
    rows = client.call("getPaymentsList", {"i_account": 1001, "type": "debit"})["payments"]
    assert len(rows) == 1
    row = rows[0]
    assert row["notes"] == "smsledger:INV-1:A-1"
    assert row | {"amount": 2.5, "currency": "USD", "type": "debit", "tx_result": 1} == row
    assert row["payment_time"] == "09:57:29.000 GMT Wed Nov 18 2009"  # the injected clock
    info = client.call("getPaymentInfo", {"i_account": 1001, "i_payment": row["i_payment"]})
    assert info["result"] == "OK" and info["tx_id"] == row["tx_id"] and info["amount"] == 2.5
    stored = sim.state.payments(1001)[0]
    assert (stored["amount"], stored["payment_time"]) == (Decimal("2.50"), T0)
    missing = {"i_account": 1002, "i_payment": row["i_payment"]}
    assert fault_of(client, "getPaymentInfo", missing).faultCode == FAULT_PAYMENT_NOT_FOUND


def test_payments_list_filters_by_type_account_and_window_and_paginates(
    client: Client, clock: Clock
) -> None:
    for minute in range(5):  # debits on 1001 at T0, T0+1m, ... T0+4m
        clock.now = T0 + timedelta(minutes=minute)
        client.debit(1001, 1.0, payment_notes=f"d{minute}")
    client.debit(1002, 1.0, payment_notes="other account")
    client.call("accountCredit", charge(1001, 3.0))
    late = format_sippy_time(T0 + timedelta(hours=1))
    client.debit(1001, 1.0, payment_notes="sent time", payment_time=late)

    def notes(**params: Any) -> list[str]:
        rows = client.call("getPaymentsList", params)["payments"]
        return [row["notes"] for row in rows]

    window = {
        "start_date": format_sippy_time(T0 + timedelta(minutes=1)),
        "end_date": format_sippy_time(T0 + timedelta(minutes=4)),  # exclusive
    }
    assert notes(i_account=1001, type="debit", **window) == ["d1", "d2", "d3"]
    assert notes(i_account=1001, type="debit", offset=1, limit=2) == ["d1", "d2"]
    assert notes(i_account=1001, type="credit") == [""]
    assert notes(type="debit", offset=5, limit=1) == ["other account"]
    assert notes(i_account=1001, start_date=late) == ["sent time"]
    assert len(notes()) == 8


# -- refusals ---------------------------------------------------------------------------------


def test_strict_credit_refuses_a_debit_past_the_limit(sim: SimulatorHandle, client: Client) -> None:
    sim.state.put_account(
        {
            "i_account": 1001,
            "username": "demo1001",
            "currency": "USD",
            "balance": "10.00",
            "credit_limit": "5.00",
        }
    )
    refused = fault_of(client, "accountDebit", charge(1001, 15.01))
    assert refused.faultCode == FAULT_INSUFFICIENT_CREDIT
    assert sim.state.balance(1001) == Decimal("10.00") and sim.state.payments() == []
    client.debit(1001, 15.0)  # exactly down to -credit_limit is allowed
    assert sim.state.balance(1001) == Decimal("-5.00")


def test_without_strict_credit_a_debit_may_pass_the_limit(
    start_sim: Callable[..., SimulatorHandle],
) -> None:
    sim = start_sim(digest=False, strict_credit=False)
    with xmlrpc.client.ServerProxy(sim.xmlapi_url) as proxy:
        proxy.accountDebit(charge(1001, 150.0))
    assert sim.state.balance(1001) == Decimal("-50.00")


def test_a_blocked_account_refuses_debits_but_takes_credits(
    sim: SimulatorHandle, client: Client
) -> None:
    sim.state.put_account(sim.state.account(1004) | {"blocked": True})
    assert fault_of(client, "accountDebit", charge(1004)).faultCode == FAULT_BLOCKED
    client.call("accountCredit", charge(1004))
    assert client.call("getAccountInfo", {"i_account": 1004})["blocked"] is True
    assert [p["type"] for p in sim.state.payments()] == ["credit"]


@pytest.mark.parametrize(
    "params",
    [{"i_account": 999}, {"username": "nobody"}],
    ids=["i_account", "username"],
)
def test_an_unknown_account_is_not_registered(client: Client, params: dict[str, Any]) -> None:
    fault = fault_of(client, "getAccountInfo", params)
    assert (fault.faultCode, fault.faultString) == (403, "Account is not registered")
    assert fault_of(client, "accountDebit", charge(999)).faultCode == FAULT_NOT_REGISTERED


def test_a_charge_in_another_currency_is_a_mismatch(sim: SimulatorHandle, client: Client) -> None:
    fault = fault_of(client, "accountDebit", {"i_account": 1001, "amount": 1.0, "currency": "EUR"})
    assert fault.faultCode == FAULT_CURRENCY_MISMATCH
    assert sim.state.payments() == []


@pytest.mark.parametrize(
    "change",
    [
        {"amount": 0.0},
        {"amount": -1.0},
        {"amount": "1.00"},
        {"amount": None},
        {"currency": None},
        {"i_account": None},
        {"payment_time": "2009-11-18T09:57:29Z"},
        {"payment_time": "09:57:29.000 GMT Thu Nov 18 2009"},  # the 18th was a Wednesday
        {"payment_notes": 7},
        {"amount": 1e300},
    ],
)
def test_a_missing_or_invalid_parameter_is_refused(
    sim: SimulatorHandle, client: Client, change: dict[str, Any]
) -> None:
    params = charge() | change
    params = {key: value for key, value in params.items() if value is not None}
    fault = fault_of(client, "accountDebit", params)
    assert fault.faultCode == FAULT_BAD_PARAMETER
    assert fault.faultString.startswith(FAULT_CODES[FAULT_BAD_PARAMETER])
    assert sim.state.payments() == []


@pytest.mark.parametrize(
    "params",
    [{"type": "refund"}, {"start_date": "yesterday"}, {"offset": -1}, {"limit": "10"}],
)
def test_a_bad_payments_list_query_is_refused(client: Client, params: dict[str, Any]) -> None:
    assert fault_of(client, "getPaymentsList", params).faultCode == FAULT_BAD_PARAMETER


# -- fault injection --------------------------------------------------------------------------


def test_an_injected_fault_answers_it_and_applies_nothing(
    sim: SimulatorHandle, client: Client
) -> None:
    sim.state.inject_fault(method="accountDebit", kind="fault", fault_code=500, fault_string="Boom")
    fault = fault_of(client, "accountDebit", charge())
    assert (fault.faultCode, fault.faultString) == (500, "Boom")
    assert sim.state.payments() == [] and sim.state.balance(1001) == Decimal("100.00")
    client.debit(1001, 1.0)  # count 1: the next call goes through
    assert len(sim.state.payments()) == 1


def test_an_injected_401_is_seen_by_the_digest_client(sim: SimulatorHandle, client: Client) -> None:
    client.call("getAccountInfo", {"i_account": 1001})  # the client now holds a nonce
    sim.state.inject_fault(kind="http_401", count=2)
    for _ in range(2):
        response = client.post("accountDebit", charge())
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Digest ")
    assert sim.state.payments() == [] and sim.state.faults() == []
    client.debit(1001, 1.0)


@pytest.mark.parametrize("status", [500, 503])
def test_an_injected_5xx_applies_nothing(sim: SimulatorHandle, client: Client, status: int) -> None:
    sim.state.inject_fault(kind="http_5xx", fault_code=status, fault_string="Service Unavailable")
    response = client.post("accountDebit", charge())
    assert (response.status_code, response.text) == (status, "Service Unavailable")
    assert sim.state.payments() == []


def test_a_slow_answer_is_applied_after_the_delay(sim: SimulatorHandle, client: Client) -> None:
    sim.state.inject_fault(method="accountDebit", kind="slow", delay_s=0.3)
    started = time.monotonic()
    assert client.debit(1001, 1.0) == {"result": "OK"}
    assert time.monotonic() - started >= 0.3
    assert len(sim.state.payments()) == 1


def test_a_reset_connection_applies_nothing(sim: SimulatorHandle, client: Client) -> None:
    client.call("getAccountInfo", {"i_account": 1001})  # a kept-alive connection is reset too
    sim.state.inject_fault(method="accountDebit", kind="reset")
    with pytest.raises(requests.ConnectionError):
        client.debit(1001, 1.0)
    assert sim.state.payments() == []
    client.debit(1001, 1.0)
    assert len(sim.state.payments()) == 1


def test_timeout_after_apply_charges_although_the_client_timed_out(
    sim: SimulatorHandle, client: Client
) -> None:
    sim.state.inject_fault(method="accountDebit", kind="timeout_after_apply", delay_s=1)
    params = charge(1001, 2.5, payment_notes="ref-1")
    with pytest.raises(requests.Timeout):
        client.call("accountDebit", params, timeout=0.3)
    assert [p["notes"] for p in sim.state.payments(1001)] == ["ref-1"]
    assert sim.state.balance(1001) == Decimal("97.50")


def test_faults_match_by_method_and_account_and_count_down_in_order(
    sim: SimulatorHandle, client: Client
) -> None:
    inject = sim.state.inject_fault
    inject(method="accountDebit", i_account=1002, kind="fault", count=2, fault_code=601)
    inject(method="*", kind="fault", fault_code=602)
    inject(method="*", kind="fault", fault_code=603)

    def code(i_account: int) -> int:
        return fault_of(client, "accountDebit", charge(i_account)).faultCode

    # 1001 skips the 1002 rule; then 1002 meets its own rule first although later ones match.
    assert [code(1001), code(1002), code(1002), code(1002)] == [602, 601, 601, 603]
    assert sim.state.faults() == [] and sim.state.payments() == []
    client.debit(1002, 1.0)
    assert [p["i_account"] for p in sim.state.payments()] == [1002]


def test_a_fault_for_one_method_leaves_the_others_alone(
    sim: SimulatorHandle, client: Client
) -> None:
    sim.state.inject_fault(method="accountCredit", kind="reset")
    client.debit(1001, 1.0)
    assert client.call("listAccounts", {"limit": 2})["result"] == "OK"
    assert len(sim.state.faults()) == 1


# -- the control API --------------------------------------------------------------------------


def test_control_api_lists_adds_and_replaces_accounts(sim: SimulatorHandle) -> None:
    listed = control(sim, "GET", "/_sim/accounts").json()
    assert listed[0] == {
        "i_account": 1001,
        "username": "demo1001",
        "currency": "USD",
        "balance": "100.00",
        "credit_limit": "0.00",
        "blocked": False,
    }
    added = {
        "i_account": 2001,
        "username": "eve",
        "currency": "EUR",
        "balance": 12.5,
        "credit_limit": "3",
    }
    answer = control(sim, "POST", "/_sim/accounts", added)
    assert answer.status_code == 200
    assert answer.json()["balance"] == "12.50" and answer.json()["credit_limit"] == "3.00"
    control(sim, "POST", "/_sim/accounts", added | {"balance": "-1.25", "blocked": True})
    assert sim.state.account(2001)["balance"] == Decimal("-1.25")
    assert sim.state.account(2001)["blocked"] is True


def test_control_api_shows_payments_and_manages_faults(
    sim: SimulatorHandle, client: Client
) -> None:
    client.debit(1001, 1.0, payment_notes="a")
    client.debit(1002, 2.0, payment_notes="b")
    mine = control(sim, "GET", "/_sim/payments?i_account=1002").json()
    assert [(p["notes"], p["amount"], p["payment_time"]) for p in mine] == [
        ("b", "2.00", "2009-11-18T09:57:29Z")
    ]
    assert len(control(sim, "GET", "/_sim/payments").json()) == 2
    rule = {"method": "accountDebit", "i_account": None, "kind": "slow", "count": 3, "delay_s": 0.5}
    assert control(sim, "POST", "/_sim/faults", rule).json()["count"] == 3
    assert control(sim, "GET", "/_sim/faults").json()[0]["delay_s"] == 0.5
    assert control(sim, "DELETE", "/_sim/faults").status_code == 200
    assert sim.state.faults() == []


def test_control_api_reset_restores_the_start(sim: SimulatorHandle, client: Client) -> None:
    client.debit(1001, 1.0)
    control(sim, "POST", "/_sim/accounts", {"i_account": 3001, "username": "x", "currency": "USD"})
    sim.state.inject_fault(kind="reset")
    assert control(sim, "POST", "/_sim/reset").json() == {"result": "OK"}
    assert sim.state.payments() == [] and sim.state.faults() == []
    assert len(sim.state.accounts()) == 10 and sim.state.balance(1001) == Decimal("100.00")
    client.debit(1001, 1.0)
    assert sim.state.payments()[0]["i_payment"] == 1


@pytest.mark.parametrize(
    ("verb", "path", "body"),
    [
        ("POST", "/_sim/accounts", {"i_account": 1, "username": "x", "balance": "ten"}),
        ("POST", "/_sim/accounts", {"i_account": 1, "username": "x", "balance": "1.001"}),
        ("POST", "/_sim/accounts", {"i_account": 1, "username": "demo1001"}),
        ("POST", "/_sim/accounts", {"i_account": 1, "username": "x", "currency": "usd"}),
        ("POST", "/_sim/accounts", {"i_account": 1, "username": "x", "colour": "red"}),
        ("POST", "/_sim/accounts", [1, 2]),
        ("POST", "/_sim/accounts", {"i_account": 1, "username": "x", "balance": "1e40"}),
        ("POST", "/_sim/faults", {"kind": "explode"}),
        ("POST", "/_sim/faults", {"kind": "fault", "count": 0}),
        ("POST", "/_sim/faults", {"kind": "slow", "delay_s": -1}),
        ("POST", "/_sim/faults", {"kind": "fault", "when": "now"}),
        ("POST", "/_sim/faults", {"kind": "fault", "self": 1}),
        ("GET", "/_sim/payments?i_account=abc", None),
    ],
)
def test_control_api_refuses_bad_input_with_400(
    sim: SimulatorHandle, verb: str, path: str, body: Any
) -> None:
    answer = control(sim, verb, path, body)
    assert answer.status_code == 400
    assert isinstance(answer.json()["error"], str)


def test_control_api_refuses_a_body_that_is_not_json(sim: SimulatorHandle) -> None:
    answer = requests.post(sim.url + "/_sim/faults", data=b"{kind", timeout=5)
    assert answer.status_code == 400 and "error" in answer.json()
    assert control(sim, "PUT", "/_sim/reset").status_code == 501  # http.server: no do_PUT
    assert control(sim, "GET", "/_sim/reset").status_code == 405
    assert control(sim, "GET", "/_sim/nothing").status_code == 404


# -- dates, accounts files, lifecycle ---------------------------------------------------------


def test_sippy_dates_use_english_names_and_round_trip() -> None:
    assert format_sippy_time(T0) == "09:57:29.000 GMT Wed Nov 18 2009"
    assert parse_sippy_time("09:57:29.000 GMT Wed Nov 18 2009") == T0
    week = [format_sippy_time(datetime(2024, 1, day, tzinfo=UTC)).split()[2] for day in range(1, 8)]
    assert week == ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    months = [format_sippy_time(datetime(2024, m, 1, tzinfo=UTC)).split()[3] for m in range(1, 13)]
    assert months == "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
    later = datetime(2031, 2, 3, 23, 4, 5, 678000, tzinfo=UTC)
    assert parse_sippy_time(format_sippy_time(later)) == later
    with pytest.raises(ValueError):
        format_sippy_time(datetime(2009, 11, 18))  # noqa: DTZ001 - a naive time is refused
    for bad in ("09:57:29.000 GMT Wed Foo 18 2009", "09:57:29 UTC Wed Nov 18 2009", 42):
        with pytest.raises(ValueError):
            parse_sippy_time(bad)


def test_an_accounts_file_seeds_the_simulator(tmp_path: Path) -> None:
    path = tmp_path / "accounts.json"
    rows = [
        {"i_account": 7, "username": "seven", "currency": "EUR", "balance": 0.1, "credit_limit": 10}
    ]
    path.write_text(json.dumps(rows), encoding="utf-8")
    state = SimulatorState(load_accounts(str(path)))
    assert state.accounts() == [
        {
            "i_account": 7,
            "username": "seven",
            "currency": "EUR",
            "balance": Decimal("0.10"),
            "credit_limit": Decimal("10.00"),
            "blocked": False,
        }
    ]
    path.write_text('{"i_account": 7}', encoding="utf-8")
    with pytest.raises(ValueError):
        load_accounts(str(path))
    for twin in ({"username": "again"}, {"i_account": 8}):
        with pytest.raises(ValueError, match="share"):
            SimulatorState([rows[0], rows[0] | twin])


def test_stop_returns_promptly_while_a_handler_sleeps(sim: SimulatorHandle) -> None:
    sim.state.inject_fault(kind="slow", delay_s=30)
    outcome: list[object] = []

    def slow_call() -> None:
        client = Client(sim)
        with client.session:
            try:
                outcome.append(client.post("getAccountInfo", {"i_account": 1001}, timeout=10))
            except requests.RequestException as error:
                outcome.append(error)

    caller = threading.Thread(target=slow_call)
    caller.start()
    deadline = time.monotonic() + 2
    while sim.state.faults() and time.monotonic() < deadline:
        time.sleep(0.01)  # until the handler took the fault and sleeps
    started = time.monotonic()
    sim.stop()
    assert time.monotonic() - started < 2
    caller.join(timeout=5)
    assert isinstance(outcome[0], requests.ConnectionError)


def test_serve_runs_until_interrupted(tmp_path: Path) -> None:
    """The blocking entry point of `smsledger sippy-sim`: one start line, then Ctrl-C stops it."""
    path = tmp_path / "accounts.json"
    account = {"i_account": 5, "username": "five", "currency": "USD", "balance": "1.00"}
    path.write_text(json.dumps([account]), encoding="utf-8")
    code = (
        "import sys; from sippy_simulator.server import serve; "
        "serve('127.0.0.1', 0, sys.argv[1], 'u', 'p', True)"
    )
    process = subprocess.Popen(
        [sys.executable, "-u", "-c", code, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        xmlapi_url = line.split()[2]
        body = xmlrpc.client.dumps(({"username": "five"},), "getAccountInfo").encode()
        answer = requests.post(xmlapi_url, data=body, auth=HTTPDigestAuth("u", "p"), timeout=5)
        info: Any = xmlrpc.client.loads(answer.content)[0][0]
        assert info["balance"] == -1.0
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=5) == 0
    finally:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()

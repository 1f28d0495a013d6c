"""The Sippy client: XML-RPC over HTTP(S) with digest auth and a timeout (sippy-api.md).

Every charge answer is sorted into one of three outcomes the engine acts on: accepted,
declined (with Sippy's reason, terminal or retryable) and unknown (the charge may or may not
have happened: timeouts, resets, HTTP 5xx, unreadable answers). The client never retries on its
own: whether to look a charge up or try again is the caller's decision (invariant 8).

Every call is timed and sorted into an outcome for an optional observer, `observe(method,
outcome, seconds)`. The client takes a callable rather than counting itself because billing sits
below the infrastructure layer (import-linter's layers contract): it may not import
`infra.metrics` or prometheus-client. The composition root (`jobs.context.sippy_client`) hands
it `infra.metrics.observe_sippy`; a test hands it a list's `append`.
"""

from __future__ import annotations

import logging
import time
import xmlrpc.client
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from xml.parsers.expat import ExpatError

import requests
from requests.auth import HTTPDigestAuth

from billing.payments.sippy_wire import format_time, from_double, parse_time, to_double
from ledger.money import Money

# Fault codes that no retry can cure (sippy-api.md "Faults", decision 0012): 403 is Sippy's own
# "Account is not registered" (also what an unknown account gets); the others are the
# simulator's invented codes for a bad parameter, insufficient credit, a currency mismatch and a
# blocked account. Any other code is retried on the backoff schedule.
DEFAULT_TERMINAL_FAULTS = frozenset({400, 402, 403, 409, 423})
PAGE_SIZE = 100
SIPPY_METHODS = frozenset(
    {
        "accountDebit",
        "accountCredit",
        "accountAddFunds",
        "getAccountInfo",
        "listAccounts",
        "getPaymentsList",
        "getPaymentInfo",
        "createAccount",
    }
)
"""The methods of sippy-api.md: an observer may name any other method "other"."""

Observer = Callable[[str, str, float], None]
"""`observe(method, outcome, seconds)` after every call. Outcomes: ok, fault_terminal,
fault_retryable, auth_failed, timeout, transport_error, malformed."""

log = logging.getLogger("smsledger.sippy")


class SippyError(Exception):
    """Raised when a Sippy call other than a charge cannot be answered; `code` says why
    (a fault code, "http_401", "timeout", "connection", "http_5xx", "malformed")."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class SippyFault(SippyError):
    """Raised when Sippy answers with an XML-RPC fault: it refused the call, nothing applied."""

    def __init__(self, fault_code: int, message: str) -> None:
        super().__init__(str(fault_code), message)
        self.fault_code = fault_code


class SippyAuthFailed(SippyError):
    """Raised on HTTP 401: our credentials are wrong or API calls are not allowed for them.
    A configuration error for an operator, never retried."""


class SippyUnreachable(SippyError):
    """Raised when no readable answer came back (timeout, reset, HTTP 5xx, malformed XML):
    whether the call was applied is unknown."""


@dataclass(frozen=True, slots=True)
class ChargeOutcome:
    status: Literal["accepted", "declined", "unknown"]
    code: str | None = None
    message: str | None = None
    retryable: bool = False


@dataclass(frozen=True, slots=True)
class Payment:
    """A row of an account's payment history (debits, credits, added funds)."""

    payment_id: str
    account_id: int
    time: datetime
    amount: Money
    notes: str
    type: str
    succeeded: bool


@dataclass(frozen=True, slots=True)
class AccountBalance:
    """An account's balance in Sippy's UI sign: positive = paid ahead, negative = owed."""

    account_id: int
    currency: str
    balance_micros: int
    credit_limit_micros: int
    blocked: bool

    @property
    def available_micros(self) -> int:
        """What the account may still spend: balance + credit limit (Sippy article 77472)."""
        return self.balance_micros + self.credit_limit_micros


def ui_balance(raw: Any, method: str, currency: str) -> int:
    """Sippy's balance in its UI sign, whichever method read it: `getAccountInfo` answers with
    the opposite sign (positive = owed), `listAccounts` with the UI sign (article 77468)."""
    micros = from_double(raw, currency)
    return -micros if method == "getAccountInfo" else micros


class SippyClient:
    def __init__(
        self,
        url: str,
        username: str | None,
        password: str | None,
        timeout_s: float = 10.0,
        terminal_faults: Iterable[int] = DEFAULT_TERMINAL_FAULTS,
        http: requests.Session | None = None,
        observe: Observer | None = None,
    ) -> None:
        self.url, self.timeout_s = url, timeout_s
        self.auth = HTTPDigestAuth(username, password or "") if username else None
        self.terminal_faults = frozenset(terminal_faults)
        self.http = http or requests.Session()
        self.observe = observe

    def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """One XML-RPC call with its single struct parameter; the answer struct. The observer,
        if any, learns its method, outcome and duration.

        Raises: SippyFault, SippyAuthFailed, SippyUnreachable.
        """
        if self.observe is None:
            return self._call(method, params)
        started = time.perf_counter()
        outcome = "ok"
        try:
            return self._call(method, params)
        except SippyError as error:
            outcome = self.outcome_of(error)
            raise
        except BaseException:  # not sorted by `_call`: nothing readable came back
            outcome = "transport_error"
            raise
        finally:
            self._observe(method, outcome, time.perf_counter() - started)

    def outcome_of(self, error: SippyError) -> str:
        """The observer's outcome for a failed call (a bounded set, never a raw code)."""
        if isinstance(error, SippyFault):
            terminal = error.fault_code in self.terminal_faults
            return "fault_terminal" if terminal else "fault_retryable"
        if isinstance(error, SippyAuthFailed):
            return "auth_failed"
        if error.code in ("timeout", "malformed"):
            return error.code
        return "transport_error"

    def _observe(self, method: str, outcome: str, seconds: float) -> None:
        """Tell the observer; a failing observer is logged, never allowed to change the
        call's answer (a charge Sippy applied must still be recorded as applied)."""
        assert self.observe is not None
        try:
            self.observe(method, outcome, seconds)
        except Exception:
            log.exception("Sippy call observer failed", extra={"method": method})

    def _call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        body = xmlrpc.client.dumps((params,), method, allow_none=True, encoding="utf-8")
        try:
            answer = self.http.post(
                self.url,
                data=body.encode(),
                headers={"Content-Type": "text/xml"},
                auth=self.auth,
                timeout=self.timeout_s,
            )
        except requests.Timeout as error:
            raise SippyUnreachable(
                "timeout", f"{method}: no answer in {self.timeout_s} s"
            ) from error
        except requests.RequestException as error:
            raise SippyUnreachable("connection", f"{method}: {type(error).__name__}") from error
        if answer.status_code == 401:
            raise SippyAuthFailed("http_401", f"{method}: Sippy refused our credentials (401)")
        if answer.status_code != 200:
            raise SippyUnreachable(
                "http_5xx" if answer.status_code >= 500 else f"http_{answer.status_code}",
                f"{method}: HTTP {answer.status_code}",
            )
        try:
            (result,), _ = xmlrpc.client.loads(answer.content)
        except xmlrpc.client.Fault as fault:
            raise SippyFault(int(fault.faultCode), str(fault.faultString)) from fault
        except (ExpatError, xmlrpc.client.ResponseError, ValueError) as error:
            raise SippyUnreachable("malformed", f"{method}: unreadable answer") from error
        if not isinstance(result, dict):
            raise SippyUnreachable("malformed", f"{method}: answer is not a struct")
        return result

    def debit(self, account_id: int, amount: Money, reference: str, at: datetime) -> ChargeOutcome:
        """Charge `amount` to the account with `reference` in the payment notes."""
        return self._move("accountDebit", account_id, amount, reference, at)

    def credit(self, account_id: int, amount: Money, reference: str, at: datetime) -> ChargeOutcome:
        """Give `amount` back to the account (a refund), `reference` in the payment notes."""
        return self._move("accountCredit", account_id, amount, reference, at)

    def _move(
        self, method: str, account_id: int, amount: Money, reference: str, at: datetime
    ) -> ChargeOutcome:
        """One balance move; its answer sorted into accepted, declined or unknown."""
        try:
            result = self.call(
                method,
                {
                    "i_account": account_id,
                    "amount": to_double(amount.micros, amount.currency),
                    "currency": amount.currency,
                    "payment_notes": reference,
                    "payment_time": format_time(at),
                },
            )
        except SippyFault as fault:
            terminal = fault.fault_code in self.terminal_faults
            return ChargeOutcome("declined", fault.code, fault.message, retryable=not terminal)
        except SippyAuthFailed as error:
            return ChargeOutcome("declined", error.code, error.message, retryable=False)
        except SippyUnreachable as error:
            return ChargeOutcome("unknown", error.code, error.message)
        if result.get("result") != "OK":
            return ChargeOutcome("unknown", "malformed", f"{method} answered {result!r}")
        return ChargeOutcome("accepted")

    def payments(
        self,
        account_id: int | None,
        start: datetime,
        end: datetime,
        kind: Literal["debit", "credit"] = "debit",
        currency_of: dict[int, str] | None = None,
    ) -> list[Payment]:
        """The payment history in [start, end), every page.

        Raises: SippyError.
        """
        found: list[Payment] = []
        offset = 0
        while True:
            params: dict[str, Any] = {
                "offset": offset,
                "limit": PAGE_SIZE,
                "start_date": format_time(start),
                "end_date": format_time(end),
                "type": kind,
            }
            if account_id is not None:
                params["i_account"] = account_id
            page = self.call("getPaymentsList", params).get("payments") or []
            found.extend(_payment(row, kind) for row in page)
            if len(page) < PAGE_SIZE:
                return found
            offset += PAGE_SIZE

    def find_debit(
        self, account_id: int, reference: str, start: datetime, end: datetime
    ) -> Payment | None:
        """The debit carrying our `reference`, if Sippy has one in [start, end).

        Raises: SippyError.
        """
        return self._find(account_id, reference, start, end, "debit")

    def find_credit(
        self, account_id: int, reference: str, start: datetime, end: datetime
    ) -> Payment | None:
        """The credit (refund) carrying our `reference`, if Sippy has one in [start, end).

        Raises: SippyError.
        """
        return self._find(account_id, reference, start, end, "credit")

    def _find(
        self,
        account_id: int,
        reference: str,
        start: datetime,
        end: datetime,
        kind: Literal["debit", "credit"],
    ) -> Payment | None:
        for payment in self.payments(account_id, start, end, kind):
            if payment.notes == reference:
                return payment
        return None

    def account_balance(self, account_id: int) -> AccountBalance:
        """Raises: SippyError."""
        info = self.call("getAccountInfo", {"i_account": account_id})
        return _balance(info, "getAccountInfo")

    def list_accounts(self) -> list[AccountBalance]:
        """Every account under our customer, every page. Raises: SippyError."""
        accounts: list[AccountBalance] = []
        offset = 0
        while True:
            page = self.call("listAccounts", {"offset": offset, "limit": PAGE_SIZE})
            rows = page.get("accounts") or []
            accounts.extend(_balance(row, "listAccounts") for row in rows)
            if len(rows) < PAGE_SIZE:
                return accounts
            offset += PAGE_SIZE


def _balance(row: dict[str, Any], method: str) -> AccountBalance:
    currency = str(row["base_currency"])
    return AccountBalance(
        int(row["i_account"]),
        currency,
        ui_balance(row["balance"], method, currency),
        from_double(row.get("credit_limit") or 0, currency),
        bool(row.get("blocked")),
    )


def _payment(row: dict[str, Any], kind: str) -> Payment:
    currency = str(row["currency"])
    return Payment(
        str(row["i_payment"]),
        int(row["i_account"]),
        parse_time(str(row["payment_time"])),
        Money(from_double(row["amount"], currency), currency),
        str(row.get("notes") or ""),
        str(row.get("type") or kind),
        int(row.get("tx_result") or 1) == 1,
    )

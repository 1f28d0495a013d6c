"""The Sippy simulator's switch: accounts, their payment history, the faults waiting to be
injected, and the XML-RPC methods that read and change them (sippy-api.md, "The simulator must").

Balances are `Decimal` in Sippy's UI sign (positive = paid in advance, negative = owed);
`getAccountInfo` alone answers with the opposite sign, as Sippy documents. Every debit, credit
and add-funds appends a payment row whose `notes` hold the caller's `payment_notes`.

Standard library only, and deliberately independent of the client's wire helpers: a shared
formatter would hide the very bugs the simulator is there to catch.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from xmlrpc.client import Fault

# Fault codes. Sippy documents only 403; the rest are invented here and documented as such in
# docs/sippy-simulator.md. The client sorts codes through its own table, never these names.
FAULT_BAD_PARAMETER = 400
FAULT_INSUFFICIENT_CREDIT = 402
FAULT_NOT_REGISTERED = 403
FAULT_PAYMENT_NOT_FOUND = 404
FAULT_CURRENCY_MISMATCH = 409
FAULT_BLOCKED = 423
FAULT_UNKNOWN_METHOD = -32601  # the XML-RPC interop "method not found" code
FAULT_NOT_XMLRPC = -32700  # the XML-RPC interop "parse error" code
FAULT_CODES: dict[int, str] = {
    FAULT_BAD_PARAMETER: "Invalid parameter",
    FAULT_INSUFFICIENT_CREDIT: "Insufficient credit",
    FAULT_NOT_REGISTERED: "Account is not registered",
    FAULT_PAYMENT_NOT_FOUND: "Payment not found",
    FAULT_CURRENCY_MISMATCH: "Currency mismatch",
    FAULT_BLOCKED: "Account is blocked",
    FAULT_UNKNOWN_METHOD: "Method not found",
    FAULT_NOT_XMLRPC: "Not an XML-RPC call",
}

FAULT_KINDS = ("fault", "http_401", "http_5xx", "slow", "reset", "timeout_after_apply")
PAYMENT_TYPES = ("credit", "debit")
MAX_XMLRPC_INT = 2**31 - 1  # XML-RPC <int> is 32-bit signed

DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_SIPPY_TIME = re.compile(
    r"(\d{2}):(\d{2}):(\d{2})(?:\.(\d{3}))? GMT ([A-Z][a-z]{2}) ([A-Z][a-z]{2}) (\d{1,2}) (\d{4})"
)
_TOO_LARGE = 10**15  # keeps every quantize() within Decimal's 28 digits
# Minor units of the few ISO 4217 currencies that do not have 2 (no babel: stdlib only).
_MINOR_UNITS = {"JPY": 0, "KRW": 0, "VND": 0, "CLP": 0, "BHD": 3, "KWD": 3, "OMR": 3, "JOD": 3}


def format_sippy_time(instant: datetime) -> str:
    """An aware instant as Sippy writes it: `09:57:29.000 GMT Wed Nov 18 2009` (English names
    from fixed tuples, never locale-dependent `strftime`)."""
    if instant.tzinfo is None:
        raise ValueError("a naive datetime names no instant")
    t = instant.astimezone(UTC)
    return (
        f"{t.hour:02d}:{t.minute:02d}:{t.second:02d}.{t.microsecond // 1000:03d} GMT "
        f"{DAY_NAMES[t.weekday()]} {MONTH_NAMES[t.month - 1]} {t.day:02d} {t.year}"
    )


def parse_sippy_time(text: object) -> datetime:
    """Sippy's date string back to an aware UTC instant; the day name must match the date.

    Raises: ValueError when `text` is not in Sippy's form.
    """
    match = _SIPPY_TIME.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None or match[6] not in MONTH_NAMES:
        raise ValueError(f"not a Sippy date: {text!r}")
    hour, minute, second, millis, day_name, month, day, year = match.groups()
    numbers = (int(year), MONTH_NAMES.index(month) + 1, int(day), int(hour), int(minute))
    instant = datetime(*numbers, int(second), int(millis or 0) * 1000, tzinfo=UTC)
    if DAY_NAMES[instant.weekday()] != day_name:
        raise ValueError(f"not a Sippy date (wrong day name): {text!r}")
    return instant


def demo_accounts() -> list[dict[str, Any]]:
    """The accounts the simulator starts with when given none: 1001-1010, USD 100.00, limit 0."""
    start = {"currency": "USD", "balance": "100.00", "credit_limit": "0", "blocked": False}
    return [start | {"i_account": n, "username": f"demo{n}"} for n in range(1001, 1011)]


def to_decimal(value: object, name: str) -> Decimal:
    """A finite Decimal from a Decimal, int, decimal string or float (through `repr`, so an
    XML-RPC double 0.1 stays 0.1).

    Raises: ValueError.
    """
    if isinstance(value, bool) or not isinstance(value, Decimal | int | float | str):
        raise ValueError(f"{name} must be a number")
    try:
        number = Decimal(repr(value) if isinstance(value, float) else value)
    except InvalidOperation:
        raise ValueError(f"{name} must be a number") from None
    if not number.is_finite() or abs(number) >= _TOO_LARGE:
        raise ValueError(f"{name} must be a finite number below {_TOO_LARGE:,}")
    return number


def minor_unit(currency: str) -> Decimal:
    """The currency's smallest amount as a quantum (USD Decimal("0.01"))."""
    return Decimal(1).scaleb(-_MINOR_UNITS.get(currency, 2))


def _exact_money(value: object, name: str, currency: str) -> Decimal:
    number = to_decimal(value, name)
    exact = number.quantize(minor_unit(currency))
    if exact != number:
        raise ValueError(f"{name} has more decimals than {currency} allows")
    return exact


def _int(params: dict[str, Any], name: str, default: int | None = None) -> int:
    value = params.get(name, default)
    if value is None:
        raise ValueError(f"{name} is required")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_XMLRPC_INT:
        raise ValueError(f"{name} must be a non-negative integer")
    return value


def _text(params: dict[str, Any], name: str, default: str | None = None) -> str:
    value = params.get(name, default)
    if value is None:
        raise ValueError(f"{name} is required")
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string")
    return value


def _optional_time(params: dict[str, Any], name: str) -> datetime | None:
    return None if params.get(name) is None else parse_sippy_time(params[name])


@dataclass
class _Account:
    i_account: int
    username: str
    currency: str
    balance: Decimal  # UI sign: positive = paid in advance, negative = owed
    credit_limit: Decimal  # how far below zero the UI balance may go
    blocked: bool = False

    @classmethod
    def from_dict(cls, data: object) -> _Account:
        """Raises: ValueError naming the first bad field."""
        if not isinstance(data, dict):
            raise ValueError("an account must be an object")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown account fields: {sorted(unknown)}")
        i_account, username = _int(data, "i_account"), _text(data, "username")
        currency = _text(data, "currency", "USD")
        if i_account == 0 or not username:
            raise ValueError("i_account must be positive and username non-empty")
        if not re.fullmatch(r"[A-Z]{3}", currency):
            raise ValueError("currency must be three capital letters")
        limit = _exact_money(data.get("credit_limit", 0), "credit_limit", currency)
        if limit < 0:
            raise ValueError("credit_limit must not be negative")
        blocked = data.get("blocked", False)
        if not isinstance(blocked, bool):
            raise ValueError("blocked must be true or false")
        balance = _exact_money(data.get("balance", 0), "balance", currency)
        return cls(i_account, username, currency, balance, limit, blocked)


@dataclass(frozen=True)
class _Payment:
    i_payment: int
    i_account: int
    type: str  # "debit" or "credit"; accountAddFunds rows are credits
    method: str
    amount: Decimal  # always positive: `type` gives the direction
    currency: str
    notes: str
    payment_time: datetime

    def as_dict(self) -> dict[str, Any]:
        tx_id = f"SIM-{self.i_payment:08d}"
        return asdict(self) | {"tx_result": 1, "tx_id": tx_id, "tx_error": ""}


@dataclass
class FaultRule:
    """One injected fault: what to do to the next `count` calls of `method` on `i_account`."""

    kind: str
    method: str = "*"
    i_account: int | None = None  # None: any account, and calls that name none
    count: int = 1
    fault_code: int = 500
    fault_string: str = "Simulated fault"
    delay_s: float = 5.0

    def matches(self, method: str, i_account: int | None) -> bool:
        return self.method in ("*", method) and self.i_account in (None, i_account)


class SimulatorState:
    """The switch's in-memory state; every method is thread-safe under one lock."""

    def __init__(
        self,
        accounts: list[dict[str, Any]] | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
        strict_credit: bool = True,
    ) -> None:
        """Raises: ValueError when an account is malformed or two share an id or username."""
        self._lock = threading.RLock()
        self._clock = clock or (lambda: datetime.now(UTC))
        self.strict_credit = strict_credit  # refuse debits past the credit limit (sippy-api.md)
        given = demo_accounts() if accounts is None else accounts
        self._start = [_Account.from_dict(a) for a in given]
        for key in ("i_account", "username"):
            if len({getattr(a, key) for a in self._start}) != len(self._start):
                raise ValueError(f"two start accounts share a {key}")
        self._accounts: dict[int, _Account] = {}
        self._payments: list[_Payment] = []
        self._faults: list[FaultRule] = []
        self.reset()

    # -- the view tests and the control API use, beside the API under test --------------------

    def accounts(self) -> list[dict[str, Any]]:
        """Every account as a dict (money as Decimal, UI sign), by i_account."""
        with self._lock:
            return [asdict(self._accounts[n]) for n in sorted(self._accounts)]

    def account(self, i_account: int) -> dict[str, Any]:
        """Raises: KeyError for an unknown account."""
        with self._lock:
            return asdict(self._accounts[i_account])

    def balance(self, i_account: int) -> Decimal:
        """The UI-sign balance. Raises: KeyError for an unknown account."""
        with self._lock:
            return self._accounts[i_account].balance

    def put_account(self, data: dict[str, Any]) -> dict[str, Any]:
        """Add an account or replace the one with the same i_account; returns it.

        Raises: ValueError when a field is bad or another account has the username.
        """
        account = _Account.from_dict(data)
        with self._lock:
            for other in self._accounts.values():
                if other.username == account.username and other.i_account != account.i_account:
                    raise ValueError(f"username {account.username!r} is taken")
            self._accounts[account.i_account] = account
            return asdict(account)

    def payments(self, i_account: int | None = None) -> list[dict[str, Any]]:
        """The payment history in i_payment order, all accounts' or one's."""
        with self._lock:
            return [p.as_dict() for p in self._payments if i_account in (None, p.i_account)]

    def inject_fault(self, **rule: Any) -> dict[str, Any]:
        """Queue a fault (fields of `FaultRule`); returns it as stored.

        Raises: ValueError for an unknown field, kind or a bad value.
        """
        unknown = set(rule) - set(FaultRule.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        if rule.get("kind") not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {', '.join(FAULT_KINDS)}")
        method = _text(rule, "method", "*")
        fault_string = _text(rule, "fault_string", FaultRule.fault_string)
        count, code = _int(rule, "count", 1), rule.get("fault_code", 500)
        if isinstance(code, bool) or not isinstance(code, int) or count < 1:
            raise ValueError("fault_code must be an integer and count at least 1")
        i_account = None if rule.get("i_account") is None else _int(rule, "i_account")
        delay = to_decimal(rule.get("delay_s", 5), "delay_s")
        if delay < 0:
            raise ValueError("delay_s must not be negative")
        fault = FaultRule(rule["kind"], method, i_account, count, code, fault_string, float(delay))
        with self._lock:
            self._faults.append(fault)
        return asdict(fault)

    def faults(self) -> list[dict[str, Any]]:
        """The faults still waiting, in the order they will be consumed."""
        with self._lock:
            return [asdict(f) for f in self._faults]

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def reset(self) -> None:
        """Back to the start accounts, no payments, no faults."""
        with self._lock:
            self._accounts = {a.i_account: replace(a) for a in self._start}
            self._payments.clear()
            self._faults.clear()

    def take_fault(self, method: str, params: dict[str, Any]) -> FaultRule | None:
        """The first queued fault matching this call, its count used up by one."""
        with self._lock:
            i_account = params.get("i_account")
            if "i_account" not in params and isinstance(params.get("username"), str):
                found = [a for a in self._accounts.values() if a.username == params["username"]]
                i_account = found[0].i_account if found else None
            for rule in self._faults:
                if rule.matches(method, i_account):
                    rule.count -= 1
                    if rule.count == 0:
                        self._faults.remove(rule)
                    return replace(rule)
            return None

    # -- the XML-RPC methods ------------------------------------------------------------------

    def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Run one XML-RPC method on its struct parameter and return its answer struct.

        Raises: xmlrpc.client.Fault with a code of `FAULT_CODES`; nothing is applied then.
        """
        methods: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "getAccountInfo": self._get_account_info,
            "listAccounts": self._list_accounts,
            "accountDebit": lambda p: self._move("accountDebit", p),
            "accountCredit": lambda p: self._move("accountCredit", p),
            "accountAddFunds": lambda p: self._move("accountAddFunds", p),
            "getPaymentsList": self._payments_list,
            "getPaymentInfo": self._payment_info,
            "createAccount": self._create_account,
        }
        if method not in methods:
            raise _fault(FAULT_UNKNOWN_METHOD, method)
        try:
            with self._lock:
                return methods[method](params)
        except ValueError as error:  # every parameter check raises ValueError: one translation
            raise _fault(FAULT_BAD_PARAMETER, str(error)) from None

    def _find(self, params: dict[str, Any]) -> _Account:
        if "i_account" in params or "username" not in params:
            account = self._accounts.get(_int(params, "i_account"))
        else:
            username = _text(params, "username")
            account = next((a for a in self._accounts.values() if a.username == username), None)
        if account is None:
            raise _fault(FAULT_NOT_REGISTERED)
        return account

    def _get_account_info(self, params: dict[str, Any]) -> dict[str, Any]:
        account = self._find(params)
        # Sippy's getAccountInfo inverts the sign: positive = owed. 0 - x keeps 0.00 unsigned.
        return _wire_account(account) | {"result": "OK", "balance": float(0 - account.balance)}

    def _list_accounts(self, params: dict[str, Any]) -> dict[str, Any]:
        rows = [_wire_account(self._accounts[n]) for n in sorted(self._accounts)]
        return {"result": "OK", "accounts": _page(rows, params)}

    def _move(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """accountDebit, accountCredit, accountAddFunds: move the balance, append a payment."""
        currency = _text(params, "currency")
        if not isinstance(params.get("amount"), int | float):  # a <double>, or an <int> at most
            raise ValueError("amount must be a number")
        amount = to_decimal(params.get("amount"), "amount")
        notes = _text(params, "payment_notes", "")
        when = _optional_time(params, "payment_time") or self._now()
        if amount <= 0:
            raise ValueError("amount must be greater than 0")
        account = self._find(params)
        if currency != account.currency:
            raise _fault(FAULT_CURRENCY_MISMATCH, f"{currency} != {account.currency}")
        amount = amount.quantize(minor_unit(currency), ROUND_HALF_UP)
        if amount <= 0:
            raise ValueError(f"amount rounds to 0 {currency}")
        debit = method == "accountDebit"
        if debit and account.blocked:  # money in is never refused: it may unblock the account
            raise _fault(FAULT_BLOCKED)
        if debit and self.strict_credit and account.balance - amount < -account.credit_limit:
            available = account.balance + account.credit_limit
            raise _fault(FAULT_INSUFFICIENT_CREDIT, f"available {available} {currency}")
        account.balance += -amount if debit else amount
        self._payments.append(
            _Payment(
                i_payment=len(self._payments) + 1,
                i_account=account.i_account,
                type="debit" if debit else "credit",
                method=method,
                amount=amount,
                currency=currency,
                notes=notes,
                payment_time=when,
            )
        )
        return {"result": "OK"}

    def _payments_list(self, params: dict[str, Any]) -> dict[str, Any]:
        i_account = self._find(params).i_account if "i_account" in params else None
        kind = params.get("type")
        if kind is not None and kind not in PAYMENT_TYPES:
            raise ValueError('type must be "credit" or "debit"')
        start, end = _optional_time(params, "start_date"), _optional_time(params, "end_date")
        rows = [
            _wire_payment(p)
            for p in self._payments
            if i_account in (None, p.i_account)
            and kind in (None, p.type)
            and (start is None or p.payment_time >= start)
            and (end is None or p.payment_time < end)
        ]
        return {"result": "OK", "payments": _page(rows, params)}

    def _payment_info(self, params: dict[str, Any]) -> dict[str, Any]:
        account, i_payment = self._find(params), _int(params, "i_payment")
        for payment in self._payments:
            if payment.i_payment == i_payment and payment.i_account == account.i_account:
                return _wire_payment(payment) | {"result": "OK"}
        raise _fault(FAULT_PAYMENT_NOT_FOUND)

    def _create_account(self, params: dict[str, Any]) -> dict[str, Any]:
        i_account = max([1000, *self._accounts]) + 1
        names = ("username", "currency", "balance", "credit_limit")
        self.put_account({k: params[k] for k in names if k in params} | {"i_account": i_account})
        return {"result": "OK", "i_account": i_account}

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise RuntimeError("the simulator's clock must return aware datetimes")
        # Sippy's dates carry whole seconds on the wire: store what a caller can read back.
        return now.astimezone(UTC).replace(microsecond=0)


def _fault(code: int, detail: str | None = None) -> Fault:
    text = FAULT_CODES[code]
    return Fault(code, f"{text}: {detail}" if detail else text)


def _wire_account(account: _Account) -> dict[str, Any]:
    return {
        "i_account": account.i_account,
        "username": account.username,
        "balance": float(account.balance),
        "credit_limit": float(account.credit_limit),
        "base_currency": account.currency,
        "blocked": account.blocked,
    }


def _wire_payment(payment: _Payment) -> dict[str, Any]:
    row = payment.as_dict()
    del row["method"]
    return row | {
        "amount": float(payment.amount),
        "payment_time": format_sippy_time(payment.payment_time),
    }


def _page(rows: list[dict[str, Any]], params: dict[str, Any]) -> list[dict[str, Any]]:
    offset = _int(params, "offset", 0)
    limit = _int(params, "limit") if params.get("limit") is not None else len(rows)
    return rows[offset : offset + limit]

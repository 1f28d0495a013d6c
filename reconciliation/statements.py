"""Sippy's side of a reconciliation: its statement lines (debits per account), fetched through
the client or read from an uploaded CSV (docs/reconciliation.md documents the columns).

Sippy's documentation describes no export file layout (sippy-api.md), so the CSV's default
columns are the field names of `getPaymentsList`; `mapping` renames them for other exports.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from billing.currency import validate_currency
from billing.instants import parse_instant
from billing.payments.sippy_client import SippyClient, SippyError
from billing.payments.sippy_wire import parse_time
from ledger.errors import LedgerError
from ledger.money import parse_micros
from reconciliation.errors import InvalidStatement, SippyStatementUnavailable

REQUIRED = ("i_account", "payment_time", "amount", "currency")
OPTIONAL = ("i_payment", "notes", "type")
MAX_REPORTED_ERRORS = 100


@dataclass(frozen=True, slots=True)
class StatementLine:
    line_no: int
    payment_id: str | None
    account_id: str
    at: datetime
    amount_micros: int
    currency: str
    reference: str | None


@dataclass(frozen=True, slots=True)
class Statement:
    lines: list[StatementLine]
    checksum: str
    description: dict[str, Any]


def parse_statement_csv(
    raw: bytes, mapping: Mapping[str, str] | None = None, name: str | None = None
) -> Statement:
    """The debit lines of an uploaded statement.

    Raises: InvalidStatement (empty file, not UTF-8, missing columns, bad lines by number).
    """
    checksum = hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InvalidStatement(
            f"the statement is not UTF-8 text (byte {error.start})", code="invalid_encoding"
        ) from error
    if "\x00" in text:
        raise InvalidStatement("the statement holds NUL bytes: not a CSV", code="invalid_encoding")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    headers = [h.strip() for h in reader.fieldnames or []]
    if not headers:
        raise InvalidStatement("the statement is empty", code="empty_statement")
    columns = {ours: (mapping or {}).get(ours, ours) for ours in REQUIRED + OPTIONAL}
    missing = [columns[c] for c in REQUIRED if columns[c] not in headers]
    if missing:
        raise InvalidStatement(
            f"the statement lacks the column(s) {', '.join(missing)}",
            code="missing_columns",
            missing=missing,
            found=headers,
        )
    lines: list[StatementLine] = []
    errors: list[dict[str, Any]] = []
    for row in reader:
        line_no = reader.line_num
        cells = {ours: (row.get(theirs) or "").strip() for ours, theirs in columns.items()}
        if cells["type"] and cells["type"].lower() != "debit":
            continue  # credits and added funds are not charges
        try:
            lines.append(_line(line_no, cells))
        except ValueError as error:
            if len(errors) < MAX_REPORTED_ERRORS:
                field, _, message = str(error).partition(": ")
                errors.append({"line": line_no, "field": field, "message": message})
    if errors:
        raise InvalidStatement(
            f"{len(errors)} line(s) of the statement cannot be read",
            code="invalid_lines",
            errors=errors,
        )
    if not lines and reader.line_num <= 1:
        raise InvalidStatement("the statement has a header but no lines", code="empty_statement")
    return Statement(
        lines,
        checksum,
        {"file": name, "mapping": dict(mapping or {}), "lines": len(lines)},
    )


def _line(line_no: int, cells: Mapping[str, str]) -> StatementLine:
    account = cells["i_account"]
    if not account.isdigit():
        raise ValueError(f"i_account: {account!r} is not a Sippy account number")
    currency = _currency(cells["currency"].upper())
    try:
        micros = parse_micros(cells["amount"])
    except (LedgerError, TypeError):
        raise ValueError(f"amount: {cells['amount']!r} is not a decimal amount") from None
    if micros <= 0:
        raise ValueError(f"amount: {cells['amount']!r} must be positive")
    return StatementLine(
        line_no,
        cells["i_payment"] or None,
        account,
        _time(cells["payment_time"]),
        micros,
        currency,
        cells["notes"] or None,
    )


@functools.lru_cache(maxsize=64)
def _currency(code: str) -> str:
    """A statement holds a handful of currencies: each is checked against ISO 4217 once."""
    try:
        return validate_currency(code)
    except LedgerError as error:
        raise ValueError(f"currency: {error.message}") from None


def _time(text: str) -> datetime:
    """RFC 3339 with an offset, or Sippy's own form (`09:57:29.000 GMT Wed Nov 18 2009`)."""
    moment = parse_instant(text)
    if moment is not None:
        return moment
    try:
        return parse_time(text)
    except ValueError:
        raise ValueError(
            f"payment_time: {text!r} is neither RFC 3339 with an offset nor Sippy's date form"
        ) from None


def fetch_statement(client: SippyClient, start: datetime, end: datetime) -> Statement:
    """Every account's debits in [start, end) through `getPaymentsList`.

    Raises: SippyStatementUnavailable.
    """
    try:
        payments = client.payments(None, start, end, "debit")
    except SippyError as error:
        raise SippyStatementUnavailable(
            f"Sippy's statement could not be fetched: {error.message}", code=error.code
        ) from error
    lines = [
        StatementLine(
            n,
            p.payment_id,
            str(p.account_id),
            p.time,
            p.amount.micros,
            p.amount.currency,
            p.notes or None,
        )
        for n, p in enumerate(sorted(payments, key=lambda p: (p.time, p.payment_id)), start=1)
        if p.succeeded
    ]
    canonical = json.dumps(
        [
            [
                ln.payment_id,
                ln.account_id,
                ln.at.isoformat(),
                ln.amount_micros,
                ln.currency,
                ln.reference,
            ]
            for ln in lines
        ]
    )
    return Statement(
        lines,
        hashlib.sha256(canonical.encode()).hexdigest(),
        {"sippy": client.url, "lines": len(lines)},
    )

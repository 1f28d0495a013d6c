"""The ledger as a Beancount journal (docs/export.md), so `bean-check` can prove it balances
and agrees with the ledger's own balances, and accountants can query it with their tools.

Plain text, written without importing beancount: the ledger depends on no accounting tool (the
tests load the text with the real beancount and compare every balance). Each account is opened
under a Beancount name that no other code shares; each journal entry is one transaction, each
transfer two postings; a range's earlier history is carried in by one opening transaction; and
every account's balance from the ledger is asserted, exactly, the day after the range.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from typing import TextIO

from sqlalchemy.orm import Session

from ledger.exact_json import dump_json
from ledger.export import (
    ExportedAccount,
    ExportSummary,
    before,
    begin_snapshot,
    export_accounts,
    journal_entries,
    utc_text,
)
from ledger.model import Account, AccountType, Transfer
from ledger.money import MICRO_PLACES, format_micros

ROOTS = {
    AccountType.ASSET: "Assets",
    AccountType.LIABILITY: "Liabilities",
    AccountType.EQUITY: "Equity",
    AccountType.REVENUE: "Income",
    AccountType.EXPENSE: "Expenses",
}
"""Beancount's five root accounts, by the ledger's account type."""

_NOT_NAME = re.compile(r"[^A-Za-z0-9]+")
_HASH_LENGTHS = (8, 16, 64)
"""Suffix lengths (hex digits of the code's SHA-256) tried in turn until every name is unique."""


def plain_name(code: str, account_type: AccountType) -> str:
    """The root of the type, then each `:`-separated part of the code: runs of characters
    other than ASCII letters and digits become one `-`, each word starts with a capital
    (`customer:42:receivable` -> `Assets:Customer:42:Receivable`). Not injective by itself."""
    components = [ROOTS[account_type]]
    for part in code.split(":"):
        words = [word[0].upper() + word[1:] for word in _NOT_NAME.split(part) if word]
        components.append("-".join(words) or "X")
    return ":".join(components)


def beancount_names(found: Iterable[Account]) -> dict[str, str]:
    """Every code's Beancount name, one name per code: when two codes' plain names collide,
    each of them gets `-` and the first 8 hex digits of its code's SHA-256 appended to the last
    component (16, then 64 digits should even those collide).

    Raises: ValueError if the names are still not unique (two codes with one SHA-256).
    """
    plain = {account.code: plain_name(account.code, account.type) for account in found}
    names = dict(plain)
    rounds = {code: 0 for code in names}
    for _ in range(2 * len(_HASH_LENGTHS) + 1):
        counts = Counter(names.values())
        clashing = [code for code, name in names.items() if counts[name] > 1]
        if not clashing:
            return names
        for code in clashing:
            if rounds[code] == len(_HASH_LENGTHS):
                raise ValueError(f"no unique Beancount name for {code!r}")
            digest = hashlib.sha256(code.encode()).hexdigest()[: _HASH_LENGTHS[rounds[code]]]
            names[code] = f"{plain[code]}-{digest}"
            rounds[code] += 1
    raise ValueError("no unique Beancount names")


def quoted(text: str) -> str:
    """A Beancount string literal (C-style escapes, one line)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def amount_text(micros: int, currency: str) -> str:
    """Exact, from integer micro-units: always six decimals (`-0.007000 USD`)."""
    return f"{format_micros(micros, MICRO_PLACES)} {currency}"


def write_beancount(
    session: Session, out: TextIO, start: datetime | None = None, end: datetime | None = None
) -> ExportSummary:
    """Write the journal of the entries effective in [start, end) (either bound open) to `out`,
    read in one snapshot of a fresh session (see `ledger.export.begin_snapshot`)."""
    begin_snapshot(session)
    exported = export_accounts(session, start, end)
    names = beancount_names(e.account for e in exported)
    out.write(_header(start, end))
    for item in sorted(exported, key=lambda e: (e.opened_on, names[e.account.code])):
        out.write(_open(item, names[item.account.code]))
    if start is not None:
        out.write(_carried_in(exported, names, start))
    last_day = max((e.opened_on for e in exported), default=None)
    entries = transfer_count = 0
    codes = {e.account.id: e.account.code for e in exported}
    for entry in journal_entries(session, codes, start, end):
        out.write(_transaction(entry, names))
        entries += 1
        transfer_count += len(entry)
        day = entry[0].effective_at.date()
        last_day = day if last_day is None or day > last_day else last_day
    if exported and last_day is not None:
        asserted_on = before(end).date() if end is not None else last_day
        out.write(_assertions(exported, names, asserted_on + timedelta(days=1)))
    return ExportSummary(len(exported), entries, transfer_count)


def _header(start: datetime | None, end: datetime | None) -> str:
    bounds = f"[{utc_text(start) if start else '-'}, {utc_text(end) if end else '-'})"
    return (
        "; smsledger: the ledger as a Beancount journal (docs/export.md)\n"
        f"; entries effective in {bounds} (UTC); amounts exact to the micro-unit\n"
        'option "title" "smsledger"\n\n'
    )


def _open(item: ExportedAccount, name: str) -> str:
    account = item.account
    lines = [
        f"{item.opened_on.isoformat()} open {name} {account.currency}",
        f"  code: {quoted(account.code)}",
        f"  type: {quoted(account.type.value)}",
    ]
    if account.customer_id is not None:
        lines.append(f"  customer_id: {quoted(account.customer_id)}")
    return "\n".join(lines) + "\n\n"


def _posting(name: str, micros: int, currency: str, *meta: tuple[str, str]) -> list[str]:
    lines = [f"  {name}  {amount_text(micros, currency)}"]
    lines.extend(f"    {key}: {value}" for key, value in meta)
    return lines


def _carried_in(exported: list[ExportedAccount], names: dict[str, str], start: datetime) -> str:
    """Every account's balance before `start` as one transaction on the range's first day.

    It needs no equity counterpart: the ledger's debits equal its credits in every currency
    (invariant 2), so the balances carried in sum to zero by themselves, and bean-check would
    refuse the transaction if they did not.
    """
    postings: list[str] = []
    for item in sorted(exported, key=lambda e: names[e.account.code]):
        if item.opening is not None and item.opening.debits != item.opening.credits:
            net = item.opening.debits - item.opening.credits
            postings.extend(_posting(names[item.account.code], net, item.account.currency))
    if not postings:
        return ""
    header = [
        f'{start.date().isoformat()} * "Balances carried in from before {utc_text(start)}"'
        " #carried-in",
        f"  carried_in_before: {quoted(utc_text(start))}",
    ]
    return "\n".join(header + postings) + "\n\n"


def _transaction(entry: list[Transfer], names: dict[str, str]) -> str:
    first = entry[0]
    narration = first.description or f"{first.kind.value} {first.idempotency_key}"
    lines = [
        f"{first.effective_at.date().isoformat()} * {quoted(narration)} #{first.kind.value}",
        f"  journal_id: {quoted(str(first.journal_id))}",
        f"  kind: {quoted(first.kind.value)}",
        f"  idempotency_key: {quoted(first.idempotency_key)}",
        f"  effective_at: {quoted(utc_text(first.effective_at))}",
        f"  posted_at: {quoted(utc_text(first.posted_at))}",
    ]
    for transfer in entry:
        meta = [("transfer_id", quoted(str(transfer.id))), ("leg", str(transfer.leg))]
        if transfer.reverses_id is not None:
            meta.append(("reverses_id", quoted(str(transfer.reverses_id))))
        debit_meta = list(meta)
        if transfer.metadata:
            debit_meta.append(("metadata", quoted(dump_json(transfer.metadata))))
        currency = transfer.currency
        lines += _posting(names[transfer.debit_account], transfer.amount, currency, *debit_meta)
        lines += _posting(names[transfer.credit_account], -transfer.amount, currency, *meta)
    return "\n".join(lines) + "\n\n"


def _assertions(exported: list[ExportedAccount], names: dict[str, str], on: date) -> str:
    """Each account's debits minus credits from the ledger's own balances, asserted with no
    tolerance (`~ 0`): Beancount's default would let a one-micro-unit difference pass."""
    lines = [f"; the ledger's own balances, effective before {on.isoformat()}"]
    for item in sorted(exported, key=lambda e: names[e.account.code]):
        net = item.closing.debits - item.closing.credits
        amount = format_micros(net, MICRO_PLACES)
        currency = item.account.currency
        lines.append(f"{on.isoformat()} balance {names[item.account.code]} {amount} ~ 0 {currency}")
    return "\n".join(lines) + "\n"

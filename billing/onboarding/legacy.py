"""Onboarding the host application's existing users (`smsledger migrate-legacy`, SPEC §10).

Reads users with their Sippy account, currency and this month's SMS usage per destination
(format in docs/migrate-legacy.md), then: seeds the global settings, creates the customers, gives
users with more than 5,000 SMS this month the high-volume profile, and posts this month's usage
as opening usage entries (one per user and destination, carrying its message count) so the first
invoice bills it. Idempotent: every write is keyed, and a second run reports nothing created.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from billing.chart import CUSTOMER_ID, system_code, unbilled_code
from billing.currency import validate_currency
from billing.customers import find_customers, provision_customers, update_customer
from billing.keys import legacy_usage_key
from billing.settings import BillingDefaults, global_settings, put_settings, user_overrides
from billing.usage.ingestion import add_to_counters
from ledger.errors import LedgerError
from ledger.model import EntryRequest, Kind, Leg
from ledger.money import parse_micros
from ledger.posting import post_entries

HIGH_VOLUME_MESSAGES = 5_000
HIGH_VOLUME_PROFILE: dict[str, Any] = {
    "frequency": "weekly",
    "notify_at_percent": 90,
    "max_pending_invoices": 2,
}
"""Users above HIGH_VOLUME_MESSAGES this month: billed weekly (smaller invoices, sooner),
warned at 90 %, and blocked from sending with more than two unpaid invoices."""

PREFIX = re.compile(r"^[1-9][0-9]{0,14}$")


@dataclass
class LegacyUsage:
    destination: str
    country: str | None
    messages: int
    segments: int
    amount: int


@dataclass
class LegacyUser:
    user_id: str
    currency: str
    name: str | None = None
    sippy_account_id: str | None = None
    usage: list[LegacyUsage] = field(default_factory=list)

    @property
    def messages(self) -> int:
        return sum(u.messages for u in self.usage)


@dataclass
class MigrationSummary:
    users_processed: int = 0
    customers_created: int = 0
    custom_settings_created: int = 0
    initial_billing_records: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or value in (None, ""):
        raise ValueError(f"{name} is required")
    try:
        number = int(str(value))
    except ValueError:
        raise ValueError(f"{name} must be a whole number") from None
    if number < 0:
        raise ValueError(f"{name} cannot be negative")
    return number


def _record(raw: dict[str, Any], users: dict[str, LegacyUser]) -> None:
    """Fold one row (user fields, optional usage fields) into `users`. Raises ValueError."""
    user_id = str(raw.get("user_id") or "").strip()
    if not CUSTOMER_ID.match(user_id):
        raise ValueError("user_id must be 1-64 letters, digits, '.', '_' or '-'")
    currency = str(raw.get("currency") or "").strip()
    try:
        validate_currency(currency)
    except LedgerError:
        raise ValueError(f"currency {currency!r} is not ISO 4217") from None
    user = users.setdefault(user_id, LegacyUser(user_id, currency))
    if user.currency != currency:
        raise ValueError(f"user {user_id} appears with {user.currency} and {currency}")
    user.name = user.name or (str(raw.get("name") or "").strip() or None)
    user.sippy_account_id = user.sippy_account_id or (
        str(raw.get("sippy_account_id") or "").strip() or None
    )
    destination = str(raw.get("destination") or "").strip().lstrip("+")
    if not destination:
        return
    if not PREFIX.match(destination):
        raise ValueError("destination must be E.164 digits (a prefix or a number)")
    messages = _int(raw.get("messages"), "messages")
    segments = _int(raw.get("segments") or messages, "segments")
    try:
        amount = parse_micros(raw.get("amount") if raw.get("amount") is not None else "")
    except LedgerError as error:
        raise ValueError(f"amount: {error.message}") from None
    if amount < 0:
        raise ValueError("amount cannot be negative")
    country = str(raw.get("country") or "").strip().upper() or None
    user.usage.append(LegacyUsage(destination, country, messages, segments, amount))


def parse_legacy(text: str, fmt: str) -> tuple[list[LegacyUser], list[str]]:
    """Users from a CSV or JSON export, and one error per bad row (those rows are skipped)."""
    users: dict[str, LegacyUser] = {}
    errors: list[str] = []
    if fmt == "json":
        try:
            document = json.loads(text, parse_float=str)
        except ValueError as error:
            return [], [f"not valid JSON: {error}"]
        records = document.get("users") if isinstance(document, dict) else None
        if not isinstance(records, list):
            return [], ['expected {"users": [...]}']
        for index, record in enumerate(records):
            if not isinstance(record, dict):
                errors.append(f"users[{index}]: not an object")
                continue
            base = {k: v for k, v in record.items() if k != "usage"}
            rows = record.get("usage") or [{}]
            for row in rows if isinstance(rows, list) else [{}]:
                try:
                    _record({**base, **(row if isinstance(row, dict) else {})}, users)
                except ValueError as error:
                    errors.append(f"users[{index}]: {error}")
    else:
        reader = csv.DictReader(io.StringIO(text))
        missing = {"user_id", "currency"} - set(reader.fieldnames or [])
        if missing:
            return [], [f"missing columns: {', '.join(sorted(missing))}"]
        for line, row in enumerate(reader, start=2):
            try:
                _record(row, users)
            except ValueError as error:
                errors.append(f"line {line}: {error}")
    return list(users.values()), errors


def migrate_legacy(
    session: Session,
    users: list[LegacyUser],
    month_start: datetime,
    now: datetime,
    defaults: BillingDefaults,
) -> MigrationSummary:
    """Onboard `users` in the caller's transaction (roll it back for a dry run)."""
    summary = MigrationSummary()
    global_settings(session, defaults, now)
    existing = find_customers(session, [u.user_id for u in users])
    overrides = user_overrides(session)
    by_currency: dict[str, list[str]] = defaultdict(list)
    for user in users:
        if user.user_id not in existing:
            by_currency[user.currency].append(user.user_id)
    for currency, ids in by_currency.items():
        existing |= provision_customers(session, ids, currency, now)
        summary.customers_created += len(ids)
    entries: list[EntryRequest] = []
    month = month_start.strftime("%Y-%m")
    for user in users:
        customer = existing[user.user_id]
        if customer.currency != user.currency:
            summary.errors.append(
                f"user {user.user_id}: billed in {customer.currency},"
                f" the export says {user.currency}"
            )
            continue
        summary.users_processed += 1
        changes = {
            name: value
            for name, value in (("name", user.name), ("sippy_account_id", user.sippy_account_id))
            if value and getattr(customer, name) != value
        }
        if changes:
            update_customer(session, user.user_id, now, **changes)
        if not user.sippy_account_id and not customer.sippy_account_id:
            summary.warnings.append(f"user {user.user_id}: no Sippy account id, cannot be charged")
        if user.messages > HIGH_VOLUME_MESSAGES and user.user_id not in overrides:
            put_settings(session, user.user_id, HIGH_VOLUME_PROFILE, defaults, now)
            summary.custom_settings_created += 1
        for usage in user.usage:
            if usage.messages == 0 or usage.amount == 0:
                if usage.messages or usage.amount:
                    summary.warnings.append(
                        f"user {user.user_id}, {usage.destination}: messages or amount is zero;"
                        " not posted"
                    )
                continue
            entries.append(_opening_entry(user, usage, month, month_start))
    results = post_entries(session, entries, now)
    posted = [e for e, r in zip(entries, results, strict=True) if r.status == "posted"]
    summary.initial_billing_records = len(posted)
    _count(session, posted, month_start)
    return summary


def _opening_entry(
    user: LegacyUser, usage: LegacyUsage, month: str, month_start: datetime
) -> EntryRequest:
    return EntryRequest(
        Kind.USAGE,
        legacy_usage_key(month, user.user_id, usage.destination, usage.country),
        (
            Leg(
                unbilled_code(user.user_id),
                system_code("revenue:sms", user.currency),
                usage.amount,
            ),
        ),
        effective_at=month_start,
        description=f"opening usage {month} imported from the legacy system",
        metadata={
            "user_id": user.user_id,
            "country": usage.country,
            "prefix": usage.destination,
            "messages": usage.messages,
            "segments": usage.segments,
            "rate_id": None,
            "unit_price": None,
            "priced_by": "legacy",
        },
        currency=user.currency,
    )


def _count(session: Session, posted: list[EntryRequest], month_start: datetime) -> None:
    totals: dict[str, tuple[int, int, datetime]] = {}
    for entry in posted:
        metadata = entry.metadata or {}
        messages, segments, _ = totals.get(metadata["user_id"], (0, 0, month_start))
        totals[metadata["user_id"]] = (
            messages + int(metadata["messages"]),
            segments + int(metadata["segments"]),
            month_start,
        )
    add_to_counters(session, totals)

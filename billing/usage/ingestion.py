"""Usage ingestion: every SMS sent becomes one usage transfer, idempotent by `message_id`.

A request (one event or a batch of up to 10,000) is validated and rated in Python, then posted
in one set-based call to the ledger: all or nothing. Validation collects every problem of every
event, so a refused batch says everything that is wrong with it at once: one small checker per
field (or per group of fields that decide together) returns that field's `Problem`s, and an
event is built only when none of its checkers found any.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeGuard, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.chart import system_code, unbilled_code
from billing.currency import validate_currency
from billing.customers import Customer, find_customers_with_overrides, provision_customers
from billing.errors import InvalidUsage, UnknownCustomer
from billing.instants import parse_instant
from billing.settings import (
    GLOBAL_SCOPE,
    BillingDefaults,
    Settings,
    effective_settings,
    global_settings,
    merge,
)
from billing.tables import usage_counters
from billing.usage.holds import drop_holds
from billing.usage.problems import (
    INVALID_SEGMENTS,
    MAX_SEGMENTS,
    Checked,
    Problem,
    Problems,
    amount_shape_problem,
    check_user_id,
    is_segment_count,
)
from billing.usage.rating import Destination, count_segments, parse_destination, rate_cache
from billing.usage.thresholds import after_usage
from ledger.errors import LedgerError, TooManyDecimals
from ledger.model import MAX_KEY_LENGTH, EntryRequest, Kind, Leg, Transfer
from ledger.money import parse_micros
from ledger.posting import post_entries
from ledger.tables import UtcDateTime

_T = TypeVar("_T")

MAX_BATCH = 10_000
EVENT_FIELDS = frozenset(
    {
        "message_id",
        "user_id",
        "destination",
        "segments",
        "text_length",
        "encoding",
        "sent_at",
        "cost",
        "currency",
        "country",
        "prefix",
    }
)


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """One validated SMS, as the caller described it."""

    message_id: str
    user_id: str
    destination: Destination
    segments: int
    sent_at: datetime | None
    cost: int | None
    currency: str | None
    country: str | None
    prefix: str | None
    request: str


@dataclass(frozen=True, slots=True)
class UsageResult:
    message_id: str
    status: str
    transfer: Transfer

    @property
    def details(self) -> dict[str, Any]:
        return self.transfer.metadata or {}


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(value: object, limit: int) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= limit else None


# Problems whose message never varies exist once: a refused batch of 10,000 shares them.
_MESSAGE_ID_REQUIRED = (
    Problem("message_id", "required", f"message_id must be 1-{MAX_KEY_LENGTH} characters"),
)
_DESTINATION_REQUIRED = (
    Problem("destination", "required", "destination is required (E.164, e.g. +447400123456)"),
)
_INVALID_DESTINATION = (
    Problem("destination", "invalid_destination", "not a valid E.164 phone number"),
)
_SEGMENTS_REQUIRED = (
    Problem("segments", "segments_required", "send segments, or text_length and encoding"),
)
_INVALID_ENCODING = (Problem("encoding", "invalid_encoding", "encoding must be gsm7 or ucs2"),)
_INVALID_TEXT_LENGTH = (
    Problem("text_length", "invalid_text_length", "text_length must be a count >= 0"),
)
_INVALID_SENT_AT = (
    Problem("sent_at", "invalid_sent_at", "sent_at must be an RFC 3339 instant with offset"),
)
_COST_NOT_POSITIVE = (Problem("cost", "invalid_cost", "cost must be greater than zero"),)
_INVALID_CURRENCY = (Problem("currency", "invalid_currency", "currency must be an ISO 4217 code"),)
_PREFIX_MISMATCH = (
    Problem("prefix", "prefix_mismatch", "prefix must be leading digits of destination"),
)
_NOT_AN_OBJECT = (Problem("", "invalid_type", "an event is a JSON object"),)
# A tuple, not a set: `in` must compare, never hash, whatever JSON value arrives.
_ENCODINGS = ("gsm7", "ucs2")
MAX_TEXT_LENGTH = MAX_SEGMENTS * 67  # 255 parts of 67 UCS-2 units, the bound for either encoding


def _check_unknown_fields(raw: dict[str, Any]) -> Problems:
    """Fields the API does not define: refused rather than ignored, so a typo is never lost."""
    unknown = raw.keys() - EVENT_FIELDS
    if not unknown:
        return ()
    return tuple(
        Problem(name, "unknown_field", f"{name} is not a usage field") for name in sorted(unknown)
    )


def _check_message_id(raw: dict[str, Any]) -> Checked[str]:
    """The idempotency key: required, and short enough to be a ledger key."""
    message_id = _text(raw.get("message_id"), MAX_KEY_LENGTH)
    return (None, _MESSAGE_ID_REQUIRED) if message_id is None else (message_id, ())


def _check_destination(raw: dict[str, Any]) -> Checked[Destination]:
    """The number the SMS went to, as E.164 with its country."""
    text = raw.get("destination")
    if not isinstance(text, str) or not text:
        return None, _DESTINATION_REQUIRED
    destination = parse_destination(text[:32])  # bounds the parser's work on hostile input
    return (None, _INVALID_DESTINATION) if destination is None else (destination, ())


def _check_segments(raw: dict[str, Any]) -> Checked[int]:
    """The parts billed: `segments` as sent, else counted from `text_length` and `encoding`;
    those two are not checked when `segments` is sent."""
    segments = raw.get("segments")
    if segments is not None:
        if is_segment_count(segments):
            return segments, ()
        return None, INVALID_SEGMENTS
    text_length, encoding = raw.get("text_length"), raw.get("encoding")
    if text_length is None and encoding is None:
        return None, _SEGMENTS_REQUIRED
    return _count_segments(text_length, encoding)


def _count_segments(text_length: Any, encoding: Any) -> Checked[int]:
    """Segments from the message's length and encoding, both as sent; a bad encoding is reported
    before a bad length, both when both are bad."""
    problems: Problems = () if encoding in _ENCODINGS else _INVALID_ENCODING
    if not _is_int(text_length) or not 0 <= text_length <= MAX_TEXT_LENGTH:
        return None, problems + _INVALID_TEXT_LENGTH
    if problems:
        return None, problems
    return count_segments(text_length, encoding), ()


def _check_sent_at(raw: dict[str, Any]) -> Checked[datetime]:
    """When the SMS left, if the caller says: an instant with an offset, never a local time."""
    text = raw.get("sent_at")
    if text is None:
        return None, ()
    sent_at = parse_instant(text)
    return (None, _INVALID_SENT_AT) if sent_at is None else (sent_at, ())


def _check_cost(raw: dict[str, Any]) -> Checked[int]:
    """A price the caller fixed (it replaces the rate): exact micro-units above zero."""
    value = raw.get("cost")
    if value is None:
        return None, ()
    try:
        cost = parse_micros(value)
    except TooManyDecimals as error:
        return None, (Problem("cost", "too_many_decimals", error.message),)
    except LedgerError as error:
        return None, (Problem("cost", "invalid_cost", error.message),)
    if cost <= 0:
        return None, _COST_NOT_POSITIVE
    shape = amount_shape_problem(value)
    return (None, (Problem("cost", "invalid_cost", shape),)) if shape else (cost, ())


def _check_currency(raw: dict[str, Any]) -> Checked[str]:
    """The currency the caller expects to be billed in, if stated: an ISO 4217 code. Whether
    it is the customer's is known only at rating."""
    currency = raw.get("currency")
    if currency is None:
        return None, ()
    try:
        return validate_currency(currency), ()
    except LedgerError:
        return None, _INVALID_CURRENCY


def _check_country(raw: dict[str, Any], destination: Destination | None) -> Problems:
    """A stated country must be the number's; unchecked when the number itself is bad."""
    country = raw.get("country")
    if country is not None and destination is not None and country != destination.country:
        message = f"the number is in {destination.country}, not {country!r}"
        return (Problem("country", "country_mismatch", message),)
    return ()


def _check_prefix(raw: dict[str, Any], destination: Destination | None) -> Problems:
    """A stated rating prefix must be leading digits of the number; unchecked when the number
    itself is bad."""
    prefix = raw.get("prefix")
    if prefix is None or destination is None:
        return ()
    if isinstance(prefix, str) and prefix and destination.digits.startswith(prefix):
        return ()
    return _PREFIX_MISMATCH


def _check_event(raw: dict[str, Any]) -> UsageEvent | Problems:
    """One event's problems, in the order they are reported, or the event when there are none.

    Every checker reads the raw event (country and prefix also the parsed destination, and are
    skipped without one), so one bad field never hides another's problem.
    """
    message_id, message_id_problems = _check_message_id(raw)
    user_id, user_id_problems = check_user_id(raw)
    destination, destination_problems = _check_destination(raw)
    segments, segments_problems = _check_segments(raw)
    sent_at, sent_at_problems = _check_sent_at(raw)
    cost, cost_problems = _check_cost(raw)
    currency, currency_problems = _check_currency(raw)
    # Concatenating empty tuples allocates nothing: a valid event costs no problem objects.
    problems = (
        _check_unknown_fields(raw)
        + message_id_problems
        + user_id_problems
        + destination_problems
        + segments_problems
        + sent_at_problems
        + cost_problems
        + currency_problems
        + _check_country(raw, destination)
        + _check_prefix(raw, destination)
    )
    if problems:
        return problems
    # Without problems every required field has its value.
    assert message_id is not None and user_id is not None
    assert destination is not None and segments is not None
    country, prefix = raw.get("country"), raw.get("prefix")
    # What a replay is judged on (`EntryRequest.request`): the fields the caller sent, parsed.
    request = json.dumps(
        [
            message_id,
            user_id,
            destination.e164,
            raw.get("segments"),
            raw.get("text_length"),
            raw.get("encoding"),
            sent_at.isoformat() if sent_at else None,
            cost,
            currency,
            country,
            prefix,
        ],
        default=str,
    )
    return UsageEvent(
        message_id,
        user_id,
        destination,
        segments,
        sent_at,
        cost,
        currency,
        country,
        prefix,
        request,
    )


def validate_events(raw_events: Sequence[Any]) -> list[UsageEvent]:
    """Validate a request's events; all of them, or InvalidUsage listing every problem.

    Raises: InvalidUsage.
    """
    if len(raw_events) > MAX_BATCH:
        raise InvalidUsage(
            f"a batch holds at most {MAX_BATCH} events, this one {len(raw_events)}",
            errors=[{"index": None, "field": "events", "code": "batch_too_large"}],
        )
    if not raw_events:
        raise InvalidUsage(
            "no events", errors=[{"index": None, "field": "events", "code": "required"}]
        )
    errors: list[dict[str, Any]] = []
    events: list[UsageEvent] = []
    for index, raw in enumerate(raw_events):
        checked = _check_event(raw) if isinstance(raw, dict) else _NOT_AN_OBJECT
        if isinstance(checked, UsageEvent):
            events.append(checked)
            continue
        errors.extend(
            [
                {"index": index, "field": field, "code": code, "message": message}
                for field, code, message in checked
            ]
        )
    if errors:
        raise InvalidUsage(f"{len(errors)} problem(s) in the usage events", errors=errors)
    return events


def ingest_usage(
    session: Session, events: Sequence[UsageEvent], now: datetime, defaults: BillingDefaults
) -> list[UsageResult]:
    """Rate and post validated events in the caller's transaction, then run the threshold hook.

    Raises: UnknownCustomer (auto-provisioning off), InvalidUsage (currency mismatch,
    unpriceable destination), IdempotencyConflict.
    """
    user_ids = {event.user_id for event in events}
    customers, settings = _customers_and_settings(session, user_ids, defaults, now)
    unknown = user_ids - customers.keys()
    if unknown:
        if not defaults.auto_create_customers:
            raise UnknownCustomer(
                f"unknown user(s): {', '.join(sorted(unknown)[:10])}",
                errors=[
                    {"index": i, "field": "user_id", "code": "unknown_customer"}
                    for i, e in enumerate(events)
                    if e.user_id in unknown
                ],
            )
        customers |= provision_customers(session, unknown, settings[GLOBAL_SCOPE].currency, now)

    entries = _rate(session, events, customers, now)
    results = post_entries(session, entries, now)
    drop_holds(session, [event.message_id for event in events])  # captured by these posts
    posted = [
        UsageResult(event.message_id, result.status, result.transfers[0])
        for event, result in zip(events, results, strict=True)
    ]
    _count(session, [r for r in posted if r.status == "posted"])
    after_usage(session, {r.transfer.metadata["user_id"] for r in posted}, settings, now)  # type: ignore[index]
    return posted


def _customers_and_settings(
    session: Session, user_ids: set[str], defaults: BillingDefaults, now: datetime
) -> tuple[dict[str, Customer], dict[str, Settings]]:
    """The senders and their effective settings. Known senders come with their overrides in one
    statement, on the global settings the pre-send check also reads (held per process for
    `GLOBAL_CACHE_SECONDS`); a first-time sender (who may have overrides already) takes the full
    read. Measured: one round trip less per post (bench.profile_ingest)."""
    found = find_customers_with_overrides(session, user_ids)
    known = {user_id: customer for user_id, (customer, _) in found.items()}
    if len(found) < len(user_ids):
        return known, effective_settings(session, user_ids, defaults, now)
    base = global_settings(session, defaults, now)
    settings = {GLOBAL_SCOPE: base}
    for user_id, (_, overrides) in found.items():
        settings[user_id] = merge(base, overrides or {})
    return known, settings


def _rate(
    session: Session,
    events: Sequence[UsageEvent],
    customers: dict[str, Customer],
    now: datetime,
) -> list[EntryRequest]:
    errors: list[dict[str, Any]] = []
    entries: list[EntryRequest] = []
    for index, event in enumerate(events):
        customer = customers[event.user_id]
        currency = customer.currency
        if event.currency is not None and event.currency != currency:
            errors.append(
                {
                    "index": index,
                    "field": "currency",
                    "code": "currency_mismatch",
                    "message": f"user {event.user_id} is billed in {currency}",
                }
            )
            continue
        at = event.sent_at or now
        rate = rate_cache.find(
            session, event.prefix or event.destination.digits, currency, at, customer.rate_plan
        )
        if event.cost is not None:
            amount, unit_price = event.cost, None
        elif rate is None:
            errors.append(
                {
                    "index": index,
                    "field": "destination",
                    "code": "unpriceable_destination",
                    "message": f"no {currency} rate for {event.destination.e164}"
                    f" at {at.isoformat()}",
                }
            )
            continue
        else:
            amount, unit_price = rate.price_micros * event.segments, rate.price_micros
        prefix = event.prefix or (rate.prefix if rate else event.destination.calling_code)
        metadata = {
            "user_id": event.user_id,
            "destination": event.destination.e164,
            "country": event.destination.country,
            "prefix": prefix,
            "segments": event.segments,
            "rate_id": rate.id if rate and event.cost is None else None,
            "unit_price": unit_price,
            "priced_by": "cost" if event.cost is not None else "rate",
        }
        entries.append(
            EntryRequest(
                Kind.USAGE,
                event.message_id,
                (Leg(unbilled_code(event.user_id), system_code("revenue:sms", currency), amount),),
                effective_at=event.sent_at,
                metadata=metadata,
                currency=currency,
                request=event.request,
            )
        )
    if errors:
        raise InvalidUsage(f"{len(errors)} event(s) cannot be billed", errors=errors)
    return entries


_OLDEST = sa.bindparam("oldest", type_=UtcDateTime)
_ADD_USAGE = (
    sa.update(usage_counters)
    .where(usage_counters.c.customer_id == sa.bindparam("customer"))
    .values(
        unbilled_messages=usage_counters.c.unbilled_messages + sa.bindparam("messages"),
        unbilled_segments=usage_counters.c.unbilled_segments + sa.bindparam("segments_added"),
        oldest_unbilled_at=sa.case(
            (
                sa.or_(
                    usage_counters.c.oldest_unbilled_at.is_(None),
                    usage_counters.c.oldest_unbilled_at > _OLDEST,
                ),
                _OLDEST,
            ),
            else_=usage_counters.c.oldest_unbilled_at,
        ),
    )
)


def add_to_counters(session: Session, totals: dict[str, tuple[int, int, datetime]]) -> None:
    """Move each customer's counters once, in id order: messages, segments, and the earliest
    effective time of its unbilled usage. `totals`: customer -> (messages, segments, oldest)."""
    if totals:
        session.connection().execute(
            _ADD_USAGE,
            [
                {"customer": c, "messages": m, "segments_added": s, "oldest": oldest}
                for c, (m, s, oldest) in sorted(totals.items())
            ],
        )


def _count(session: Session, posted: list[UsageResult]) -> None:
    totals: dict[str, tuple[int, int, datetime]] = {}
    for result in posted:
        details = result.details
        customer = details["user_id"]
        at = result.transfer.effective_at
        messages, segments, oldest = totals.get(customer, (0, 0, at))
        totals[customer] = (messages + 1, segments + int(details["segments"]), min(oldest, at))
    add_to_counters(session, totals)

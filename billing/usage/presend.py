"""The pre-send check (SPEC §5-§6): may this user send these messages now?

Answered from indexed and cached state only: the customer row, the settings rows, the cached
balances of the customer's unbilled and receivable accounts, and the (customer, status) index
of invoices, and the customer's live holds. It never reads the customer's usage transfers. A
plain check writes nothing (beyond seeding the global settings the very first time they are
read); a reserving check (`reserve`) places a hold of the message's cost when it allows the send
(billing/usage/holds.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.chart import receivable_code, unbilled_code
from billing.errors import InvalidUsage
from billing.invoice import UNPAID, InvoiceStatus
from billing.settings import BillingDefaults, Settings, global_settings, merge
from billing.tables import billing_settings, customers, invoices
from billing.usage.holds import (
    Claim,
    Hold,
    check_claim,
    claim_columns,
    claim_from,
    held_amount,
    lock_holds_of,
    place_hold,
    release_hold,
)
from billing.usage.problems import (
    INVALID_SEGMENTS,
    Checked,
    Problem,
    Problems,
    amount_shape_problem,
    check_user_id,
    is_segment_count,
)
from billing.usage.rating import Rate, parse_destination, rate_cache
from ledger.errors import LedgerError
from ledger.model import MAX_KEY_LENGTH
from ledger.money import parse_micros
from ledger.tables import accounts, balances

MAX_MESSAGES = 1_000_000


@dataclass(frozen=True, slots=True)
class SendCheck:
    user_id: str
    message_count: int
    total_cost: int | None = None
    destination: str | None = None
    country: str | None = None
    prefix: str | None = None
    segments: int = 1
    reserve: bool = False
    message_id: str | None = None


# Why a send is blocked (Appendix A); None when it is allowed.
REASONS = (
    "customer_suspended",
    "pending_billings_require_approval",
    "max_pending_invoices",
    "credit_limit_exceeded",
)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str | None
    message: str
    currency: str
    unbilled: int
    limit: int | None
    percent_used: float | None
    pending_billings: int
    pending_amount: int
    estimated_cost: int
    held: int = 0
    hold: HoldOutcome | None = None

    @property
    def should_block(self) -> bool:
        return not self.allowed


@dataclass(frozen=True, slots=True)
class HoldOutcome:
    """What a reserving check did for its message: `held` (the hold stands, new or as placed
    before) or `posted` (the message's usage is in already, so nothing is held)."""

    status: str
    hold: Hold | None


_CHECK_FIELDS = {
    "user_id",
    "message_count",
    "total_cost",
    "destination",
    "country",
    "prefix",
    "segments",
    "reserve",
    "message_id",
}


def parse_check(body: Any) -> SendCheck:
    """Raises: InvalidUsage listing each bad field."""
    if not isinstance(body, dict):
        raise InvalidUsage(
            "the check is a JSON object", errors=[{"field": "", "code": "invalid_type"}]
        )
    user_id, user_problems = check_user_id(body)
    count, count_problems = _check_message_count(body)
    total_cost, cost_problems = _check_total_cost(body)
    segments, segments_problems = _check_segments(body)
    problems = [
        *(
            Problem(name, "unknown_field", f"{name} is not a check field")
            for name in sorted(body.keys() - _CHECK_FIELDS)
        ),
        *user_problems,
        *count_problems,
        *cost_problems,
        *_check_destination(body),
        *_check_strings(body, ("country", "prefix")),
        *segments_problems,
        *_check_reserve(body, count),
    ]
    if problems:
        errors = [problem._asdict() for problem in problems]
        raise InvalidUsage(f"{len(errors)} problem(s) in the check", errors=errors)
    assert user_id is not None and count is not None and segments is not None
    return SendCheck(
        user_id,
        count,
        total_cost,
        body.get("destination"),
        body.get("country"),
        body.get("prefix"),
        segments,
        body.get("reserve") is True,
        body.get("message_id"),
    )


def _check_segments(body: dict[str, Any]) -> Checked[int]:
    segments = body.get("segments")
    if segments is None:
        return 1, ()
    return (segments, ()) if is_segment_count(segments) else (None, INVALID_SEGMENTS)


def _check_reserve(body: dict[str, Any], count: int | None) -> Problems:
    """A reserving check holds one message, named by the `message_id` its post will carry,
    priced as that post will be: by `total_cost` (the post's `cost`), or by the rate of its
    destination (or prefix). `message_id` without `reserve` only names the message."""
    reserve, message_id = body.get("reserve"), body.get("message_id")
    problems: list[Problem] = []
    if reserve is not None and not isinstance(reserve, bool):
        problems.append(Problem("reserve", "invalid_type", "reserve must be true or false"))
    if message_id is not None and not (
        isinstance(message_id, str) and 0 < len(message_id) <= MAX_KEY_LENGTH
    ):
        message = f"message_id must be 1-{MAX_KEY_LENGTH} characters"
        problems.append(Problem("message_id", "invalid_message_id", message))
    if reserve is True:
        if message_id is None:
            message = "a reserving check names the message: message_id"
            problems.append(Problem("message_id", "required", message))
        if count is not None and count != 1:
            message = "a reserving check holds one message: message_count 1"
            problems.append(Problem("message_count", "invalid_message_count", message))
        if body.get("total_cost") is None and body.get("destination") is None:
            message = "a reserving check is priced as its post: send destination or total_cost"
            problems.append(Problem("destination", "required", message))
    return tuple(problems)


def _check_message_count(body: dict[str, Any]) -> Checked[int]:
    count = body.get("message_count", 1)
    if not isinstance(count, bool) and isinstance(count, int) and 1 <= count <= MAX_MESSAGES:
        return count, ()
    message = f"message_count must be 1 to {MAX_MESSAGES}"
    return None, (Problem("message_count", "invalid_message_count", message),)


def _check_total_cost(body: dict[str, Any]) -> Checked[int]:
    """What the caller says the messages cost (optional): a non-negative amount."""
    if body.get("total_cost") is None:
        return None, ()
    try:
        total_cost = parse_micros(body["total_cost"])
    except LedgerError as error:
        return None, (Problem("total_cost", "invalid_cost", error.message),)
    if total_cost < 0:
        return total_cost, (Problem("total_cost", "invalid_cost", "total_cost cannot be negative"),)
    shape = amount_shape_problem(body["total_cost"])
    return (None, (Problem("total_cost", "invalid_cost", shape),)) if shape else (total_cost, ())


def _check_destination(body: dict[str, Any]) -> Problems:
    destination = body.get("destination")
    if destination is None or (
        isinstance(destination, str) and parse_destination(destination[:32]) is not None
    ):
        return ()
    return (Problem("destination", "invalid_destination", "not a valid E.164 phone number"),)


def _check_strings(body: dict[str, Any], names: tuple[str, ...]) -> Problems:
    return tuple(
        Problem(name, "invalid_type", f"{name} must be a string")
        for name in names
        if body.get(name) is not None and not isinstance(body[name], str)
    )


def check_send(
    session: Session, check: SendCheck, now: datetime, defaults: BillingDefaults
) -> Decision:
    """The decision; for a reserving check also its hold, placed when the send is allowed and
    released when a replay of the check is now refused.

    Raises: InvalidUsage (a reserving check that cannot be priced), HoldConflict.
    """
    if check.reserve:
        lock_holds_of(session, check.user_id)  # before the read: see every earlier hold
    state = _state(session, check.user_id, now, check.message_id if check.reserve else None)
    base = global_settings(session, defaults, now)
    settings = merge(base, state.overrides or {})
    customer = state.customer
    currency = customer["currency"] if customer else settings.currency
    plan = customer["rate_plan"] if customer else None
    if not check.reserve:
        cost = _estimate(session, check, currency, plan, now)
        return _decide(state, settings, currency, cost)
    assert check.message_id is not None  # parse_check requires it with reserve
    claim = state.claim
    assert claim is not None  # read with the state for a reserving check
    check_claim(claim, check.message_id, check.user_id)
    if claim.posted_by is not None:  # sent and posted already: nothing left to hold
        return _decide(state, settings, currency, 0, HoldOutcome("posted", None))
    cost = _hold_amount(session, check, currency, plan, now)
    decision = _decide(state, settings, currency, cost)
    if not decision.allowed:
        if claim.live_hold(now) is not None:
            release_hold(session, check.message_id, now)
        return decision
    hold = place_hold(
        session,
        claim,
        check.message_id,
        check.user_id,
        cost,
        currency,
        now,
        defaults.hold_ttl_seconds,
    )
    return replace(decision, held=decision.held + hold.amount, hold=HoldOutcome("held", hold))


def _decide(
    state: _State,
    settings: Settings,
    currency: str,
    cost: int,
    hold: HoldOutcome | None = None,
) -> Decision:
    """The rules of SPEC §6 in order; the first that blocks decides. Live holds count as
    usage in the credit exposure and the percent used."""
    limit = (
        settings.credit_limit if settings.credit_limit is not None else settings.threshold_amount
    )
    used = state.unbilled + state.held
    percent = round(used * 100 / limit, 2) if limit else None

    def decide(reason: str | None, message: str) -> Decision:
        return Decision(
            reason is None,
            reason,
            message,
            currency,
            state.unbilled,
            limit,
            percent,
            state.unpaid,
            max(state.receivable, 0),
            cost,
            state.held,
            hold,
        )

    customer, unpaid = state.customer, state.unpaid
    if customer and customer["status"] == "suspended":
        return decide("customer_suspended", "The customer is suspended.")
    if settings.require_manual_approval and state.awaiting_approval:
        return decide(
            "pending_billings_require_approval",
            f"{state.awaiting_approval} billing(s) await an admin's approval.",
        )
    if settings.block_on_pending and unpaid:
        return decide("max_pending_invoices", f"{unpaid} unpaid invoice(s) block sending.")
    if (
        settings.max_pending_invoices is not None
        and unpaid
        and unpaid >= settings.max_pending_invoices
    ):
        return decide(
            "max_pending_invoices",
            f"{unpaid} unpaid invoice(s); at most {settings.max_pending_invoices} allowed.",
        )
    if settings.credit_limit is not None:
        exposure = credit_exposure_of(state.unbilled, state.receivable, state.held) + cost
        if exposure > settings.credit_limit:
            return decide(
                "credit_limit_exceeded",
                "Unbilled and unpaid usage, holds and this send would exceed the credit limit.",
            )
    return decide(None, "Sending is allowed.")


def credit_exposure_of(unbilled: int, receivable: int, held: int = 0) -> int:
    """What counts against `credit_limit` before the next send's cost: the unbilled usage, the
    live holds of reserving checks, and what unpaid invoices still owe (a receivable in credit
    counts as nothing)."""
    return unbilled + held + max(receivable, 0)


@dataclass(frozen=True, slots=True)
class _State:
    customer: dict[str, Any] | None
    overrides: dict[str, Any] | None
    unbilled: int
    receivable: int
    unpaid: int
    awaiting_approval: int
    held: int
    claim: Claim | None  # a reserving check's message: who has its id already


def _balance_of(code: sa.BindParameter[str]) -> sa.ScalarSelect[Any]:
    # Customer accounts are asset accounts: balance = debits - credits, over its slots.
    return (
        sa.select(sa.func.coalesce(sa.func.sum(balances.c.debits - balances.c.credits), 0))
        .join(accounts, accounts.c.id == balances.c.account_id)
        .where(accounts.c.code == code)
        .scalar_subquery()
    )


def _invoices_in(statuses: tuple[str, ...]) -> sa.ScalarSelect[Any]:
    return (
        sa.select(sa.func.count())
        .where(invoices.c.customer_id == sa.bindparam("user_id"), invoices.c.status.in_(statuses))
        .scalar_subquery()
    )


def _customer_field(name: str) -> sa.ScalarSelect[Any]:
    return (
        sa.select(customers.c[name])
        .where(customers.c.user_id == sa.bindparam("user_id"))
        .scalar_subquery()
    )


# Built once: every SMS asks, and building the expression costs more than running it.
_STATE = sa.select(
    _customer_field("currency").label("currency"),
    _customer_field("status").label("status"),
    _customer_field("rate_plan").label("rate_plan"),
    sa.select(billing_settings.c["values"])
    .where(billing_settings.c.scope == sa.bindparam("user_id"))
    .scalar_subquery()
    .label("overrides"),
    _balance_of(sa.bindparam("unbilled_code")).label("unbilled"),
    _balance_of(sa.bindparam("receivable_code")).label("receivable"),
    _invoices_in(UNPAID).label("unpaid"),
    _invoices_in((InvoiceStatus.PENDING,)).label("awaiting_approval"),
    held_amount().label("held"),
    *claim_columns(),
)


_SEND_STATE = "SELECT * FROM billing_send_state(%s, %s, %s, %s, %s, %s, %s)"
"""The same read as `_STATE`, as the function migration 0010 owns: its plan is kept per
connection, where the statement was planned on every check (planning cost more than running)."""


def read_state(
    session: Session, user_id: str, now: datetime, own_message_id: str, prepared: bool
) -> Any:
    """The state row: by `billing_send_state` (`prepared`, PostgreSQL) or by `_STATE`."""
    connection = session.connection()
    if prepared:
        (values,) = connection.exec_driver_sql(
            _SEND_STATE,
            (
                user_id,
                unbilled_code(user_id),
                receivable_code(user_id),
                now,
                own_message_id,
                list(UNPAID),
                InvoiceStatus.PENDING.value,
            ),
        ).all()
        row = dict(zip(_STATE.selected_columns.keys(), values, strict=True))
        if row["own_hold_expires_at"] is not None:
            row["own_hold_expires_at"] = row["own_hold_expires_at"].astimezone(UTC)
        return SimpleNamespace(**row)
    return connection.execute(
        _STATE,
        {
            "user_id": user_id,
            "unbilled_code": unbilled_code(user_id),
            "receivable_code": receivable_code(user_id),
            "now": now,
            "own_message_id": own_message_id,
        },
    ).one()


def _state(session: Session, user_id: str, now: datetime, own_message_id: str | None) -> _State:
    """Everything the decision needs, by primary keys and indexes, in one statement; the holds
    leave out `own_message_id`'s (a reserving check decides again without its own)."""
    prepared = session.get_bind().dialect.name == "postgresql"
    row = read_state(session, user_id, now, own_message_id or "", prepared)
    customer = (
        {"currency": row.currency, "status": row.status, "rate_plan": row.rate_plan}
        if row.currency is not None
        else None
    )
    return _State(
        customer,
        row.overrides,
        int(row.unbilled),
        int(row.receivable),
        int(row.unpaid),
        int(row.awaiting_approval),
        int(row.held),
        claim_from(row, own_message_id) if own_message_id else None,
    )


def _estimate(
    session: Session, check: SendCheck, currency: str, plan: str | None, now: datetime
) -> int:
    """This send's cost: as given, else priced by the rate table (`segments` per message, one
    unless said); 0 when it cannot be priced."""
    if check.total_cost is not None:
        return check.total_cost
    rate = _rate(session, check, currency, plan, now)
    return rate.price_micros * check.segments * check.message_count if rate else 0


def _rate(
    session: Session, check: SendCheck, currency: str, plan: str | None, now: datetime
) -> Rate | None:
    """The rate a post of this message would take now: by its prefix, else its number."""
    digits = check.prefix
    if digits is None and check.destination is not None:
        parsed = parse_destination(check.destination[:32])
        digits = parsed.digits if parsed else None
    return rate_cache.find(session, digits, currency, now, plan) if digits else None


def _hold_amount(
    session: Session, check: SendCheck, currency: str, plan: str | None, now: datetime
) -> int:
    """The message's cost priced as its post will price it (`total_cost` standing for the
    post's `cost`). Raises: InvalidUsage when the post could not be priced either."""
    if check.total_cost is not None:
        return check.total_cost
    rate = _rate(session, check, currency, plan, now)
    if rate is None:
        raise InvalidUsage(
            f"no {currency} rate for {check.destination or check.prefix}: nothing to hold",
            errors=[{"field": "destination", "code": "unpriceable_destination"}],
        )
    return rate.price_micros * check.segments

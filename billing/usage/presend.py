"""The pre-send check (SPEC §5-§6): may this user send these messages now?

Answered from indexed and cached state only: the customer row, the settings rows, the cached
balances of the customer's unbilled and receivable accounts, and the (customer, status) index
of invoices. It never reads the customer's usage transfers. It writes nothing (beyond seeding
the global settings the very first time they are read).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.chart import receivable_code, unbilled_code
from billing.errors import InvalidUsage
from billing.invoice import UNPAID, InvoiceStatus
from billing.settings import BillingDefaults, global_settings, merge
from billing.tables import billing_settings, customers, invoices
from billing.usage.problems import (
    Checked,
    Problem,
    Problems,
    amount_shape_problem,
    check_user_id,
)
from billing.usage.rating import parse_destination, rate_cache
from ledger.errors import LedgerError
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

    @property
    def should_block(self) -> bool:
        return not self.allowed


_CHECK_FIELDS = {"user_id", "message_count", "total_cost", "destination", "country", "prefix"}


def parse_check(body: Any) -> SendCheck:
    """Raises: InvalidUsage listing each bad field."""
    if not isinstance(body, dict):
        raise InvalidUsage(
            "the check is a JSON object", errors=[{"field": "", "code": "invalid_type"}]
        )
    user_id, user_problems = check_user_id(body)
    count, count_problems = _check_message_count(body)
    total_cost, cost_problems = _check_total_cost(body)
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
    ]
    if problems:
        errors = [problem._asdict() for problem in problems]
        raise InvalidUsage(f"{len(errors)} problem(s) in the check", errors=errors)
    assert user_id is not None and count is not None
    return SendCheck(
        user_id, count, total_cost, body.get("destination"), body.get("country"), body.get("prefix")
    )


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
    state = _state(session, check.user_id)
    base = global_settings(session, defaults, now)
    settings = merge(base, state.overrides or {})
    customer = state.customer
    currency = customer["currency"] if customer else settings.currency
    unbilled, receivable = state.unbilled, state.receivable
    unpaid, awaiting_approval = state.unpaid, state.awaiting_approval
    cost = _estimate(session, check, currency, customer["rate_plan"] if customer else None, now)
    limit = (
        settings.credit_limit if settings.credit_limit is not None else settings.threshold_amount
    )
    percent = round(unbilled * 100 / limit, 2) if limit else None

    def decide(reason: str | None, message: str) -> Decision:
        return Decision(
            reason is None,
            reason,
            message,
            currency,
            unbilled,
            limit,
            percent,
            unpaid,
            max(receivable, 0),
            cost,
        )

    if customer and customer["status"] == "suspended":
        return decide("customer_suspended", "The customer is suspended.")
    if settings.require_manual_approval and awaiting_approval:
        return decide(
            "pending_billings_require_approval",
            f"{awaiting_approval} billing(s) await an admin's approval.",
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
        exposure = credit_exposure_of(unbilled, receivable) + cost
        if exposure > settings.credit_limit:
            return decide(
                "credit_limit_exceeded",
                "Unbilled and unpaid usage plus this send would exceed the credit limit.",
            )
    return decide(None, "Sending is allowed.")


def credit_exposure_of(unbilled: int, receivable: int) -> int:
    """What counts against `credit_limit` before the next send's cost: the unbilled usage plus
    what unpaid invoices still owe (a receivable in credit counts as nothing)."""
    return unbilled + max(receivable, 0)


@dataclass(frozen=True, slots=True)
class _State:
    customer: dict[str, Any] | None
    overrides: dict[str, Any] | None
    unbilled: int
    receivable: int
    unpaid: int
    awaiting_approval: int


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
)


def _state(session: Session, user_id: str) -> _State:
    """Everything the decision needs, by primary keys and indexes, in one statement."""
    row = (
        session.connection()
        .execute(
            _STATE,
            {
                "user_id": user_id,
                "unbilled_code": unbilled_code(user_id),
                "receivable_code": receivable_code(user_id),
            },
        )
        .one()
    )
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
    )


def _estimate(
    session: Session, check: SendCheck, currency: str, plan: str | None, now: datetime
) -> int:
    """This send's cost: as given, else priced by the rate table (one segment per message)."""
    if check.total_cost is not None:
        return check.total_cost
    digits = check.prefix
    if digits is None and check.destination is not None:
        parsed = parse_destination(check.destination[:32])
        digits = parsed.digits if parsed else None
    if not digits:
        return 0
    rate = rate_cache.find(session, digits, currency, now, plan)
    return rate.price_micros * check.message_count if rate else 0

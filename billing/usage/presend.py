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

from billing.chart import CUSTOMER_ID, receivable_code, unbilled_code
from billing.errors import InvalidUsage
from billing.settings import BillingDefaults, global_settings, merge
from billing.tables import UNPAID_STATUSES, billing_settings, customers, invoices
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


def parse_check(body: Any) -> SendCheck:
    """Raises: InvalidUsage listing each bad field."""
    errors: list[dict[str, Any]] = []

    def problem(field: str, code: str, message: str) -> None:
        errors.append({"field": field, "code": code, "message": message})

    if not isinstance(body, dict):
        raise InvalidUsage(
            "the check is a JSON object", errors=[{"field": "", "code": "invalid_type"}]
        )
    allowed = {"user_id", "message_count", "total_cost", "destination", "country", "prefix"}
    for name in sorted(body.keys() - allowed):
        problem(name, "unknown_field", f"{name} is not a check field")
    user_id = body.get("user_id")
    if not isinstance(user_id, str) or not CUSTOMER_ID.match(user_id):
        problem("user_id", "invalid_user_id", "user_id must be 1-64 letters, digits, . _ -")
    count = body.get("message_count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_MESSAGES:
        problem(
            "message_count", "invalid_message_count", f"message_count must be 1 to {MAX_MESSAGES}"
        )
    total_cost = None
    if body.get("total_cost") is not None:
        try:
            total_cost = parse_micros(body["total_cost"])
            if total_cost < 0:
                problem("total_cost", "invalid_cost", "total_cost cannot be negative")
        except LedgerError as error:
            problem("total_cost", "invalid_cost", error.message)
    destination = body.get("destination")
    if destination is not None and (
        not isinstance(destination, str) or parse_destination(destination[:32]) is None
    ):
        problem("destination", "invalid_destination", "not a valid E.164 phone number")
    for name in ("country", "prefix"):
        if body.get(name) is not None and not isinstance(body[name], str):
            problem(name, "invalid_type", f"{name} must be a string")
    if errors:
        raise InvalidUsage(f"{len(errors)} problem(s) in the check", errors=errors)
    assert isinstance(user_id, str)
    return SendCheck(
        user_id, count, total_cost, destination, body.get("country"), body.get("prefix")
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
        exposure = unbilled + max(receivable, 0) + cost
        if exposure > settings.credit_limit:
            return decide(
                "credit_limit_exceeded",
                "Unbilled and unpaid usage plus this send would exceed the credit limit.",
            )
    return decide(None, "Sending is allowed.")


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
    _invoices_in(UNPAID_STATUSES).label("unpaid"),
    _invoices_in(("pending",)).label("awaiting_approval"),
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
    rate = rate_cache.get(session).find(digits, currency, now, plan)
    return rate.price_micros * check.message_count if rate else 0

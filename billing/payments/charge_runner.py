"""Moving money in Sippy for one invoice — a charge or a refund — as a runner, so it opens its
own units of work (decision 0013).

Sippy's `accountDebit` and `accountCredit` have no idempotency key and may take seconds, so a
move cannot be one transaction: plan it (lock the invoice, record the attempt with our unique
reference) and commit; call Sippy with no transaction open; record the answer in a second
transaction. An unanswered attempt is looked up by its reference instead of being sent again,
and before any new attempt every earlier one is looked up again. The steps themselves are
service functions taking a `Session`: `billing.payments.charging` for charges,
`billing.payments.refunds` for refunds; `run_steps` drives either.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy.orm import Session

from billing.payments import charging, refunds
from billing.payments.charging import Call, ChargePolicy, CheckEarlier, Lookup, Plan, Skip
from billing.payments.sippy_client import ChargeOutcome, Payment, SippyError
from billing.settings import BillingDefaults
from ledger.db import run_in_transaction
from ledger.money import Money

log = logging.getLogger("smsledger.billing")


class Gateway(Protocol):
    """What charging and refunding need from Sippy (the client, or a test's wrapper)."""

    def debit(
        self, account_id: int, amount: Money, reference: str, at: datetime
    ) -> ChargeOutcome: ...

    def find_debit(
        self, account_id: int, reference: str, start: datetime, end: datetime
    ) -> Payment | None: ...

    def credit(
        self, account_id: int, amount: Money, reference: str, at: datetime
    ) -> ChargeOutcome: ...

    def find_credit(
        self, account_id: int, reference: str, start: datetime, end: datetime
    ) -> Payment | None: ...


@dataclass(frozen=True)
class Steps:
    """One kind of money move: how to plan it, send it, find it, and record what happened."""

    plan: Callable[[Session, bool], Plan]  # (session, earlier attempts already checked)
    send: Callable[[int, Money, str, datetime], ChargeOutcome]
    find: Callable[[int, str, datetime, datetime], Payment | None]
    record: Callable[[Session, uuid.UUID, ChargeOutcome], str]
    resolve: Callable[[Session, uuid.UUID, Payment | None], str]  # an open attempt looked up
    found_late: Callable[[Session, uuid.UUID, Payment], str]  # an earlier attempt was applied


def charge_invoice(
    sessions: Callable[[], Session],
    gateway: Gateway,
    invoice_id: uuid.UUID,
    clock: Callable[[], datetime],
    defaults: BillingDefaults,
    policy: ChargePolicy = ChargePolicy(),
) -> str:
    """Take the invoice one step towards paid; what happened ("paid", "failed", "unknown",
    "in_flight", "not_due", ...). Safe to run twice and concurrently: the invoice row lock and
    the open-attempt rule decide, never the caller."""
    steps = Steps(
        plan=lambda s, checked: charging.plan_charge(
            s, invoice_id, clock(), policy, defaults, earlier_checked=checked
        ),
        send=gateway.debit,
        find=gateway.find_debit,
        record=lambda s, a, o: charging.record_outcome(s, a, o, clock(), defaults, policy),
        resolve=lambda s, a, p: charging.resolve_attempt(s, a, p, clock(), defaults, policy),
        found_late=lambda s, a, p: charging.settle_late(s, a, p, clock(), defaults),
    )
    return run_steps(sessions, steps, clock, policy, invoice_id)


def refund_invoice(
    sessions: Callable[[], Session],
    gateway: Gateway,
    invoice_id: uuid.UUID,
    clock: Callable[[], datetime],
    policy: ChargePolicy = ChargePolicy(),
) -> str:
    """Take the invoice's requested refund one step towards done ("refunded", "declined",
    "unknown", "in_flight", ...); as safe to repeat as a charge."""
    steps = Steps(
        plan=lambda s, checked: refunds.plan_refund(
            s, invoice_id, clock(), policy, earlier_checked=checked
        ),
        send=gateway.credit,
        find=gateway.find_credit,
        record=lambda s, a, o: refunds.record_refund(s, a, o, clock()),
        resolve=lambda s, a, p: refunds.resolve_refund(s, a, p, clock()),
        found_late=lambda s, a, p: refunds.resolve_refund(s, a, p, clock()),
    )
    return run_steps(sessions, steps, clock, policy, invoice_id)


def run_steps(
    sessions: Callable[[], Session],
    steps: Steps,
    clock: Callable[[], datetime],
    policy: ChargePolicy,
    invoice_id: uuid.UUID,
) -> str:
    """Plan, then look up, or send and record: one unit of work per step, none open while
    Sippy is called."""
    plan = run_in_transaction(sessions, lambda s: steps.plan(s, False))
    if isinstance(plan, Skip):
        return plan.reason
    if isinstance(plan, Lookup):
        attempt_id = plan.attempt_id
        try:
            payment = _look_up(
                steps, plan.account_id, plan.reference, plan.started_at, clock(), policy
            )
        except SippyError as error:
            return _unresolved(invoice_id, error)
        return run_in_transaction(sessions, lambda s: steps.resolve(s, attempt_id, payment))
    if isinstance(plan, CheckEarlier):
        try:
            found = _earlier_applied(steps, plan, clock(), policy)
        except SippyError as error:
            return _unresolved(invoice_id, error)  # no new attempt until Sippy can be asked
        if found:
            late_attempt, late_payment = found[0]
            return run_in_transaction(
                sessions, lambda s: steps.found_late(s, late_attempt, late_payment)
            )
        plan = run_in_transaction(sessions, lambda s: steps.plan(s, True))
    if not isinstance(plan, Call):
        return plan.reason if isinstance(plan, Skip) else "unresolved"
    call = plan
    log.info("Processing SMS billing", extra={"invoice_id": str(invoice_id)})
    outcome = steps.send(call.account_id, call.amount, call.reference, clock())
    return run_in_transaction(sessions, lambda s: steps.record(s, call.attempt_id, outcome))


def _earlier_applied(
    steps: Steps, plan: CheckEarlier, now: datetime, policy: ChargePolicy
) -> list[tuple[uuid.UUID, Payment]]:
    """The earlier attempts Sippy did apply after all (usually none). Raises: SippyError."""
    found = []
    for attempt_id, reference in plan.references:
        payment = _look_up(steps, plan.account_id, reference, plan.since, now, policy)
        if payment is not None:
            found.append((attempt_id, payment))
    return found


def _look_up(
    steps: Steps,
    account_id: int,
    reference: str,
    since: datetime,
    now: datetime,
    policy: ChargePolicy,
) -> Payment | None:
    """The move carrying `reference` in Sippy's history around [since, now], if any."""
    margin = policy.lookup_margin
    return steps.find(account_id, reference, since - margin, now + margin)


def _unresolved(invoice_id: uuid.UUID, error: SippyError) -> str:
    log.warning(
        "Charge lookup failed",
        extra={"invoice_id": str(invoice_id), "code": error.code, "reason": error.message},
    )
    return "unresolved"

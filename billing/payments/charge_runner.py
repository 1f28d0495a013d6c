"""Charging one invoice in Sippy: a runner, so it opens its own units of work (decision 0013).

Sippy's `accountDebit` has no idempotency key and may take seconds, so a charge cannot be one
transaction: plan it (lock the invoice, record the attempt with our unique reference) and
commit; call Sippy with no transaction open; record the answer in a second transaction. An
unanswered attempt is looked up by its reference instead of being charged again. The steps
themselves are the service functions of `billing.payments.charging`, each taking a `Session`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from sqlalchemy.orm import Session

from billing.payments.charging import (
    ChargePolicy,
    Lookup,
    Skip,
    plan_charge,
    record_outcome,
    resolve_attempt,
)
from billing.payments.sippy_client import ChargeOutcome, Payment, SippyError
from billing.settings import BillingDefaults
from ledger.db import run_in_transaction
from ledger.money import Money

log = logging.getLogger("smsledger.billing")


class Gateway(Protocol):
    """What charging needs from Sippy (the client, or a test's wrapper around it)."""

    def debit(
        self, account_id: int, amount: Money, reference: str, at: datetime
    ) -> ChargeOutcome: ...

    def find_debit(
        self, account_id: int, reference: str, start: datetime, end: datetime
    ) -> Payment | None: ...


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
    plan = run_in_transaction(sessions, lambda s: plan_charge(s, invoice_id, clock(), policy))
    if isinstance(plan, Skip):
        return plan.reason
    if isinstance(plan, Lookup):
        now = clock()
        try:
            payment = gateway.find_debit(
                plan.account_id,
                plan.reference,
                plan.started_at - policy.lookup_margin,
                now + policy.lookup_margin,
            )
        except SippyError as error:
            log.warning(
                "Charge lookup failed",
                extra={"invoice_id": str(invoice_id), "code": error.code, "reason": error.message},
            )
            return "unresolved"
        return run_in_transaction(
            sessions,
            lambda s: resolve_attempt(s, plan.attempt_id, payment, clock(), defaults, policy),
        )
    log.info("Processing SMS billing", extra={"invoice_id": str(invoice_id)})
    outcome = gateway.debit(plan.account_id, plan.amount, plan.reference, clock())
    return run_in_transaction(
        sessions,
        lambda s: record_outcome(s, plan.attempt_id, outcome, clock(), defaults, policy),
    )

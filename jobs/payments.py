"""Payment jobs: charge one invoice, refund one invoice, and dispatch every charge and refund
that is due (new invoices and refund requests from the outbox, retries whose time has come,
unanswered attempts old enough to look up)."""

from __future__ import annotations

import logging
import uuid

from sqlalchemy.orm import Session

from billing.outbox import Topic, claim_outbox
from billing.payments.charge_runner import charge_invoice as charge_step
from billing.payments.charge_runner import refund_invoice as refund_step
from billing.payments.charging import due_charges
from billing.payments.refunds import due_refunds
from infra.logs import warn_once
from infra.metrics import CHARGES, timed_job
from jobs.context import current, hand_off
from ledger.db import run_in_transaction

log = logging.getLogger("smsledger.jobs")


def charge_invoice(invoice_id: str) -> str:
    """Take one invoice a step towards paid (safe to run twice or at once: see
    `billing.payments.charging`); what happened."""
    context = current()
    if context.gateway is None:
        log.warning("SIPPY_URL is not set: the charge waits", extra={"invoice_id": invoice_id})
        return "no_gateway"
    with timed_job("charge_invoice"):
        outcome = charge_step(
            context.sessions,
            context.gateway,
            uuid.UUID(invoice_id),
            context.clock,
            context.defaults,
            context.charge_policy,
        )
    CHARGES.labels(outcome).inc()
    return outcome


def refund_invoice(invoice_id: str) -> str:
    """Take one invoice's requested refund a step towards done (as safe to repeat as a
    charge); what happened."""
    context = current()
    if context.gateway is None:
        log.warning("SIPPY_URL is not set: the refund waits", extra={"invoice_id": invoice_id})
        return "no_gateway"
    with timed_job("refund_invoice"):
        return refund_step(
            context.sessions,
            context.gateway,
            uuid.UUID(invoice_id),
            context.clock,
            context.charge_policy,
        )


def dispatch_charges() -> dict[str, int]:
    """Hand every due charge to a `charge_invoice` job; how many. Without Sippy configured
    nothing is claimed: the charges stay due (and queued) until it is."""
    context = current()
    if context.gateway is None:
        warn_once(log, "SIPPY_URL is not set: due charges wait until it is")
        return {"dispatched": 0}
    now = context.clock()

    policy = context.charge_policy

    def claim(session: Session) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
        def queued(topic: Topic) -> list[uuid.UUID]:
            return [uuid.UUID(p["invoice_id"]) for p in claim_outbox(session, topic.value, now)]

        charges = queued(Topic.CHARGE_INVOICE) + due_charges(session, now, policy)
        refunds = queued(Topic.REFUND_INVOICE) + due_refunds(session, now, policy)
        return list(dict.fromkeys(charges)), list(dict.fromkeys(refunds))

    with timed_job("dispatch_charges"):
        charges, refunds = run_in_transaction(context.sessions, claim)
    for invoice_id in charges:
        hand_off("payments", charge_invoice, (str(invoice_id),), f"charge-{invoice_id}")
    for invoice_id in refunds:
        hand_off("payments", refund_invoice, (str(invoice_id),), f"refund-{invoice_id}")
    return {"dispatched": len(charges) + len(refunds)}

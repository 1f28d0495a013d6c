"""Payment jobs: charge one invoice, and dispatch every charge that is due (new invoices from
the outbox, retries whose time has come, unanswered attempts old enough to look up)."""

from __future__ import annotations

import logging
import uuid

from sqlalchemy.orm import Session

from billing.outbox import claim_outbox
from billing.payments.charge_runner import charge_invoice as charge_step
from billing.payments.charging import due_charges
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


def dispatch_charges() -> dict[str, int]:
    """Hand every due charge to a `charge_invoice` job; how many. Without Sippy configured
    nothing is claimed: the charges stay due (and queued) until it is."""
    context = current()
    if context.gateway is None:
        warn_once(log, "SIPPY_URL is not set: due charges wait until it is")
        return {"dispatched": 0}
    now = context.clock()

    def claim(session: Session) -> list[uuid.UUID]:
        queued = [uuid.UUID(p["invoice_id"]) for p in claim_outbox(session, "charge_invoice", now)]
        return list(dict.fromkeys(queued + due_charges(session, now, context.charge_policy)))

    with timed_job("dispatch_charges"):
        invoice_ids = run_in_transaction(context.sessions, claim)
    for invoice_id in invoice_ids:
        hand_off("payments", charge_invoice, (str(invoice_id),), f"charge-{invoice_id}")
    return {"dispatched": len(invoice_ids)}

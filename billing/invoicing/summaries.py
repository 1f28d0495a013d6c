"""What an end user sees of their billing (SPEC §7, Appendix A): the open period's usage against
its limits, when it will be billed, what is still unpaid, and the invoice history with each
invoice's breakdown per country. Figures come from the ledger's cached balances and the
invoices, so they always agree with the accountants' view."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.chart import receivable_code
from billing.customers import get_customer
from billing.invoice import UNPAID
from billing.invoicing.periods import next_billing_at
from billing.paging import Page, fetch_page
from billing.settings import BillingDefaults, Settings, effective_settings
from billing.tables import invoice_lines, invoices
from billing.usage.holds import held_by
from billing.usage.presend import credit_exposure_of
from billing.usage.thresholds import percent_used, unbilled_state
from ledger.balances import cached_balances


@dataclass(frozen=True, slots=True)
class Summary:
    user_id: str
    currency: str
    settings: Settings
    period_start: datetime
    next_billing_at: datetime | None
    unbilled_micros: int
    unbilled_messages: int
    held_micros: int  # live holds of reserving pre-send checks: not usage, not in the ledger
    percent_used: float | None
    pending_count: int
    pending_micros: int
    last_invoice: Any | None


def billing_summary(
    session: Session, user_id: str, defaults: BillingDefaults, now: datetime
) -> Summary:
    """Raises: CustomerNotFound."""
    customer = get_customer(session, user_id)
    settings = effective_settings(session, [user_id], defaults, now)[user_id]
    ((_, amount, messages, start),) = unbilled_state(session, [user_id])
    pending = session.execute(
        sa.select(
            sa.func.count(), sa.func.coalesce(sa.func.sum(invoices.c.amount_micros), 0)
        ).where(invoices.c.customer_id == user_id, invoices.c.status.in_(UNPAID))
    ).one()
    last = session.execute(
        sa.select(invoices)
        .where(invoices.c.customer_id == user_id)
        .order_by(invoices.c.created_at.desc(), invoices.c.id.desc())
        .limit(1)
    ).one_or_none()
    return Summary(
        user_id,
        customer.currency,
        settings,
        start,
        next_billing_at(settings.frequency, now),
        amount,
        messages,
        held_by(session, user_id, now),
        percent_used(settings, amount, messages),
        int(pending[0]),
        int(pending[1]),
        last,
    )


def billing_history(
    session: Session, user_id: str, status: str | None, limit: int, offset: int
) -> Page:
    """The user's invoices, newest first, each as (invoice, its lines per country and prefix)."""
    filters = [invoices.c.customer_id == user_id]
    if status is not None:
        filters.append(invoices.c.status == status)
    order = [invoices.c.created_at.desc(), invoices.c.id.desc()]
    page = fetch_page(session, invoices, filters, order, limit, offset)
    lines: dict[Any, list[Any]] = defaultdict(list)
    if page.items:
        for line in session.execute(
            sa.select(invoice_lines)
            .where(invoice_lines.c.invoice_id.in_([row.id for row in page.items]))
            .order_by(invoice_lines.c.country, invoice_lines.c.prefix)
        ).all():
            lines[line.invoice_id].append(line)
    return Page([(row, lines.get(row.id, [])) for row in page.items], page.total)


def credit_exposure(session: Session, summary: Summary) -> int:
    """What the pre-send check (`billing.usage.presend.check_send`) holds against
    `credit_limit` before the cost of the next send, for `summary`'s user: its unbilled usage
    and live holds, and what unpaid invoices still owe (the receivable, never below zero, from
    the cached balance)."""
    receivable = receivable_code(summary.user_id)
    found = cached_balances(session, [receivable])
    return credit_exposure_of(
        summary.unbilled_micros,
        found[receivable].balance if receivable in found else 0,
        summary.held_micros,
    )

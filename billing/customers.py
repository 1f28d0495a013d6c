"""Customers: the users the SMS platform bills, each with one currency and a chart of accounts.

Provisioning creates the customer row, its usage counters and its ledger accounts together, and
is safe to race: every insert ignores a row a concurrent unit of work created first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.chart import customer_specs, system_specs, validate_customer_id
from billing.currency import validate_currency
from billing.errors import CustomerExists, CustomerNotFound
from billing.paging import Page, fetch_page
from billing.settings import GLOBAL_SCOPE, BillingDefaults, effective_settings
from billing.tables import billing_settings, customers, usage_counters
from ledger.accounts import ensure_accounts, insert_ignoring_conflicts


@dataclass(frozen=True, slots=True)
class Customer:
    user_id: str
    name: str | None
    currency: str
    status: str
    sippy_account_id: str | None
    webhook_url: str | None
    rate_plan: str | None
    created_at: datetime

    @property
    def suspended(self) -> bool:
        return self.status == "suspended"


def _to_customer(row: Any) -> Customer:
    return Customer(
        row.user_id,
        row.name,
        row.currency,
        row.status,
        row.sippy_account_id,
        row.webhook_url,
        row.rate_plan,
        row.created_at,
    )


_FIND = sa.select(customers).where(customers.c.user_id.in_(sa.bindparam("ids", expanding=True)))


def find_customers(session: Session, user_ids: Iterable[str]) -> dict[str, Customer]:
    wanted = sorted(set(user_ids))
    if not wanted:
        return {}
    rows = session.connection().execute(_FIND, {"ids": wanted})
    return {row.user_id: _to_customer(row) for row in rows}


_FIND_WITH_OVERRIDES = (
    sa.select(customers, billing_settings.c["values"].label("overrides"))
    .outerjoin(billing_settings, billing_settings.c.scope == customers.c.user_id)
    .where(customers.c.user_id.in_(sa.bindparam("ids", expanding=True)))
)


def find_customers_with_overrides(
    session: Session, user_ids: Iterable[str]
) -> dict[str, tuple[Customer, dict[str, Any] | None]]:
    """The existing customers among `user_ids`, each with its settings overrides (None when it
    has none), in one statement: what every usage post reads first."""
    wanted = sorted(set(user_ids))
    if not wanted:
        return {}
    rows = session.connection().execute(_FIND_WITH_OVERRIDES, {"ids": wanted})
    return {row.user_id: (_to_customer(row), row.overrides) for row in rows}


def provision_customers(
    session: Session, user_ids: Iterable[str], currency: str, now: datetime
) -> dict[str, Customer]:
    """Create the customers that do not exist yet (with counters and accounts) and return all
    of `user_ids`.

    Raises: InvalidTransfer for an id that cannot name accounts; InvalidCurrency.
    """
    wanted = sorted({validate_customer_id(user_id) for user_id in user_ids})
    if not wanted:
        return {}
    session.execute(
        insert_ignoring_conflicts(session, customers).on_conflict_do_nothing(
            index_elements=["user_id"]
        ),
        [
            {
                "user_id": user_id,
                "currency": currency,
                "status": "active",
                "created_at": now,
                "updated_at": now,
            }
            for user_id in wanted
        ],
    )
    session.execute(
        insert_ignoring_conflicts(session, usage_counters).on_conflict_do_nothing(
            index_elements=["customer_id"]
        ),
        [{"customer_id": u, "unbilled_messages": 0, "unbilled_segments": 0} for u in wanted],
    )
    found = find_customers(session, wanted)
    specs = [spec for c in found.values() for spec in customer_specs(c.user_id, c.currency)]
    specs += [
        spec for cur in sorted({c.currency for c in found.values()}) for spec in system_specs(cur)
    ]
    ensure_accounts(session, specs, now)
    return found


def update_customer(session: Session, user_id: str, now: datetime, **changes: Any) -> Customer:
    """Change a customer's status, name, Sippy account, webhook URL or rate plan.

    Raises: CustomerNotFound.
    """
    allowed = {"status", "name", "sippy_account_id", "webhook_url", "rate_plan"}
    assert set(changes) <= allowed, f"unknown customer fields: {set(changes) - allowed}"
    updated = session.execute(
        sa.update(customers)
        .where(customers.c.user_id == user_id)
        .values(**changes, updated_at=now)
        .returning(customers)
    ).one_or_none()
    if updated is None:
        raise CustomerNotFound(f"no customer {user_id!r}", user_id=user_id)
    return _to_customer(updated)


def get_customer(session: Session, user_id: str) -> Customer:
    """Raises: CustomerNotFound."""
    found = find_customers(session, [user_id]).get(user_id)
    if found is None:
        raise CustomerNotFound(f"no customer {user_id!r}", user_id=user_id)
    return found


def create_customer(
    session: Session,
    user_id: str,
    currency: str | None,
    now: datetime,
    defaults: BillingDefaults | None = None,
    **fields: Any,
) -> Customer:
    """Create a customer with its accounts, and name, Sippy account, webhook URL, status.
    Without a currency the customer gets the global settings' currency (seeded from
    `defaults` when nothing is stored yet), as a customer provisioned by usage would.

    Raises: CustomerExists; InvalidTransfer for an id that cannot name accounts; InvalidCurrency.
    """
    if find_customers(session, [user_id]):
        raise CustomerExists(f"customer {user_id!r} exists: change it with PATCH", user_id=user_id)
    if currency is None:
        scopes = effective_settings(session, [], defaults or BillingDefaults(), now)
        currency = scopes[GLOBAL_SCOPE].currency
    provision_customers(session, [user_id], validate_currency(currency), now)
    return (
        update_customer(session, user_id, now, **fields)
        if fields
        else get_customer(session, user_id)
    )


def list_customers(
    session: Session,
    *,
    status: str | None = None,
    search: str | None = None,
    has_sippy_account: bool | None = None,
    limit: int = 50,
    offset: int = 0,
) -> Page:
    """Customers by user id, filtered by status, a user id or name fragment, and whether a
    Sippy account is set."""
    filters: list[sa.ColumnElement[bool]] = []
    if status is not None:
        filters.append(customers.c.status == status)
    if search:
        pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        filters.append(
            sa.or_(
                customers.c.user_id.ilike(pattern, escape="\\"),
                customers.c.name.ilike(pattern, escape="\\"),
            )
        )
    if has_sippy_account is not None:
        column = customers.c.sippy_account_id
        filters.append(column.is_not(None) if has_sippy_account else column.is_(None))
    page = fetch_page(session, customers, filters, [customers.c.user_id], limit, offset)
    return Page([_to_customer(row) for row in page.items], page.total)

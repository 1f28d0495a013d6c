"""The standard chart of accounts (SPEC §2), created on first use.

Per customer and currency: `customer:<id>:unbilled` (usage not yet invoiced) and
`customer:<id>:receivable` (invoiced, unpaid). Per currency, system accounts whose code ends in
the currency. Every SMS touches `revenue:sms:*`, every charge `sippy:clearing:*` and every invoice
`rounding:*`, so those are hot accounts (balance spread over several rows).
"""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy.orm import Session

from billing.currency import validate_currency
from ledger.accounts import ensure_accounts
from ledger.errors import InvalidCurrency, InvalidTransfer
from ledger.model import Account, AccountSpec, AccountType

CUSTOMER_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

# (prefix, type, hot): system accounts, one per currency, the currency as last part.
SYSTEM_ACCOUNTS = (
    ("revenue:sms", AccountType.REVENUE, True),
    ("sippy:clearing", AccountType.ASSET, True),
    ("rounding", AccountType.REVENUE, True),
    ("adjustments", AccountType.EXPENSE, False),
    ("opening-balance", AccountType.EQUITY, False),
)


def validate_customer_id(customer_id: object) -> str:
    """Raises: InvalidTransfer when the id cannot be part of an account code."""
    if not isinstance(customer_id, str) or not CUSTOMER_ID.match(customer_id):
        raise InvalidTransfer(
            "customer id must be 1-64 letters, digits, '.', '_' or '-'", field="user_id"
        )
    return customer_id


def unbilled_code(customer_id: str) -> str:
    return f"customer:{customer_id}:unbilled"


def receivable_code(customer_id: str) -> str:
    return f"customer:{customer_id}:receivable"


def system_code(prefix: str, currency: str) -> str:
    return f"{prefix}:{currency}"


def customer_specs(customer_id: str, currency: str) -> list[AccountSpec]:
    """A customer's accounts. Unbilled can never be credited past its debits: an invoice
    cannot bill more usage than was posted (invariant 7's guard in the database)."""
    validate_customer_id(customer_id)
    validate_currency(currency)
    return [
        AccountSpec(
            unbilled_code(customer_id),
            AccountType.ASSET,
            currency,
            customer_id=customer_id,
            credits_must_not_exceed_debits=True,
        ),
        AccountSpec(receivable_code(customer_id), AccountType.ASSET, currency, customer_id),
    ]


def system_specs(currency: str) -> list[AccountSpec]:
    validate_currency(currency)
    return [
        AccountSpec(system_code(prefix, currency), account_type, currency, hot=hot)
        for prefix, account_type, hot in SYSTEM_ACCOUNTS
    ]


def system_spec_for(code: str) -> AccountSpec | None:
    """The standard system account a code names, or None when it names none."""
    prefix, _, currency = code.rpartition(":")
    for known, account_type, hot in SYSTEM_ACCOUNTS:
        if prefix == known:
            try:
                validate_currency(currency)
            except InvalidCurrency:
                return None
            return AccountSpec(code, account_type, currency, hot=hot)
    return None


def ensure_chart(
    session: Session, customer_id: str, currency: str, now: datetime
) -> dict[str, Account]:
    """Create (if missing) the customer's accounts and the currency's system accounts."""
    return ensure_accounts(
        session, customer_specs(customer_id, currency) + system_specs(currency), now
    )


def ensure_system_accounts_named(session: Session, codes: set[str], now: datetime) -> None:
    """Create the standard system accounts among `codes` on first use; other codes are left
    for the posting to refuse if they do not exist."""
    specs = [spec for code in sorted(codes) if (spec := system_spec_for(code)) is not None]
    ensure_accounts(session, specs, now)

"""The ledger's vocabulary as plain values: accounts, transfers, journal entries, balances.

Pure: no database, no clock. `validate_entry` holds the rules a transfer obeys before it is
ever written (invariant 1); the database repeats them as named constraints.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from ledger.errors import InvalidAmount, InvalidTransfer
from ledger.money import MAX_MICROS, check_currency

MAX_KEY_LENGTH = 200
MAX_CODE_LENGTH = 200


class AccountType(StrEnum):
    ASSET = "asset"
    LIABILITY = "liability"
    EQUITY = "equity"
    REVENUE = "revenue"
    EXPENSE = "expense"

    @property
    def debit_normal(self) -> bool:
        """Asset and expense balances grow with debits; the others with credits."""
        return self in (AccountType.ASSET, AccountType.EXPENSE)


class Kind(StrEnum):
    USAGE = "usage"
    INVOICE = "invoice"
    SETTLEMENT = "settlement"
    REVERSAL = "reversal"
    ADJUSTMENT = "adjustment"
    ROUNDING = "rounding"
    OPENING = "opening"


def signed_balance(account_type: AccountType, debits: int, credits: int) -> int:
    """Balance in the account's natural direction (SPEC §2)."""
    return debits - credits if account_type.debit_normal else credits - debits


@dataclass(frozen=True, slots=True)
class AccountSpec:
    """What an account is declared as; creating it twice with the same spec is a no-op.

    `hot` accounts (system accounts every post touches) keep their cached balance spread over
    several rows so concurrent posts do not queue on one row lock; they cannot carry limits,
    which need a single row to serialise on.
    """

    code: str
    type: AccountType
    currency: str
    customer_id: str | None = None
    debits_must_not_exceed_credits: bool = False
    credits_must_not_exceed_debits: bool = False
    hot: bool = False

    def __post_init__(self) -> None:
        if not self.code or len(self.code) > MAX_CODE_LENGTH or self.code != self.code.strip():
            raise InvalidTransfer(f"account code {self.code!r} is empty, padded or too long")
        check_currency(self.currency)
        if self.hot and (
            self.debits_must_not_exceed_credits or self.credits_must_not_exceed_debits
        ):
            raise InvalidTransfer(f"hot account {self.code} cannot carry a balance limit")


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    code: str
    type: AccountType
    currency: str
    customer_id: str | None
    debits_must_not_exceed_credits: bool
    credits_must_not_exceed_debits: bool
    hot: bool


@dataclass(frozen=True, slots=True)
class Leg:
    """One transfer of a journal entry: `amount` micro-units from credit to debit account."""

    debit: str
    credit: str
    amount: int
    metadata: dict[str, Any] | None = None
    reverses: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class EntryRequest:
    """A journal entry to post: its legs commit together, once per (kind, idempotency_key)."""

    kind: Kind
    idempotency_key: str
    legs: tuple[Leg, ...]
    effective_at: datetime | None = None
    description: str | None = None
    metadata: dict[str, Any] | None = None
    currency: str | None = None
    request: str | None = None
    """The caller's own canonical request, when the legs are derived from it (a usage event
    priced by the rate table): replays are then judged on what the caller sent, so a rate
    change between a post and its retry is still a replay, not a conflict."""

    def fingerprint(self) -> str:
        """A digest of everything the caller said, so a replay can be told from a conflict.

        Defaults filled in by the ledger (posting time) are not part of it: a retry of a
        request that left `effective_at` out is still the same request.
        """
        if self.request is not None:
            text = f"{self.kind.value}\n{self.request}"
            return hashlib.sha256(text.encode()).hexdigest()[:32]
        canonical = {
            "kind": str(self.kind),
            "effective_at": self.effective_at.isoformat() if self.effective_at else None,
            "description": self.description,
            "metadata": self.metadata,
            "currency": self.currency,
            "legs": [
                [leg.debit, leg.credit, leg.amount, leg.metadata, str(leg.reverses or "")]
                for leg in self.legs
            ],
        }
        text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:32]


def validate_entry(entry: EntryRequest) -> None:
    """Check invariant 1 and the entry's shape before any database work.

    Raises: InvalidTransfer, InvalidAmount, InvalidCurrency.
    """
    if not isinstance(entry.kind, Kind):
        raise InvalidTransfer(f"unknown transfer kind {entry.kind!r}")
    key = entry.idempotency_key
    if not isinstance(key, str) or not key.strip() or len(key) > MAX_KEY_LENGTH:
        raise InvalidTransfer(
            f"idempotency key must be 1 to {MAX_KEY_LENGTH} characters", field="idempotency_key"
        )
    if not entry.legs:
        raise InvalidTransfer("a journal entry needs at least one transfer", field="transfers")
    if entry.effective_at is not None and entry.effective_at.utcoffset() is None:
        raise InvalidTransfer("effective_at must carry a timezone", field="effective_at")
    if entry.currency is not None:
        check_currency(entry.currency)
    for index, leg in enumerate(entry.legs):
        if isinstance(leg.amount, bool) or not isinstance(leg.amount, int):
            raise InvalidAmount("amount must be integer micro-units", index=index)
        if leg.amount <= 0:
            raise InvalidAmount("amount must be greater than zero", index=index)
        if leg.amount > MAX_MICROS:
            raise InvalidAmount("amount is too large", index=index)
        if leg.debit == leg.credit:
            raise InvalidTransfer(
                "debit and credit account must differ", index=index, account=leg.debit
            )


@dataclass(frozen=True, slots=True)
class Transfer:
    id: uuid.UUID
    journal_id: uuid.UUID
    kind: Kind
    idempotency_key: str
    leg: int
    fingerprint: str
    debit_account: str
    credit_account: str
    amount: int
    currency: str
    effective_at: datetime
    posted_at: datetime
    description: str | None
    metadata: dict[str, Any] | None
    reverses_id: uuid.UUID | None


@dataclass(frozen=True, slots=True)
class PostResult:
    """What posting one entry did: `posted` now, or `duplicate` of an earlier identical post."""

    status: str
    transfers: tuple[Transfer, ...] = field(default_factory=tuple)

    @property
    def is_duplicate(self) -> bool:
        return self.status == "duplicate"


@dataclass(frozen=True, slots=True)
class Balance:
    """Posted debits and credits of one account, optionally as of an instant."""

    account: Account
    debits: int
    credits: int
    as_of: datetime | None = None

    @property
    def balance(self) -> int:
        return signed_balance(self.account.type, self.debits, self.credits)

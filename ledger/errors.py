"""The ledger's failures: one root, one leaf per way a posting or a read can be refused.

Each carries a human message and machine-readable `details`; the HTTP mapping lives in
`api/errors.py`, never here.
"""

from __future__ import annotations

from typing import Any


class LedgerError(Exception):
    """Root of every refusal the ledger makes."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidAmount(LedgerError):
    """Raised when an amount is not a positive exact number of micro-units (zero, negative,
    more than six decimals, a float, too large)."""


class TooManyDecimals(InvalidAmount):
    """Raised when an amount carries a non-zero digit beyond the sixth decimal place: the ledger
    would have to round it, and it never rounds. An `InvalidAmount`, so every handler of that
    still catches it; its own type lets a caller give it its own code without reading the
    message."""


class InvalidCurrency(LedgerError):
    """Raised when a currency code is not shaped like ISO 4217."""


class InvalidTransfer(LedgerError):
    """Raised when a transfer is malformed: same debit and credit account, empty entry,
    unknown kind, naive timestamp."""


class UnknownAccount(LedgerError):
    """Raised when a transfer or a read names an account code that does not exist."""


class UnknownTransfer(LedgerError):
    """Raised when a transfer id does not exist."""


class CurrencyMismatch(LedgerError):
    """Raised when a transfer's accounts (or its stated currency) do not share one currency."""


class AccountConflict(LedgerError):
    """Raised when an account is re-declared with a different type, currency or limits."""


class IdempotencyConflict(LedgerError):
    """Raised when an idempotency key is replayed with different content."""


class BalanceLimitExceeded(LedgerError):
    """Raised when a posting would break an account's balance-limit flag."""


class AlreadyReversed(LedgerError):
    """Raised when a transfer that already has a reversal is reversed under another key."""


class ArchivedPeriod(LedgerError):
    """Raised for an instant before the archive cut: its transfers left the database for an
    archive (`details` name the cut and the archive), so a balance `as_of` it, a statement
    from it, or a posting dated in it cannot be answered or accepted here."""


class ImmutableTransfer(LedgerError):
    """Raised when the database refuses an UPDATE or DELETE of a posted transfer."""


class RetryableConflict(LedgerError):
    """Raised when the database aborted a unit of work for a deadlock or serialization
    failure and the bounded retries ran out."""


class DatabaseUnavailable(LedgerError):
    """Raised when the database cannot be reached or dropped the connection (refused, shutting
    down, starting up, terminated by an administrator, closed unexpectedly): an outage, not a
    refusal of this unit of work, so the caller should try again shortly.

    `may_have_committed` is true when the connection was lost while COMMIT was in flight: the
    unit's effects may or may not be durable, so only a retry that is idempotent (the same
    `message_id` or `idempotency_key`) is safe, and the unit is never retried blindly.

    `cause` is the driver's own words ("OperationalError: ... Connection refused") for the
    logs, which `str()` includes; `message`, what a client is told, never does."""

    def __init__(
        self,
        message: str,
        *,
        may_have_committed: bool = False,
        cause: str | None = None,
        **details: Any,
    ) -> None:
        super().__init__(message, **details)
        self.may_have_committed = may_have_committed
        self.cause = cause

    def __str__(self) -> str:
        return self.message if self.cause is None else f"{self.message} ({self.cause})"

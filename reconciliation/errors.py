"""Reconciliation's refusals (differences themselves are values, never exceptions)."""

from __future__ import annotations

from billing.errors import BillingError


class InvalidStatement(BillingError):
    """Raised when an uploaded statement cannot be read: empty, not UTF-8, missing columns, or
    lines with bad amounts, times or accounts (`details["errors"]` lists them by line)."""


class UnknownRun(BillingError):
    """Raised when a reconciliation run or item id does not exist."""


class ItemNotResolvable(BillingError):
    """Raised when an item is matched, resolved already, or has no proposal to accept."""


class SippyStatementUnavailable(BillingError):
    """Raised when Sippy's statement cannot be fetched (unreachable, refused; not configured is
    its own `SippyNotConfigured`)."""


class SippyNotConfigured(SippyStatementUnavailable):
    """Raised when Sippy's statement is asked for but no Sippy is configured (`SIPPY_URL`
    unset): a configuration gap that no retry can close, unlike Sippy being down."""

"""Entry validation (invariant 1 before any database work) and replay fingerprints."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ledger.errors import InvalidAmount, InvalidCurrency, InvalidTransfer
from ledger.model import (
    AccountSpec,
    AccountType,
    EntryRequest,
    Kind,
    Leg,
    signed_balance,
    validate_entry,
)


def entry(*legs: Leg, key: str = "k1", **extra: object) -> EntryRequest:
    return EntryRequest(Kind.ADJUSTMENT, key, tuple(legs), **extra)  # type: ignore[arg-type]


@pytest.mark.parametrize("amount", [0, -1, 10**16])
def test_non_positive_or_huge_amounts_are_refused(amount: int) -> None:
    with pytest.raises(InvalidAmount):
        validate_entry(entry(Leg("a", "b", amount)))


def test_float_amounts_are_refused() -> None:
    with pytest.raises(InvalidAmount):
        validate_entry(entry(Leg("a", "b", 1.5)))  # type: ignore[arg-type]


def test_same_debit_and_credit_account_is_refused() -> None:
    with pytest.raises(InvalidTransfer):
        validate_entry(entry(Leg("a", "a", 1)))


def test_empty_entries_blank_keys_and_naive_times_are_refused() -> None:
    with pytest.raises(InvalidTransfer):
        validate_entry(entry())
    with pytest.raises(InvalidTransfer):
        validate_entry(entry(Leg("a", "b", 1), key=" "))
    with pytest.raises(InvalidTransfer):
        validate_entry(entry(Leg("a", "b", 1), effective_at=datetime(2026, 1, 1)))  # noqa: DTZ001
    with pytest.raises(InvalidCurrency):
        validate_entry(entry(Leg("a", "b", 1), currency="dollars"))


def test_fingerprint_tells_a_replay_from_a_changed_request() -> None:
    original = entry(Leg("a", "b", 5), description="x")
    assert original.fingerprint() == entry(Leg("a", "b", 5), description="x").fingerprint()
    assert original.fingerprint() != entry(Leg("a", "b", 6), description="x").fingerprint()
    assert original.fingerprint() != entry(Leg("b", "a", 5), description="x").fingerprint()
    later = entry(Leg("a", "b", 5), description="x", effective_at=datetime(2026, 1, 1, tzinfo=UTC))
    assert original.fingerprint() != later.fingerprint()


def test_balances_follow_the_accounts_normal_side() -> None:
    assert signed_balance(AccountType.ASSET, 10, 3) == 7
    assert signed_balance(AccountType.EXPENSE, 10, 3) == 7
    assert signed_balance(AccountType.REVENUE, 10, 3) == -7
    assert signed_balance(AccountType.LIABILITY, 3, 10) == 7


def test_hot_accounts_cannot_carry_limits() -> None:
    with pytest.raises(InvalidTransfer):
        AccountSpec("x", AccountType.ASSET, "USD", hot=True, debits_must_not_exceed_credits=True)

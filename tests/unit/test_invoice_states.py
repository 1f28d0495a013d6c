"""The invoice's states and the moves between them (billing/invoice.py)."""

from __future__ import annotations

import pytest

from billing.errors import InvalidInvoiceState
from billing.invoice import MOVES, UNPAID, InvoiceStatus, check_move


def test_a_cancelled_invoice_never_moves_again() -> None:
    for target in InvoiceStatus:
        with pytest.raises(InvalidInvoiceState) as refused:
            check_move("cancelled", target)
        assert refused.value.details == {"status": "cancelled", "to": target.value}


def test_a_paid_invoice_is_only_refunded_or_failed_when_its_settlement_is_reversed() -> None:
    assert check_move("paid", "failed") is InvoiceStatus.FAILED
    assert check_move("paid", "refunded") is InvoiceStatus.REFUNDED
    for target in set(InvoiceStatus) - {InvoiceStatus.FAILED, InvoiceStatus.REFUNDED}:
        with pytest.raises(InvalidInvoiceState):
            check_move("paid", target)


def test_a_refunded_invoice_never_moves_again() -> None:
    for target in InvoiceStatus:
        with pytest.raises(InvalidInvoiceState):
            check_move("refunded", target)


def test_every_unpaid_state_can_still_be_settled_or_failed() -> None:
    for status in UNPAID:
        assert {InvoiceStatus.PAID, InvoiceStatus.FAILED} <= MOVES[status]


def test_an_unknown_state_is_an_error_not_a_move() -> None:
    with pytest.raises(ValueError):
        check_move("pending", "refundable")

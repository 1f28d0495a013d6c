"""Ledger endpoints for accountants and admins: accounts with balances (`as_of`), statements,
transfers, manual journal entries, reversals and the trial balance (SPEC §7, Appendix A)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from marshmallow import Schema, fields, validate

from api.auth import requires
from api.blueprint import Blueprint, links
from api.errors import ARCHIVED, ApiError
from api.fields import Instant, Money, currency_field, money_text, time_text
from api.schemas import PageQuery, page_of
from billing import journal
from infra.runtime import as_of_read, now, report, transaction
from ledger.balances import account_balance, list_balances, statement, trial_balance
from ledger.errors import UnknownAccount
from ledger.model import MAX_KEY_LENGTH, Balance, EntryRequest, Kind, Leg, PostResult, Transfer
from ledger.posting import get_transfer

blp = Blueprint("ledger", __name__, url_prefix="/api/ledger", description="Double-entry ledger")

READERS = ("admin", "accountant")
FIRST_TRANSFER = {"transfer_id": "$response.body#/transfers/0/id"}


# --- requests -------------------------------------------------------------------------------


class AsOfQuery(Schema):
    as_of = Instant(metadata={"description": "balance as of this instant (inclusive)"})


class AccountListQuery(PageQuery):
    as_of = Instant()
    customer_id = fields.String()
    currency = currency_field()
    type = fields.String(
        validate=validate.OneOf(["asset", "liability", "equity", "revenue", "expense"])
    )


class StatementQuery(PageQuery):
    start = Instant(data_key="from", metadata={"description": "effective at or after"})
    end = Instant(data_key="to", metadata={"description": "effective before"})


class LegIn(Schema):
    debit_account = fields.String(required=True, validate=validate.Length(min=1, max=200))
    credit_account = fields.String(required=True, validate=validate.Length(min=1, max=200))
    amount = Money(positive=True, required=True)
    metadata = fields.Dict(keys=fields.String())


class EntryIn(Schema):
    idempotency_key = fields.String(
        required=True, validate=validate.Length(min=1, max=MAX_KEY_LENGTH)
    )
    kind = fields.String(
        required=True,
        # Any kind is read; billing's own are refused by `post_manual_entry` (kind_not_allowed).
        validate=validate.OneOf([k.value for k in Kind]),
        metadata={
            "enum": sorted(k.value for k in journal.MANUAL_KINDS),
            "description": "billing's own kinds change through their owners' actions",
        },
    )
    description = fields.String(validate=validate.Length(max=1000))
    effective_at = Instant()
    currency = currency_field()
    metadata = fields.Dict(keys=fields.String())
    transfers = fields.List(
        fields.Nested(LegIn), required=True, validate=validate.Length(min=1, max=100)
    )


class ReverseIn(Schema):
    idempotency_key = fields.String(
        required=True, validate=validate.Length(min=1, max=MAX_KEY_LENGTH)
    )
    description = fields.String(validate=validate.Length(max=1000))


# --- responses ------------------------------------------------------------------------------


class TransferOut(Schema):
    id = fields.String()
    journal_id = fields.String()
    kind = fields.String()
    idempotency_key = fields.String()
    debit_account = fields.String()
    credit_account = fields.String()
    amount = fields.String()
    currency = fields.String()
    effective_at = fields.String()
    posted_at = fields.String()
    description = fields.String(allow_none=True)
    metadata = fields.Dict(allow_none=True)
    reverses = fields.String(allow_none=True)


class EntryOut(Schema):
    journal_id = fields.String()
    status = fields.String(metadata={"description": "posted, or duplicate of an earlier post"})
    transfers = fields.List(fields.Nested(TransferOut))


class AccountOut(Schema):
    code = fields.String()
    type = fields.String()
    currency = fields.String()
    customer_id = fields.String(allow_none=True)
    debits = fields.String()
    credits = fields.String()
    balance = fields.String()
    debits_must_not_exceed_credits = fields.Boolean()
    credits_must_not_exceed_debits = fields.Boolean()
    as_of = fields.String()


AccountPageOut = page_of(AccountOut, "AccountPageOut")


class StatementLineOut(Schema):
    transfer = fields.Nested(TransferOut)
    side = fields.String(metadata={"description": "debit or credit, from this account's view"})
    amount = fields.String()
    balance_after = fields.String()


class StatementOut(Schema):
    account = fields.String()
    currency = fields.String()
    start = fields.String(data_key="from", allow_none=True)
    end = fields.String(data_key="to", allow_none=True)
    opening_balance = fields.String()
    closing_balance = fields.String()
    items = fields.List(fields.Nested(StatementLineOut))
    page = fields.Integer()
    per_page = fields.Integer()
    total = fields.Integer()


class CurrencyTotalsOut(Schema):
    debits = fields.String()
    credits = fields.String()
    balanced = fields.Boolean()


class TrialBalanceOut(Schema):
    as_of = fields.String()
    currencies = fields.Dict(keys=fields.String(), values=fields.Nested(CurrencyTotalsOut))
    accounts = fields.List(fields.Nested(AccountOut))


# --- presenters -----------------------------------------------------------------------------


def present_transfer(transfer: Transfer) -> dict[str, Any]:
    return {
        "id": str(transfer.id),
        "journal_id": str(transfer.journal_id),
        "kind": transfer.kind.value,
        "idempotency_key": transfer.idempotency_key,
        "debit_account": transfer.debit_account,
        "credit_account": transfer.credit_account,
        "amount": money_text(transfer.amount, transfer.currency),
        "currency": transfer.currency,
        "effective_at": time_text(transfer.effective_at),
        "posted_at": time_text(transfer.posted_at),
        "description": transfer.description,
        "metadata": transfer.metadata,
        "reverses": str(transfer.reverses_id) if transfer.reverses_id else None,
    }


def present_entry(result: PostResult) -> tuple[dict[str, Any], int]:
    body = {
        "journal_id": str(result.transfers[0].journal_id),
        "status": result.status,
        "transfers": [present_transfer(t) for t in result.transfers],
    }
    return body, 200 if result.is_duplicate else 201


def present_balance(balance: Balance, as_of: datetime) -> dict[str, Any]:
    account, currency = balance.account, balance.account.currency
    return {
        "code": account.code,
        "type": account.type.value,
        "currency": currency,
        "customer_id": account.customer_id,
        "debits": money_text(balance.debits, currency),
        "credits": money_text(balance.credits, currency),
        "balance": money_text(balance.balance, currency),
        "debits_must_not_exceed_credits": account.debits_must_not_exceed_credits,
        "credits_must_not_exceed_debits": account.credits_must_not_exceed_debits,
        "as_of": time_text(as_of),
    }


# --- routes ---------------------------------------------------------------------------------


@blp.route("/accounts")
@blp.doc(responses=ARCHIVED)
@requires(*READERS)
@blp.arguments(AccountListQuery, location="query")
@blp.response(200, AccountPageOut)
def list_accounts(query: dict[str, Any]) -> dict[str, Any]:
    """Accounts with their balances, filtered by customer, currency or type."""
    page, per_page = query["page"], query["per_page"]
    as_of = query.get("as_of")
    result = as_of_read(
        lambda s: list_balances(
            s,
            as_of=as_of,
            customer_id=query.get("customer_id"),
            currency=query.get("currency"),
            account_type=query.get("type"),
            limit=per_page,
            offset=(page - 1) * per_page,
        ),
        as_of,
    )
    shown_as_of = as_of or now()
    return {
        "items": [present_balance(b, shown_as_of) for b in result.balances],
        "page": page,
        "per_page": per_page,
        "total": result.total,
    }


@blp.route("/accounts/<code>")
@blp.doc(responses=ARCHIVED)
@requires(*READERS)
@blp.arguments(AsOfQuery, location="query")
@blp.response(200, AccountOut)
def get_account(query: dict[str, Any], code: str) -> dict[str, Any]:
    """One account's debits, credits and balance, now or `as_of` an instant."""
    as_of = query.get("as_of")
    try:
        balance = as_of_read(lambda s: account_balance(s, code, as_of), as_of)
    except UnknownAccount:
        raise ApiError(404, "account_not_found", f"No account {code!r}.", account=code) from None
    return present_balance(balance, as_of or now())


@blp.route("/accounts/<code>/transfers")
@blp.doc(responses=ARCHIVED)
@requires(*READERS)
@blp.arguments(StatementQuery, location="query")
@blp.response(200, StatementOut)
def account_statement(query: dict[str, Any], code: str) -> dict[str, Any]:
    """The account's statement: transfers effective in [from, to) with running balances."""
    page, per_page = query["page"], query["per_page"]
    try:
        result = report(
            lambda s: statement(
                s,
                code,
                start=query.get("start"),
                end=query.get("end"),
                limit=per_page,
                offset=(page - 1) * per_page,
            )
        )
    except UnknownAccount:
        raise ApiError(404, "account_not_found", f"No account {code!r}.", account=code) from None
    currency = result.account.currency
    return {
        "account": result.account.code,
        "currency": currency,
        "start": time_text(result.start),
        "end": time_text(query.get("end")),
        "opening_balance": money_text(result.opening_balance, currency),
        "closing_balance": money_text(result.closing_balance, currency),
        "items": [
            {
                "transfer": present_transfer(line.transfer),
                "side": line.side,
                "amount": money_text(line.transfer.amount, currency),
                "balance_after": money_text(line.balance_after, currency),
            }
            for line in result.lines
        ],
        "page": page,
        "per_page": per_page,
        "total": result.total,
    }


@blp.route("/transfers", methods=["POST"])
@blp.doc(responses=ARCHIVED)
@requires("admin")
@blp.arguments(EntryIn)
@blp.response(201, EntryOut)
@blp.alt_response(200, schema=EntryOut, description="a replay of an earlier identical entry")
@blp.doc(
    **links(
        201,
        read=("GET", "/api/ledger/transfers/{transfer_id}", FIRST_TRANSFER),
        reverse=("POST", "/api/ledger/transfers/{transfer_id}/reverse", FIRST_TRANSFER),
    )
)
def post_transfers(body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Post a manual journal entry (adjustment or opening); idempotent by `idempotency_key`."""
    entry = EntryRequest(
        kind=Kind(body["kind"]),
        idempotency_key=body["idempotency_key"],
        legs=tuple(
            Leg(leg["debit_account"], leg["credit_account"], leg["amount"], leg.get("metadata"))
            for leg in body["transfers"]
        ),
        effective_at=body.get("effective_at"),
        description=body.get("description"),
        metadata=body.get("metadata"),
        currency=body.get("currency"),
    )
    result = transaction(lambda s: journal.post_manual_entry(s, entry, now()))
    return present_entry(result)


@blp.route("/transfers/<uuid:transfer_id>")
@requires(*READERS)
@blp.response(200, TransferOut)
def read_transfer(transfer_id: uuid.UUID) -> dict[str, Any]:
    """One transfer."""
    return present_transfer(transaction(lambda s: get_transfer(s, transfer_id)))


@blp.route("/transfers/<uuid:transfer_id>/reverse", methods=["POST"])
@blp.doc(responses=ARCHIVED)
@requires("admin")
@blp.arguments(ReverseIn)
@blp.response(201, EntryOut)
@blp.alt_response(200, schema=EntryOut, description="a replay of an earlier identical reversal")
def reverse(body: dict[str, Any], transfer_id: uuid.UUID) -> tuple[dict[str, Any], int]:
    """Reverse a manual entry; idempotent by `idempotency_key`, at most once per transfer.
    Billing's own transfers (usage, invoice, rounding, settlement) are refused with 409
    `billing_owned_transfer` naming the action that undoes them (void, cancel, refund)."""
    result = transaction(
        lambda s: journal.reverse_manual_entry(
            s, transfer_id, body["idempotency_key"], now(), body.get("description")
        )
    )
    return present_entry(result)


@blp.route("/trial-balance")
@blp.doc(responses=ARCHIVED)
@requires(*READERS)
@blp.arguments(AsOfQuery, location="query")
@blp.response(200, TrialBalanceOut)
def read_trial_balance(query: dict[str, Any]) -> dict[str, Any]:
    """Every account's balance and total debits against credits per currency."""
    as_of = query.get("as_of")
    result = as_of_read(lambda s: trial_balance(s, as_of), as_of)
    shown_as_of = as_of or now()
    return {
        "as_of": time_text(shown_as_of),
        "currencies": {
            currency: {
                "debits": money_text(totals.debits, currency),
                "credits": money_text(totals.credits, currency),
                "balanced": totals.balanced,
            }
            for currency, totals in result.currencies.items()
        },
        "accounts": [present_balance(b, shown_as_of) for b in result.accounts],
    }

"""Billing records for admins (SPEC §7, Appendix A): invoices with filters and pagination, one
invoice with its lines, payment attempts and ledger transfers, and the admin actions."""

from __future__ import annotations

import uuid
from typing import Any

from marshmallow import Schema, fields, validate

from api.auth import requires
from api.blueprint import Blueprint
from api.errors import ARCHIVED
from api.fields import Instant, money_text, time_text
from api.ledger import TransferOut, present_transfer
from api.schemas import PageQuery, page_of, paged
from billing.chart import CUSTOMER_ID
from billing.invoice import InvoiceStatus
from billing.invoicing.invoices import (
    ACTIONS,
    act,
    get_invoice,
    invoice_lines_of,
    invoice_transfers,
    list_invoices,
    payment_attempts_of,
)
from billing.settings import FREQUENCIES
from infra.runtime import dispatch_charges_now, now, runtime, transaction

blp = Blueprint(
    "billing_records", __name__, url_prefix="/api/admin/sms/billing", description="Billing records"
)


class RecordsQuery(PageQuery):
    status = fields.String(validate=validate.OneOf(list(InvoiceStatus)))
    user_id = fields.String(data_key="userId", validate=validate.Regexp(CUSTOMER_ID))
    start = Instant(data_key="from")
    end = Instant(data_key="to")
    frequency = fields.String(validate=validate.OneOf(FREQUENCIES))


class ActionIn(Schema):
    billing_id = fields.UUID(data_key="billingId", required=True)
    action = fields.String(load_default="process", validate=validate.OneOf(ACTIONS))


class RecordOut(Schema):
    id = fields.String()
    user_id = fields.String()
    status = fields.String()
    frequency = fields.String()
    period_start = fields.String()
    period_end = fields.String()
    message_count = fields.Integer()
    segments = fields.Integer()
    amount = fields.String()
    usage = fields.String()
    rounding = fields.String()
    credit = fields.String(
        metadata={"description": "voided messages of earlier invoices credited on this one"}
    )
    currency = fields.String()
    approved_at = fields.String(allow_none=True)
    attempts = fields.Integer()
    last_error = fields.String(allow_none=True)
    next_retry_at = fields.String(allow_none=True)
    created_at = fields.String()


class ActionOut(RecordOut):
    dispatch = fields.String(
        metadata={
            "enum": ["dispatched", "deferred", "none"],
            "description": "whether a charge the action made due was handed to a worker now;"
            " `deferred`: the next sweep charges it",
        }
    )


class LineOut(Schema):
    country = fields.String(allow_none=True)
    prefix = fields.String(allow_none=True)
    messages = fields.Integer()
    segments = fields.Integer()
    amount = fields.String()


class AttemptOut(Schema):
    id = fields.String()
    attempt_no = fields.Integer()
    reference = fields.String()
    status = fields.String()
    amount = fields.String()
    currency = fields.String()
    sippy_account_id = fields.String(allow_none=True)
    code = fields.String(allow_none=True)
    message = fields.String(allow_none=True)
    retryable = fields.Boolean(allow_none=True)
    sippy_payment_id = fields.String(allow_none=True)
    started_at = fields.String()
    finished_at = fields.String(allow_none=True)


def present_attempt(row: Any) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "attempt_no": row.attempt_no,
        "reference": row.reference,
        "status": row.status,
        "amount": money_text(row.amount_micros, row.currency),
        "currency": row.currency,
        "sippy_account_id": row.sippy_account_id,
        "code": row.code,
        "message": row.message,
        "retryable": row.retryable,
        "sippy_payment_id": row.sippy_payment_id,
        "started_at": time_text(row.started_at),
        "finished_at": time_text(row.finished_at),
    }


class RecordDetailOut(RecordOut):
    settings = fields.Dict()
    rate_ids = fields.List(fields.Integer())
    lines = fields.List(fields.Nested(LineOut))
    payment_attempts = fields.List(fields.Nested(AttemptOut))
    transfers = fields.List(fields.Nested(TransferOut))


RecordPageOut = page_of(RecordOut, "RecordPageOut")


def present_record(row: Any) -> dict[str, Any]:
    currency = row.currency
    return {
        "id": str(row.id),
        "user_id": row.customer_id,
        "status": row.status,
        "frequency": row.frequency,
        "period_start": time_text(row.period_start),
        "period_end": time_text(row.period_end),
        "message_count": row.message_count,
        "segments": row.segments,
        "amount": money_text(row.amount_micros, currency),
        "usage": money_text(row.usage_micros, currency),
        "rounding": money_text(row.rounding_micros, currency),
        "credit": money_text(row.credit_micros, currency),
        "currency": currency,
        "approved_at": time_text(row.approved_at),
        "attempts": row.attempts,
        "last_error": row.last_error,
        "next_retry_at": time_text(row.next_retry_at),
        "created_at": time_text(row.created_at),
    }


@blp.route("", methods=["GET"])
@requires("admin")
@blp.arguments(RecordsQuery, location="query")
@blp.response(200, RecordPageOut)
def list_records(query: dict[str, Any]) -> dict[str, Any]:
    """Invoices, newest first, filtered by status, user, billed period and frequency."""
    return paged(
        query,
        lambda s, limit, offset: list_invoices(
            s,
            status=query.get("status"),
            user_id=query.get("user_id"),
            start=query.get("start"),
            end=query.get("end"),
            frequency=query.get("frequency"),
            limit=limit,
            offset=offset,
        ),
        present_record,
    )


@blp.route("/<uuid:billing_id>", methods=["GET"])
@requires("admin", "accountant")
@blp.response(200, RecordDetailOut)
def read_record(billing_id: uuid.UUID) -> dict[str, Any]:
    """One invoice with its lines, payment attempts and ledger transfers."""

    def load(session: Any) -> dict[str, Any]:
        row = get_invoice(session, billing_id)
        body = present_record(row)
        body["settings"] = row.settings or {}
        body["rate_ids"] = row.rate_ids or []
        body["lines"] = [
            {
                "country": line.country,
                "prefix": line.prefix,
                "messages": line.messages,
                "segments": line.segments,
                "amount": money_text(line.amount_micros, row.currency),
            }
            for line in invoice_lines_of(session, billing_id)
        ]
        body["payment_attempts"] = [
            present_attempt(a) for a in payment_attempts_of(session, billing_id)
        ]
        body["transfers"] = [present_transfer(t) for t in invoice_transfers(session, billing_id)]
        return body

    return transaction(load)


@blp.route("", methods=["POST"])
@blp.doc(responses=ARCHIVED)
@requires("admin")
@blp.arguments(ActionIn)
@blp.response(200, ActionOut)
def record_action(body: dict[str, Any]) -> dict[str, Any]:
    """`{"billingId": …}` processes a pending billing now (`action`: process, approve, retry,
    refund (a paid one),
    cancel)."""
    defaults = runtime().config.billing
    action = body["action"]
    row = transaction(lambda s: act(s, body["billing_id"], action, now(), defaults, "api:admin"))
    queued = action == "refund" or row.next_retry_at is not None
    dispatch = dispatch_charges_now() if queued else "none"
    return {**present_record(row), "dispatch": dispatch}

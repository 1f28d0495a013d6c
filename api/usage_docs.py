"""The wire shapes of the usage endpoints, for the OpenAPI document only: the bodies themselves
are validated by `billing.usage.ingestion` / `billing.usage.presend` (fast, every problem with
its index), so these schemas describe, they do not parse."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from billing.usage.presend import REASONS


class UsageEventDoc(Schema):
    message_id = fields.String(required=True, metadata={"description": "idempotency key"})
    user_id = fields.String(required=True)
    destination = fields.String(required=True, metadata={"description": "E.164 number"})
    segments = fields.Integer(metadata={"description": "or text_length with encoding"})
    text_length = fields.Integer()
    encoding = fields.String(validate=validate.OneOf(["gsm7", "ucs2"]))
    sent_at = fields.String(metadata={"description": "RFC 3339 with offset; default now"})
    cost = fields.String(metadata={"description": "decimal: taken as the price"})
    currency = fields.String()
    country = fields.String()
    prefix = fields.String()


class UsageBatchDoc(Schema):
    events = fields.List(fields.Nested(UsageEventDoc), metadata={"maxItems": 10_000})


class UsageResultDoc(Schema):
    message_id = fields.String()
    status = fields.String(metadata={"enum": ["posted", "duplicate"]})
    transfer_id = fields.String()
    amount = fields.String()
    currency = fields.String()
    country = fields.String(allow_none=True)
    prefix = fields.String(allow_none=True)
    segments = fields.Integer()


class UsageAnswerDoc(Schema):
    posted = fields.Integer()
    duplicates = fields.Integer()
    results = fields.List(fields.Nested(UsageResultDoc))


class CheckDoc(Schema):
    user_id = fields.String(required=True)
    message_count = fields.Integer(required=True)
    total_cost = fields.String()
    destination = fields.String()
    country = fields.String()
    prefix = fields.String()


class DecisionDoc(Schema):
    allowed = fields.Boolean()
    should_block = fields.Boolean()
    reason = fields.String(allow_none=True, metadata={"enum": list(REASONS)})
    message = fields.String()
    currency = fields.String()
    unbilled = fields.String()
    limit = fields.String(allow_none=True)
    percent_used = fields.Float(allow_none=True)
    pending_billings = fields.Integer()
    pending_amount = fields.String()
    estimated_cost = fields.String()


def body(*schemas: type[Schema]) -> dict[str, object]:
    """A requestBody of one of `schemas` (apispec resolves them to components)."""
    schema: object = schemas[0] if len(schemas) == 1 else {"oneOf": list(schemas)}
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def answer(description: str, schema: type[Schema]) -> dict[str, object]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}

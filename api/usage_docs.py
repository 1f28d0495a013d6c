"""The wire shapes of the usage endpoints, for the OpenAPI document only: the bodies themselves
are validated by `billing.usage.ingestion` / `billing.usage.presend` (fast, every problem with
its index), so these schemas describe, they do not parse."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from api.fields import AMOUNT_SCHEMA, CURRENCIES, POSITIVE_AMOUNT_SCHEMA
from billing.chart import CUSTOMER_ID
from billing.usage.ingestion import MAX_BATCH, MAX_TEXT_LENGTH
from billing.usage.presend import MAX_MESSAGES, REASONS
from billing.usage.problems import MAX_SEGMENTS
from ledger.model import MAX_KEY_LENGTH

USER_ID = {
    "pattern": CUSTOMER_ID.pattern,
    "description": "the sender: 1-64 letters, digits, `.`, `_`, `-`",
}
DESTINATION = {
    "pattern": r"^\+[0-9]",
    "example": "+447400123456",
    "description": "a valid international number, E.164 (`+` and digits; spaces are allowed"
    " and dropped)",
}
OPTIONAL = {"nullable": True}  # null is the same as leaving the field out


class UsageEventDoc(Schema):
    message_id = fields.String(
        required=True,
        validate=validate.Length(min=1, max=MAX_KEY_LENGTH),
        metadata={"description": "idempotency key"},
    )
    user_id = fields.String(required=True, metadata=USER_ID)
    destination = fields.String(required=True, metadata=DESTINATION)
    segments = fields.Integer(
        validate=validate.Range(min=1, max=MAX_SEGMENTS),
        metadata={**OPTIONAL, "description": "or text_length with encoding"},
    )
    # Read only without `segments`: then as SEGMENT_RULE says, otherwise not looked at.
    text_length = fields.Raw(
        metadata={
            "description": f"without `segments`: 0 to {MAX_TEXT_LENGTH}, in septets (gsm7) or"
            " UTF-16 units (ucs2); ignored with `segments`"
        }
    )
    encoding = fields.Raw(
        metadata={"description": "without `segments`: gsm7 or ucs2; ignored with `segments`"}
    )
    sent_at = fields.String(
        metadata={**OPTIONAL, "format": "date-time", "description": "with offset; default now"}
    )
    cost = fields.Raw(
        metadata={**POSITIVE_AMOUNT_SCHEMA, **OPTIONAL, "description": "taken as the price"}
    )
    currency = fields.String(
        validate=validate.OneOf(CURRENCIES),
        metadata={**OPTIONAL, "description": "must be the user's"},
    )
    country = fields.String(
        metadata={
            **OPTIONAL,
            "pattern": "^([A-Z]{2}|001)$",
            "description": "ISO 3166 alpha-2 (001: non-geographic); must be the number's",
        }
    )
    prefix = fields.String(
        metadata={
            **OPTIONAL,
            "pattern": "^[0-9]+$",
            "description": "rating prefix: leading digits of the number",
        }
    )


SEGMENT_RULE = {
    "description": "`segments`, or (without it) `text_length` and `encoding`",
    "anyOf": [
        {"required": ["segments"], "properties": {"segments": {"type": "integer"}}},
        {
            "required": ["text_length", "encoding"],
            "properties": {
                "text_length": {"type": "integer", "minimum": 0, "maximum": MAX_TEXT_LENGTH},
                "encoding": {"type": "string", "enum": ["gsm7", "ucs2"]},
            },
        },
    ],
}
EVENT = {"allOf": [UsageEventDoc, SEGMENT_RULE]}
BATCH = {
    "type": "object",
    "description": "a batch: exactly `events`, posted all or nothing",
    "required": ["events"],
    "additionalProperties": False,
    "properties": {
        "events": {"type": "array", "minItems": 1, "maxItems": MAX_BATCH, "items": EVENT}
    },
}


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
    user_id = fields.String(required=True, metadata=USER_ID)
    message_count = fields.Integer(
        validate=validate.Range(min=1, max=MAX_MESSAGES), metadata={"default": 1}
    )
    total_cost = fields.Raw(
        metadata={**AMOUNT_SCHEMA, **OPTIONAL, "description": "what the messages cost, if known"}
    )
    destination = fields.String(metadata={**DESTINATION, **OPTIONAL})
    country = fields.String(metadata=OPTIONAL)
    prefix = fields.String(metadata=OPTIONAL)
    segments = fields.Integer(
        validate=validate.Range(min=1, max=MAX_SEGMENTS),
        metadata={**OPTIONAL, "default": 1, "description": "parts per message, for the price"},
    )
    reserve = fields.Boolean(
        metadata={
            **OPTIONAL,
            "default": False,
            "description": "hold the message's cost when the send is allowed (with"
            " `message_id`, one message, and `destination` or `total_cost`)",
        }
    )
    message_id = fields.String(
        validate=validate.Length(min=1, max=MAX_KEY_LENGTH),
        metadata={**OPTIONAL, "description": "the message_id its usage post will carry"},
    )


RESERVE_RULE = {
    "description": "a reserving check names one message and how to price it",
    "anyOf": [
        {"properties": {"reserve": {"enum": [False, None]}}},
        {
            "required": ["reserve", "message_id"],
            "properties": {"message_count": {"enum": [1]}},
            "anyOf": [{"required": ["destination"]}, {"required": ["total_cost"]}],
        },
    ],
}
CHECK = {"allOf": [CheckDoc, RESERVE_RULE]}


class HoldOutcomeDoc(Schema):
    status = fields.String(
        metadata={
            "enum": ["held", "posted"],
            "description": "held: the cost is set aside until the post, a release or expiry;"
            " posted: the message's usage is in already, nothing is held",
        }
    )
    message_id = fields.String(allow_none=True)
    amount = fields.String(allow_none=True)
    expires_at = fields.String(allow_none=True, metadata={"format": "date-time"})


class HoldDoc(Schema):
    message_id = fields.String()
    user_id = fields.String()
    status = fields.String(metadata={"enum": ["released"]})
    amount = fields.String()
    currency = fields.String()


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
    held = fields.String(
        metadata={"description": "the live holds of reserving checks (not ledger balances)"}
    )
    hold = fields.Nested(
        HoldOutcomeDoc,
        allow_none=True,
        metadata={"description": "a reserving check's hold when the send is allowed"},
    )


def body(*schemas: object) -> dict[str, object]:
    """A requestBody of one of `schemas` (apispec resolves them to components)."""
    schema: object = schemas[0] if len(schemas) == 1 else {"oneOf": list(schemas)}
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def answer(description: str, schema: type[Schema]) -> dict[str, object]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}

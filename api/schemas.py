"""Marshmallow schemas shared by the API's blueprints: pagination and the error envelope."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from marshmallow import Schema, fields, validate
from sqlalchemy.orm import Session

from billing.paging import Page
from infra.runtime import report

MAX_PER_PAGE = 500


class PageQuery(Schema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=1_000_000))
    per_page = fields.Integer(load_default=50, validate=validate.Range(min=1, max=MAX_PER_PAGE))


class ErrorBody(Schema):
    code = fields.String(required=True, metadata={"description": "machine-readable snake_case"})
    message = fields.String(required=True)
    details = fields.Dict()


class ErrorEnvelope(Schema):
    error = fields.Nested(ErrorBody, required=True)


def page_of(item: type[Schema], name: str) -> type[Schema]:
    """The schema of one page of `item`s: items, page, per_page, total."""
    return Schema.from_dict(
        {
            "items": fields.List(fields.Nested(item)),
            "page": fields.Integer(),
            "per_page": fields.Integer(),
            "total": fields.Integer(),
        },
        name=name,
    )


def paged(
    query: dict[str, Any],
    load: Callable[[Session, int, int], Page],
    present: Callable[[Any], dict[str, Any]],
) -> dict[str, Any]:
    """One page as every listing answers it: `load(session, limit, offset)` as a report (on the
    read replica when there is one in time: a list may be seconds stale), each item shown by
    `present`."""
    page, per_page = query["page"], query["per_page"]
    result = report(lambda session: load(session, per_page, (page - 1) * per_page))
    return {
        "items": [present(item) for item in result.items],
        "page": page,
        "per_page": per_page,
        "total": result.total,
    }

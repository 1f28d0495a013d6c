"""Reconciliation for accountants (SPEC §7, Appendix A): run one for a date range against Sippy's
API or an uploaded statement CSV, read a run as JSON, CSV or HTML, and resolve its items."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from flask import Response, g, request
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from api.auth import requires
from api.blueprint import Blueprint, links, read_json
from api.errors import ARCHIVED, ApiError
from api.fields import Instant, time_text
from api.schemas import PageQuery, page_of, paged
from infra.runtime import now, report, runtime, transaction
from jobs.context import sippy_client
from ledger.archived import refuse_before_cut
from reconciliation.errors import SippyNotConfigured
from reconciliation.proposals import resolve
from reconciliation.report import as_csv, as_html, present_item
from reconciliation.runs import (
    DEFAULT_WINDOW_SECONDS,
    list_runs,
    reconcile,
    run_report,
)
from reconciliation.statements import fetch_statement, parse_statement_csv

blp = Blueprint(
    "reconciliation", __name__, url_prefix="/api/reconciliation", description="Reconciliation"
)
READERS = ("accountant", "admin")
MAX_STATEMENT_BYTES = 50 * 1024 * 1024
MAX_ITEM_ID = 2**63 - 1
"""Items are numbered by a BIGINT: a larger id names no item (404 from the router)."""


EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
"""A run's range lies in [EARLIEST, LATEST]: Sippy's dates are Unix times, and a range
beyond them is the caller's mistake, refused before Sippy is asked (not Sippy's outage)."""
RANGE_TEXT = "from 1970-01-01T00:00:00Z to 2100-01-01T00:00:00Z"
MAX_WINDOW_MINUTES = 7 * 24 * 60


class RunIn(Schema):
    start = Instant(
        data_key="from",
        required=True,
        metadata={"description": f"start of the range (inclusive), {RANGE_TEXT}"},
    )
    end = Instant(
        data_key="to",
        required=True,
        metadata={"description": f"end of the range (exclusive): after `from`, {RANGE_TEXT}"},
    )
    source = fields.String(
        load_default="sippy",
        validate=validate.OneOf(["sippy", "statement"]),
        metadata={"description": "`statement` only with a multipart upload"},
    )
    window_minutes = fields.Integer(
        load_default=DEFAULT_WINDOW_SECONDS // 60,
        validate=validate.Range(min=0, max=MAX_WINDOW_MINUTES),
    )
    mapping = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        load_default=dict,
        metadata={"description": "statement column names, ours -> theirs"},
    )

    @validates_schema
    def _ordered(self, data: dict[str, Any], **_: Any) -> None:
        for name, key in (("start", "from"), ("end", "to")):
            if not EARLIEST <= data[name] <= LATEST:
                raise ValidationError(f"`{key}` must be {RANGE_TEXT}", key)
        if data["end"] <= data["start"]:
            raise ValidationError("`to` must be after `from`", "to")


class RunJsonDoc(RunIn):
    """The JSON body as documented: against Sippy only (a statement is uploaded)."""

    source = fields.String(validate=validate.OneOf(["sippy"]), metadata={"default": "sippy"})


class RunQuery(Schema):
    format = fields.String(load_default="json", validate=validate.OneOf(["json", "csv", "html"]))
    items = fields.String(load_default="all", validate=validate.OneOf(["all", "differences"]))


class ResolveIn(Schema):
    action = fields.String(required=True, validate=validate.OneOf(["accept", "dismiss"]))
    note = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=2000))


class RunSummaryOut(Schema):
    id = fields.String()
    status = fields.String()
    source = fields.String()
    start = fields.String(data_key="from")
    end = fields.String(data_key="to")
    created_at = fields.String()
    created_by = fields.String()
    totals = fields.Dict()


class RunOut(Schema):
    id = fields.String()
    status = fields.String(metadata={"enum": ["reconciled", "differences"]})
    source = fields.String()
    start = fields.String(data_key="from")
    end = fields.String(data_key="to")
    window_seconds = fields.Integer()
    created_at = fields.String()
    created_by = fields.String()
    inputs = fields.Dict()
    totals = fields.Dict()
    accounts = fields.List(fields.Dict())
    items = fields.List(fields.Dict())


class ItemOut(Schema):
    id = fields.Integer()
    kind = fields.String()
    match_rule = fields.String(allow_none=True)
    reason = fields.String(allow_none=True)
    sippy_account_id = fields.String(allow_none=True)
    customer_id = fields.String(allow_none=True)
    reference = fields.String(allow_none=True)
    ledger = fields.Dict(allow_none=True)
    sippy = fields.Dict(allow_none=True)
    proposal = fields.Dict(allow_none=True)
    resolution = fields.Dict(allow_none=True)


RunPageOut = page_of(RunSummaryOut, "ReconciliationRunPageOut")


def _form_body() -> tuple[dict[str, Any], bytes | None, str | None]:
    """The run's fields and the statement file of a multipart upload, or the JSON body."""
    if request.mimetype == "multipart/form-data":
        body: dict[str, Any] = {k: v for k, v in request.form.items()}
        if "mapping" in body:
            try:
                body["mapping"] = json.loads(body["mapping"])
            except ValueError:
                raise ApiError(
                    422, "validation_failed", "`mapping` must be a JSON object."
                ) from None
        upload = request.files.get("statement")
        if upload is None:
            raise ApiError(422, "validation_failed", "Attach the statement CSV as `statement`.")
        raw = upload.read(MAX_STATEMENT_BYTES + 1)
        if len(raw) > MAX_STATEMENT_BYTES:
            raise ApiError(413, "payload_too_large", "The statement is larger than 50 MB.")
        body.setdefault("source", "statement")
        return body, raw, upload.filename
    return read_json(request), None, None


def _who() -> str:
    return f"api:{getattr(g, 'role', 'unknown')}"


@blp.route("/runs", methods=["POST"])
@blp.doc(responses=ARCHIVED)
@requires(*READERS)
@blp.doc(
    requestBody={
        "required": True,
        "content": {
            "application/json": {"schema": RunJsonDoc},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["from", "to", "statement"],
                    "additionalProperties": False,
                    "properties": {
                        "from": {
                            "type": "string",
                            "format": "date-time",
                            "description": f"inclusive, {RANGE_TEXT}",
                        },
                        "to": {
                            "type": "string",
                            "format": "date-time",
                            "description": f"exclusive: after `from`, {RANGE_TEXT}",
                        },
                        "source": {
                            "type": "string",
                            "enum": ["statement", "sippy"],
                            "default": "statement",
                        },
                        "window_minutes": {
                            "type": "integer",
                            "minimum": 0,
                            "maximum": MAX_WINDOW_MINUTES,
                            "default": DEFAULT_WINDOW_SECONDS // 60,
                        },
                        "mapping": {
                            "type": "string",
                            "description": "a JSON object of strings: statement column names,"
                            " ours -> theirs",
                        },
                        "statement": {"type": "string", "format": "binary"},
                    },
                }
            },
        },
    },
    responses={
        "413": {"$ref": "#/components/responses/DEFAULT_ERROR"},
        "422": {"$ref": "#/components/responses/DEFAULT_ERROR"},
        "503": {
            "description": "Sippy is not configured (`sippy_not_configured`) or does not"
            " answer (`sippy_unavailable`, with `Retry-After`)",
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}
            },
        },
    },
)
@blp.response(201, RunOut)
@blp.doc(
    **links(
        201, read=("GET", "/api/reconciliation/runs/{run_id}", {"run_id": "$response.body#/id"})
    )
)
def create_run() -> dict[str, Any]:
    """Reconcile a range: `{"from", "to", "source": "sippy"}` as JSON, or multipart with the
    statement CSV in `statement` (and `from`, `to`, optional `mapping` as JSON)."""
    raw_body, raw, filename = _form_body()
    try:
        body = RunIn().load(raw_body if isinstance(raw_body, dict) else {})
    except ValidationError as error:
        raise ApiError(
            422, "validation_failed", "The run's fields are invalid.", fields=error.messages
        ) from None
    # before fetching a month from Sippy: an archived range cannot be reconciled here
    transaction(lambda s: refuse_before_cut(s, body["start"], "a reconciliation range"))
    if body["source"] == "statement":
        if raw is None:
            raise ApiError(422, "validation_failed", "source=statement needs a multipart upload.")
        statement = parse_statement_csv(raw, body["mapping"], filename)
    else:
        client = sippy_client(runtime().config)
        if client is None:
            raise SippyNotConfigured("SIPPY_URL is not set: upload a statement instead")
        statement = fetch_statement(client, body["start"], body["end"])
    window = body["window_minutes"] * 60
    source, start, end = body["source"], body["start"], body["end"]
    return transaction(
        lambda s: run_report(
            s, reconcile(s, statement, source, start, end, _who(), now(), window).id, False
        )
    ).report


@blp.route("/runs", methods=["GET"])
@requires(*READERS)
@blp.arguments(PageQuery, location="query")
@blp.response(200, RunPageOut)
def runs(query: dict[str, Any]) -> dict[str, Any]:
    """Runs, newest first."""
    return paged(
        query,
        list_runs,
        lambda run: {
            "id": str(run.id),
            "status": run.status,
            "source": run.source,
            "from": time_text(run.range_from),
            "to": time_text(run.range_to),
            "created_at": time_text(run.created_at),
            "created_by": run.created_by,
            "totals": run.totals,
        },
    )


@blp.route("/runs/<uuid:run_id>", methods=["GET"])
@requires(*READERS)
@blp.arguments(RunQuery, location="query")
@blp.response(200, RunOut)
@blp.doc(
    responses={
        200: {
            "description": "the report: JSON, or with `format=csv` its items as CSV"
            " (`Content-Disposition: attachment`), with `format=html` a page",
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "text/html": {"schema": {"type": "string"}},
            },
        }
    }
)
def read_run(query: dict[str, Any], run_id: uuid.UUID) -> Any:
    """One run: `?format=json|csv|html`, `?items=all|differences`."""
    found = report(lambda s: run_report(s, run_id, query["items"] == "differences"))
    if query["format"] == "html":
        return Response(as_html(found.report), mimetype="text/html")
    if query["format"] == "csv":
        return Response(
            as_csv(found.items),
            mimetype="text/csv",
            headers={"Content-Disposition": f"attachment; filename=reconciliation-{run_id}.csv"},
        )
    return found.report


@blp.route(
    f"/runs/<uuid:run_id>/items/<int(min=1, max={MAX_ITEM_ID}):item_id>/resolve",
    methods=["POST"],
)
@requires(*READERS)
@blp.arguments(ResolveIn)
@blp.response(200, ItemOut)
def resolve_item(body: dict[str, Any], run_id: uuid.UUID, item_id: int) -> dict[str, Any]:
    """Accept an item's proposal (its correcting entries are posted) or dismiss it; either way
    who, when and why is recorded."""
    defaults = runtime().config.billing
    item = transaction(
        lambda s: resolve(s, run_id, item_id, body["action"], _who(), body["note"], now(), defaults)
    )
    return present_item(item)

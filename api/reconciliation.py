"""Reconciliation for accountants (SPEC §7, Appendix A): run one for a date range against Sippy's
API or an uploaded statement CSV, read a run as JSON, CSV or HTML, and resolve its items."""

from __future__ import annotations

import json
import uuid
from typing import Any

from flask import Response, g, request
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from api.auth import requires
from api.blueprint import Blueprint, read_json
from api.errors import ApiError
from api.fields import Instant, time_text
from api.schemas import PageQuery, page_of, paged
from infra.runtime import now, runtime, transaction
from jobs.context import sippy_client
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


class RunIn(Schema):
    start = Instant(data_key="from", required=True)
    end = Instant(data_key="to", required=True)
    source = fields.String(load_default="sippy", validate=validate.OneOf(["sippy", "statement"]))
    window_minutes = fields.Integer(
        load_default=DEFAULT_WINDOW_SECONDS // 60, validate=validate.Range(min=0, max=7 * 24 * 60)
    )
    mapping = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        load_default=dict,
        metadata={"description": "statement column names, ours -> theirs"},
    )

    @validates_schema
    def _ordered(self, data: dict[str, Any], **_: Any) -> None:
        if data["end"] <= data["start"]:
            raise ValidationError("`to` must be after `from`", "to")


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
@requires(*READERS)
@blp.doc(
    requestBody={
        "required": True,
        "content": {
            "application/json": {"schema": RunIn},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["from", "to", "statement"],
                    "properties": {
                        "from": {"type": "string", "format": "date-time"},
                        "to": {"type": "string", "format": "date-time"},
                        "window_minutes": {"type": "integer"},
                        "mapping": {"type": "string", "description": "a JSON object"},
                        "statement": {"type": "string", "format": "binary"},
                    },
                }
            },
        },
    },
    responses={
        "422": {"$ref": "#/components/responses/DEFAULT_ERROR"},
        "503": {"$ref": "#/components/responses/DEFAULT_ERROR"},
    },
)
@blp.response(201, RunOut)
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
def read_run(query: dict[str, Any], run_id: uuid.UUID) -> Any:
    """One run: `?format=json|csv|html`, `?items=all|differences`."""
    found = transaction(lambda s: run_report(s, run_id, query["items"] == "differences"))
    if query["format"] == "html":
        return Response(as_html(found.report), mimetype="text/html")
    if query["format"] == "csv":
        return Response(
            as_csv(found.items),
            mimetype="text/csv",
            headers={"Content-Disposition": f"attachment; filename=reconciliation-{run_id}.csv"},
        )
    return found.report


@blp.route("/runs/<uuid:run_id>/items/<int:item_id>/resolve", methods=["POST"])
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

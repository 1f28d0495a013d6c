"""`?tab=reconciliation`: the runs, a form to run one for a range from Sippy or an uploaded
statement CSV, a run's report with accept/dismiss on each proposal, the trial balance and an
account's statement. The same services as `/api/reconciliation` and `/api/ledger`
(`reconcile` + `run_report`, `resolve`, `trial_balance`, `statement`), one unit of work each."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from flask import Response, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from billing.instants import parse_bound
from infra.http_status import status_of
from infra.runtime import as_of_read, now, report, runtime, transaction
from jobs.context import sippy_client
from ledger.balances import statement, trial_balance
from ledger.errors import LedgerError, UnknownAccount
from reconciliation.errors import (
    InvalidStatement,
    ItemNotResolvable,
    SippyNotConfigured,
    SippyStatementUnavailable,
    UnknownRun,
)
from reconciliation.proposals import resolve
from reconciliation.report import as_csv, present_item
from reconciliation.runs import DEFAULT_WINDOW_SECONDS, list_runs, reconcile, run_report
from reconciliation.statements import (
    OPTIONAL,
    REQUIRED,
    Statement,
    fetch_statement,
    parse_statement_csv,
)
from web import errors, format
from web.auth import staff_only, staff_role
from web.blueprints import admin_pages
from web.filters import PAGE_SIZE, WHOLE, Filters, first_row, listing, pages
from web.security import is_htmx
from web.tabs import page_context, tab

ROLES = ("admin", "accountant")
MAX_STATEMENT_BYTES = 50 * 1024 * 1024
"""As the API: a statement larger than 50 MB is refused."""
MAX_WINDOW_MINUTES = 7 * 24 * 60
MAX_NOTE = 2000
MAPPING_PAIR = re.compile(r"^\s*([a-z_]+)\s*=\s*(.+?)\s*$")
SOURCES = ("sippy", "statement")
KIND_LABELS = {
    "matched": "matched",
    "amount_mismatch": "amount mismatch",
    "missing_in_sippy": "missing in Sippy",
    "missing_in_ledger": "missing in ledger",
}


@dataclass
class RunForm:
    """The run form as typed, a problem per field, and a problem with the whole run."""

    values: dict[str, str]
    problems: dict[str, str] = field(default_factory=dict)
    general: str | None = None
    lines: list[dict[str, Any]] = field(default_factory=list)

    @property
    def invalid(self) -> bool:
        return bool(self.problems or self.general)


def _blank_form() -> RunForm:
    return RunForm(
        {
            "from": "",
            "to": "",
            "source": "statement",
            "window_minutes": str(DEFAULT_WINDOW_SECONDS // 60),
            "mapping": "",
        }
    )


def _tab_page(form: RunForm | None = None, status: int = 200) -> ResponseReturnValue:
    filters = Filters(request.args if request.method == "GET" else {})
    number = filters.page()
    found = report(lambda s: list_runs(s, PAGE_SIZE, first_row(number)))
    return render_template(
        "admin/reconciliation.html",
        **page_context("Reconciliation", "reconciliation"),
        **listing(found, number, filters),
        form=form or _blank_form(),
        sippy_configured=bool(runtime().config.sippy_url),
    ), (status if status != 200 else (400 if filters.problems else 200))


@tab("reconciliation", "Reconciliation", roles=ROLES)
def reconciliation() -> ResponseReturnValue:
    return _tab_page()


# --- running one --------------------------------------------------------------------------


def _mapping(text: str, form: RunForm) -> dict[str, str]:
    """`ours=theirs` pairs, one per line or comma-separated."""
    known = REQUIRED + OPTIONAL
    mapping: dict[str, str] = {}
    for part in re.split(r"[,\n]", text):
        if not part.strip():
            continue
        pair = MAPPING_PAIR.match(part)
        if pair is None or pair.group(1) not in known:
            form.problems["mapping"] = (
                f"Write the mapping as ours=theirs pairs, ours one of {', '.join(known)}"
                f" (not {part.strip()!r})."
            )
            return {}
        mapping[pair.group(1)] = pair.group(2)
    return mapping


def read_run_form(args: Any) -> tuple[RunForm, dict[str, Any]]:
    form = RunForm(
        {
            name: (args.get(name) or "").strip()
            for name in ("from", "to", "source", "window_minutes", "mapping")
        }
    )
    body: dict[str, Any] = {}
    for name, label in (("from", "From"), ("to", "To")):
        text = form.values[name]
        moment = parse_bound(text) if text else None
        if not text:
            form.problems[name] = f"{label} is required: a date (YYYY-MM-DD)."
        elif moment is None:
            form.problems[name] = f"{label} must be a date (YYYY-MM-DD) or an RFC 3339 time."
        body[name] = moment
    if body["from"] and body["to"] and body["to"] <= body["from"]:
        form.problems["to"] = "To must be after From."
    source = form.values["source"] or "statement"
    if source not in SOURCES:
        form.problems["source"] = "Choose Sippy or an uploaded statement."
    body["source"] = source
    window = form.values["window_minutes"] or str(DEFAULT_WINDOW_SECONDS // 60)
    if not WHOLE.fullmatch(window) or not 0 <= int(window) <= MAX_WINDOW_MINUTES:
        form.problems["window_minutes"] = (
            f"The time window must be a whole number of minutes, 0 to {MAX_WINDOW_MINUTES}."
        )
    else:
        body["window"] = int(window) * 60
    body["mapping"] = _mapping(form.values["mapping"], form)
    return form, body


def _statement_problem(form: RunForm, error: InvalidStatement) -> None:
    message = error.message[:1].upper() + error.message[1:] + "."
    details = error.details
    if details.get("code") == "missing_columns":
        found = ", ".join(details.get("found") or []) or "none"
        message += f" Columns found: {found}."
    form.problems["statement"] = message
    form.lines = list(details.get("errors") or [])


@admin_pages.post("/reconciliation/runs")
@staff_only(*ROLES)
def run() -> ResponseReturnValue:
    """Reconcile a range (`POST /api/reconciliation/runs`): Sippy's statement fetched, or the
    uploaded one parsed, before the one unit of work that stores the run."""
    form, body = read_run_form(request.form)
    raw: bytes | None = None
    filename: str | None = None
    if body["source"] == "statement" and not form.invalid:
        upload = request.files.get("statement")
        if upload is None or not upload.filename:
            form.problems["statement"] = "Choose the statement CSV to upload."
        else:
            raw = upload.read(MAX_STATEMENT_BYTES + 1)
            filename = upload.filename
            if len(raw) > MAX_STATEMENT_BYTES:
                form.problems["statement"] = "The statement is larger than 50 MB."
    if form.invalid:
        return _tab_page(form, 422)
    status = 422
    try:
        found: Statement
        if raw is not None:
            found = parse_statement_csv(raw, body["mapping"], filename)
        else:
            client = sippy_client(runtime().config)
            if client is None:
                raise SippyNotConfigured(
                    "Sippy is not configured (SIPPY_URL is not set): upload a statement instead"
                )
            found = fetch_statement(client, body["from"], body["to"])
        who = f"web:{staff_role()}"
        start, end, source, window = body["from"], body["to"], body["source"], body["window"]
        run_id = transaction(
            lambda s: reconcile(s, found, source, start, end, who, now(), window).id
        )
    except InvalidStatement as error:
        _statement_problem(form, error)
    except SippyStatementUnavailable as error:
        form.general = error.message[:1].upper() + error.message[1:] + "."
        status = 503
    except LedgerError as error:
        form.general = error.message[:1].upper() + error.message[1:] + "."
        status = status_of(error)[0]
    else:
        flash(f"Reconciliation run {format.short_id(run_id)} is done.", "success")
        return redirect(url_for("admin.run_page", run_id=run_id), 303)
    return _tab_page(form, status)


# --- one run ------------------------------------------------------------------------------


def _load_run(run_id: uuid.UUID, differences_only: bool) -> Any:
    return transaction(lambda s: run_report(s, run_id, differences_only))


@admin_pages.get("/reconciliation/<uuid:run_id>")
@staff_only(*ROLES)
def run_page(run_id: uuid.UUID) -> ResponseReturnValue:
    """A run's report: its totals, the accounts that differ, every item and its proposal."""
    only = request.args.get("items") == "differences"
    found = _load_run(run_id, only)  # an unknown run: the 404 page of web.errors
    return render_template(
        "admin/reconciliation_run.html",
        **page_context("Reconciliation run", "reconciliation"),
        run=found.report,
        run_id=run_id,
        differences_only=only,
        kinds=KIND_LABELS,
    )


@admin_pages.get("/reconciliation/<uuid:run_id>.csv")
@staff_only(*ROLES)
def run_csv(run_id: uuid.UUID) -> ResponseReturnValue:
    """The run's items as CSV (as `GET /api/reconciliation/runs/<id>?format=csv`)."""
    only = request.args.get("items") == "differences"
    found = _load_run(run_id, only)  # an unknown run: the 404 page of web.errors
    return Response(
        as_csv(found.items),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="reconciliation-{run_id}.csv"'},
    )


@admin_pages.post("/reconciliation/<uuid:run_id>/items/<int:item_id>/resolve")
@staff_only(*ROLES)
def resolve_item(run_id: uuid.UUID, item_id: int) -> ResponseReturnValue:
    """Accept an item's proposal or dismiss it (`POST …/items/<id>/resolve`)."""
    action = request.form.get("action", "")
    note = (request.form.get("note") or "").strip() or None
    back = url_for("admin.run_page", run_id=run_id)
    if action not in ("accept", "dismiss"):
        return _refused("Choose accept or dismiss.", back, 422)
    if note is not None and len(note) > MAX_NOTE:
        return _refused(f"The note may be at most {MAX_NOTE} characters.", back, 422)
    who = f"web:{staff_role()}"
    defaults = runtime().config.billing
    try:
        item = transaction(
            lambda s: resolve(s, run_id, item_id, action, who, note, now(), defaults)
        )
    except UnknownRun:
        if is_htmx(request):
            return _refused(f"There is no item {item_id} in run {run_id}.", back, 404)
        return errors.error_page(404, f"There is no item {item_id} in run {run_id}.")
    except ItemNotResolvable as error:
        return _refused(f"Not done: {error.message}.", back, 409)
    except LedgerError as error:
        return _refused(f"Not done: {error.message}.", back, status_of(error)[0])
    verb = "accepted: its entries are posted" if action == "accept" else "dismissed"
    message = f"Item {item_id} is {verb}."
    if is_htmx(request):
        return render_template(
            "admin/_reconciliation_item.html",
            item=present_item(item),
            run_id=run_id,
            kinds=KIND_LABELS,
            notice=message,
        )
    flash(message, "success")
    return redirect(back, 303)


def _refused(message: str, back: str, status: int) -> ResponseReturnValue:
    if is_htmx(request):
        return errors.notice(message, status)
    flash(message, "error")
    return redirect(back, 303)


# --- the ledger ---------------------------------------------------------------------------


@admin_pages.get("/reconciliation/trial-balance")
@staff_only(*ROLES)
def trial_balance_page() -> ResponseReturnValue:
    """Every account's balance and debits against credits per currency
    (`GET /api/ledger/trial-balance`), as of now or `?as_of=`."""
    filters = Filters(request.args)
    as_of = filters.bound("as_of", "As of")
    number = filters.page()
    result = as_of_read(lambda s: trial_balance(s, as_of), as_of)
    accounts = result.accounts[first_row(number) : number * PAGE_SIZE]
    return render_template(
        "admin/reconciliation_trial_balance.html",
        **page_context("Trial balance", "reconciliation"),
        result=result,
        accounts=accounts,
        total=len(result.accounts),
        pager=pages(len(result.accounts), number),
        filters=filters,
        shown_as_of=as_of or now(),
    ), (400 if filters.problems else 200)


@admin_pages.get("/reconciliation/accounts/<code>")
@staff_only(*ROLES)
def account_page(code: str) -> ResponseReturnValue:
    """One account's statement: its transfers effective in [from, to) with running balances
    (`GET /api/ledger/accounts/<code>/transfers`)."""
    filters = Filters(request.args)
    start = filters.bound("from", "From")
    end = filters.bound("to", "To")
    number = filters.page()
    try:
        found = report(
            lambda s: statement(
                s, code, start=start, end=end, limit=PAGE_SIZE, offset=first_row(number)
            )
        )
    except UnknownAccount:
        return errors.error_page(404, f"There is no account {code}.")
    return render_template(
        "admin/reconciliation_account.html",
        **page_context(f"Account {found.account.code}", "reconciliation"),
        found=found,
        currency=found.account.currency,
        total=found.total,
        pager=pages(found.total, number),
        filters=filters,
        money=format.money,
    ), (400 if filters.problems else 200)

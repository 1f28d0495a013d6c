"""The end users' pages (SPEC §7): the billing widget the host application frames on its
dashboard, and the user's billing history and notifications. A user token (`?token=`) is
exchanged on first load for a short server-side session, so the token leaves the URL; every
figure is read for the session's user only, whatever the URL says."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from flask import abort, redirect, render_template, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from billing.access.user_tokens import user_of_token
from billing.access.web_sessions import sign_in_user
from billing.customers import get_customer
from billing.errors import CustomerNotFound, InvalidUserToken
from billing.invoice import InvoiceStatus
from billing.invoicing.summaries import (
    Summary,
    billing_history,
    billing_summary,
    credit_exposure,
)
from billing.notifications.store import KINDS, notifications_of, public_notification
from infra.runtime import now, runtime, transaction
from web import errors
from web.auth import USER_COOKIE_KEY, forget, remember, signed_in_user
from web.blueprints import user_pages
from web.filters import PAGE_SIZE, Filters, first_row, listing, pages
from web.security import is_htmx

REFRESH_SECONDS = 60
"""How often the widget reads its figures again (htmx, or a meta refresh without script)."""

LEVELS = {
    "ok": ("OK", "bg-success"),
    "near": ("Near limit", "bg-warning"),
    "reached": ("Limit reached", "bg-danger"),
}
"""A meter's level: the status word shown next to it, and its bar's colour class."""

KIND_TITLES = {
    "approaching_threshold": "Approaching your billing threshold",
    "invoice_issued": "Invoice issued",
    "invoice_paid": "Invoice paid",
    "payment_failed": "Payment failed",
}

FACT_LABELS = {
    "percent_used": "Used",
    "notify_at_percent": "Notice at",
    "unbilled": "Unbilled usage",
    "unbilled_messages": "Unbilled messages",
    "threshold_amount": "Threshold amount",
    "threshold_messages": "Threshold messages",
    "amount": "Amount",
    "period_start": "Period from",
    "period_end": "Period to",
    "awaiting_approval": "Awaiting approval",
    "reference": "Reference",
    "reason": "Reason",
    "next_retry_at": "Next attempt",
    "invoice_id": "Invoice",
}
"""Labels of a notification's figures, in the order shown; others follow by their key."""

TIMES = ("period_start", "period_end", "next_retry_at")
HIDDEN = ("currency",)


def _unauthorized(error: HTTPException) -> ResponseReturnValue:
    """The "sign in again" page: no figures of anyone. An htmx refresh whose session ended
    reloads the whole page, so the widget does not keep showing stale figures."""
    headers = {"HX-Refresh": "true"} if is_htmx(request) else {}
    body = render_template(
        "user/unauthorized.html",
        heading="Sign in needed",
        message="Your billing session has ended or the link is not valid. Reload the dashboard.",
    )
    return body, 401, headers


errors.register(user_pages, _unauthorized)


# --- the session -------------------------------------------------------------------------


def _exchange_token() -> ResponseReturnValue | None:
    """With `?token=`: a verified token starts a new session for its user (ending this
    browser's earlier user session) and redirects to the same page without the token; a bad
    one ends any earlier user session and answers 401. Without a token: None."""
    if "token" not in request.args:
        return None
    forget(USER_COOKIE_KEY)  # whatever comes next, the earlier user's session is over
    secret = runtime().config.user_token_secret
    if not secret:
        abort(401)
    try:
        user_id = user_of_token(secret, request.args.get("token", ""))
    except InvalidUserToken:
        abort(401)
    token = transaction(lambda s: sign_in_user(s, user_id, now()))
    remember(USER_COOKIE_KEY, token)  # the staff session, if any, stays
    rest = [(k, v) for k, v in request.args.items(multi=True) if k != "token"]
    target = request.script_root + request.path
    return redirect(target + (f"?{urlencode(rest)}" if rest else ""), 303)


def _user() -> str:
    """The session's user; a 401 page without one."""
    user_id = signed_in_user()
    if user_id is None:
        abort(401)
    return user_id


# --- the widget --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Meter:
    """Usage against one limit: `used` of `limit` (micro-units, or messages)."""

    key: str
    label: str
    used: int
    limit: int
    messages: bool
    notify_at_percent: int

    @property
    def percent(self) -> int:
        """Whole percent used, rounded down (never shows 100 before the limit is reached)."""
        if self.limit <= 0:
            return 100
        return self.used * 100 // self.limit

    @property
    def width(self) -> int:
        return max(0, min(self.percent, 100))

    @property
    def level(self) -> str:
        if self.used >= self.limit:
            return "reached"
        if self.used * 100 >= self.notify_at_percent * self.limit:
            return "near"
        return "ok"

    @property
    def status(self) -> str:
        return LEVELS[self.level][0]

    @property
    def colour(self) -> str:
        return LEVELS[self.level][1]


def meters(found: Summary, exposure: int) -> list[Meter]:
    """A meter for each limit of the open period that is set: the billing thresholds (amount,
    messages) against the unbilled usage, and the credit limit against what the pre-send check
    compares with it (unbilled usage, holds and unpaid invoices)."""
    limits = found.settings
    notify = limits.notify_at_percent
    shown = []
    if limits.threshold_amount:
        shown.append(
            Meter(
                "threshold_amount",
                "Billing threshold (amount)",
                found.unbilled_micros,
                limits.threshold_amount,
                False,
                notify,
            )
        )
    if limits.threshold_messages:
        shown.append(
            Meter(
                "threshold_messages",
                "Billing threshold (messages)",
                found.unbilled_messages,
                limits.threshold_messages,
                True,
                notify,
            )
        )
    if limits.credit_limit is not None:
        shown.append(
            Meter("credit_limit", "Credit limit", exposure, limits.credit_limit, False, notify)
        )
    return shown


def _widget_context(user_id: str) -> dict[str, Any]:
    defaults = runtime().config.billing
    moment = now()

    def load(session: Any) -> tuple[Summary, int] | None:
        try:
            found = billing_summary(session, user_id, defaults, moment)
        except CustomerNotFound:
            return None
        return found, credit_exposure(session, found)

    loaded = transaction(load)
    if loaded is None:
        return {"summary": None, "meters": [], "as_of": moment}
    found, exposure = loaded
    return {
        "summary": found,
        "meters": meters(found, exposure),
        "exposure": exposure,
        "as_of": moment,
    }


@user_pages.get("/widget/billing")
def widget() -> ResponseReturnValue:
    """The billing widget: usage against each limit, next billing, what is unpaid, the last
    invoice; read again every minute."""
    exchanged = _exchange_token()
    if exchanged is not None:
        return exchanged
    user_id = _user()
    return render_template(
        "user/widget.html",
        heading="Billing",
        current="widget",
        refresh_seconds=REFRESH_SECONDS,
        **_widget_context(user_id),
    )


@user_pages.get("/widget/billing/fragment")
def widget_fragment() -> ResponseReturnValue:
    """The widget's body alone, for its htmx refresh."""
    user_id = _user()
    return render_template(
        "user/_widget_body.html", refresh_seconds=REFRESH_SECONDS, **_widget_context(user_id)
    )


# --- history and notifications -----------------------------------------------------------


@user_pages.get("/billing/history")
def history() -> ResponseReturnValue:
    """The user's invoices, newest first, with status and usage per country and prefix."""
    exchanged = _exchange_token()
    if exchanged is not None:
        return exchanged
    user_id = _user()
    filters = Filters(request.args)
    status = filters.choice("status", list(InvoiceStatus), "Status")
    number = filters.page()
    found = transaction(lambda s: billing_history(s, user_id, status, PAGE_SIZE, first_row(number)))
    return render_template(
        "user/history.html",
        heading="Billing history",
        current="history",
        **listing(found, number, filters),
        status=status,
        statuses=list(InvoiceStatus),
    ), (400 if filters.problems else 200)


@dataclass(frozen=True, slots=True)
class Fact:
    """One figure of a notification: `kind` says how the page writes it."""

    label: str
    kind: str  # money, time, text
    value: Any


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def facts(row: Any, currency: str) -> list[Fact]:
    """A notification's figures as the user reads them: money through the page's money
    format (in the notice's currency, else the user's), times in UTC, the rest as text."""
    payload = row.payload if isinstance(row.payload, dict) else {}
    data = public_notification(row)["data"]
    money_currency = payload.get("currency") if isinstance(payload.get("currency"), str) else None
    found: list[tuple[str, Fact]] = []
    for key, value in payload.items():
        name = key.removesuffix("_micros")
        if name in HIDDEN or value is None:
            continue
        label = FACT_LABELS.get(name, name.replace("_", " ").capitalize())
        if key.endswith("_micros") and isinstance(value, int) and not isinstance(value, bool):
            found.append((name, Fact(label, "money", (value, money_currency or currency))))
        elif name in TIMES and _time(value) is not None:
            found.append((name, Fact(label, "time", _time(value))))
        elif name.endswith("percent") or name == "percent_used":
            found.append((name, Fact(label, "text", f"{data.get(name, value)} %")))
        elif isinstance(value, bool):
            found.append((name, Fact(label, "text", "yes" if value else "no")))
        else:
            found.append((name, Fact(label, "text", str(data.get(name, value)))))
    order = list(FACT_LABELS)
    found.sort(key=lambda item: order.index(item[0]) if item[0] in order else len(order))
    return [fact for _, fact in found]


@user_pages.get("/billing/notifications")
def notifications() -> ResponseReturnValue:
    """The user's notifications, newest first."""
    exchanged = _exchange_token()
    if exchanged is not None:
        return exchanged
    user_id = _user()
    filters = Filters(request.args)
    kind = filters.choice("type", KINDS, "Type")
    number = filters.page()
    fallback = runtime().config.billing.currency

    def load(session: Any) -> tuple[Any, str]:
        try:
            currency = get_customer(session, user_id).currency
        except CustomerNotFound:
            currency = fallback
        found = notifications_of(session, user_id, kind, PAGE_SIZE, first_row(number))
        return found, currency

    found, currency = transaction(load)
    items = [
        {
            "id": str(row.id),
            "kind": row.kind,
            "title": KIND_TITLES.get(row.kind, row.kind),
            "created_at": row.created_at,
            "facts": facts(row, currency),
        }
        for row in found.items
    ]
    return render_template(
        "user/notifications.html",
        heading="Notifications",
        current="notifications",
        items=items,
        total=found.total,
        pager=pages(found.total, number),
        filters=filters,
        kind=kind,
        kinds=[(name, KIND_TITLES[name]) for name in KINDS],
    ), (400 if filters.problems else 200)

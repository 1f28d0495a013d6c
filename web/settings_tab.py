"""`?tab=settings`: the global defaults as one form, and the users' overrides, each field shown
with its effective value and whether the user overrides or inherits it. Saving calls the
services of `PUT/DELETE /api/admin/sms/billing-settings` (`put_settings`, `delete_overrides`) in
one unit of work; the service's refusal (`InvalidSettings` naming its field) is shown next to
that field, with the input kept."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from flask import flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.datastructures import MultiDict

from billing.chart import CUSTOMER_ID
from billing.settings import (
    FIELD_NAMES,
    FREQUENCIES,
    GLOBAL_SCOPE,
    MONEY_FIELDS,
    Settings,
    delete_overrides,
    effective_settings,
    put_settings,
    user_overrides,
)
from infra.runtime import now, runtime, transaction
from ledger.errors import InvalidCurrency, LedgerError
from ledger.money import parse_micros
from web import errors, format
from web.auth import staff_only
from web.blueprints import admin_pages
from web.filters import Filters
from web.security import is_htmx
from web.tabs import page_context, tab

USERS_PER_PAGE = 20
BOOLEAN_FIELDS = (
    "auto_process",
    "notifications_enabled",
    "require_manual_approval",
    "block_on_pending",
)
INTEGER_FIELDS = ("threshold_messages", "notify_at_percent", "max_pending_invoices")
NULLABLE_FIELDS = (
    "threshold_amount",
    "threshold_messages",
    "max_pending_invoices",
    "credit_limit",
    "webhook_url",
)
LABELS = {
    "frequency": "Frequency",
    "threshold_amount": "Threshold amount",
    "threshold_messages": "Threshold messages",
    "currency": "Currency",
    "auto_process": "Auto-process charges",
    "notifications_enabled": "Notifications enabled",
    "notify_at_percent": "Notify at percent",
    "require_manual_approval": "Require manual approval",
    "block_on_pending": "Block on pending",
    "max_pending_invoices": "Max pending invoices",
    "credit_limit": "Credit limit",
    "webhook_url": "Webhook URL",
}
HELP = {
    "threshold_amount": "Decimal money, e.g. 25.00; blank for none.",
    "threshold_messages": "A whole number of messages; blank for none.",
    "currency": "ISO 4217, e.g. USD.",
    "notify_at_percent": "1 to 100.",
    "max_pending_invoices": "A whole number; blank for no limit.",
    "credit_limit": "Decimal money; blank for no limit.",
    "webhook_url": "http:// or https://; blank for none.",
}
WHOLE_NUMBER = re.compile(r"^-?[0-9]{1,12}$")
NONE_WORD = "none"


@dataclass
class SettingsForm:
    """A settings form as typed: its values as text, and a problem per field."""

    values: dict[str, str]
    problems: dict[str, str] = field(default_factory=dict)
    general: str | None = None

    @property
    def invalid(self) -> bool:
        return bool(self.problems or self.general)


# --- reading a form -----------------------------------------------------------------------


def _value(name: str, text: str, form: SettingsForm) -> Any:
    """One typed field's value, or None with a problem recorded."""
    if name in MONEY_FIELDS:
        try:
            return parse_micros(text)
        except LedgerError as error:
            form.problems[name] = f"{LABELS[name]}: {error.message}."
            return None
    if name in INTEGER_FIELDS:
        if not WHOLE_NUMBER.match(text):
            form.problems[name] = f"{LABELS[name]} must be a whole number."
            return None
        return int(text)
    if name == "webhook_url":
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            form.problems[name] = "Webhook URL must be an http:// or https:// address."
            return None
        return text
    if name == "currency":
        return text.upper()
    if name == "frequency" and text not in FREQUENCIES:
        form.problems[name] = f"Frequency must be one of {', '.join(FREQUENCIES)}."
        return None
    return text


def read_global_form(args: MultiDict[str, str]) -> tuple[SettingsForm, dict[str, Any]]:
    """Every field of the global form: a checkbox left unticked is false, blank text is none
    (where none is allowed)."""
    form = SettingsForm({name: (args.get(name) or "").strip() for name in FIELD_NAMES})
    changes: dict[str, Any] = {}
    for name in FIELD_NAMES:
        text = form.values[name]
        if name in BOOLEAN_FIELDS:
            changes[name] = text == "on"
        elif not text:
            if name in NULLABLE_FIELDS:
                changes[name] = None
            else:
                form.problems[name] = f"{LABELS[name]} is required."
        else:
            changes[name] = _value(name, text, form)
    return form, changes


def read_override_form(args: MultiDict[str, str]) -> tuple[SettingsForm, str, dict[str, Any]]:
    """A user's override form: blank inherits, `none` overrides a nullable field with none,
    yes/no override a switch."""
    form = SettingsForm(
        {name: (args.get(name) or "").strip() for name in ("user_id", *FIELD_NAMES)}
    )
    user_id = form.values["user_id"]
    if not user_id:
        form.problems["user_id"] = "User id is required."
    elif not CUSTOMER_ID.match(user_id) or user_id == GLOBAL_SCOPE:
        form.problems["user_id"] = "User id may hold 1-64 letters, digits, '.', '_' or '-'."
    changes: dict[str, Any] = {}
    for name in FIELD_NAMES:
        text = form.values[name]
        if not text:
            continue
        if name in BOOLEAN_FIELDS:
            if text not in ("yes", "no"):
                form.problems[name] = f"{LABELS[name]} must be inherit, yes or no."
                continue
            changes[name] = text == "yes"
        elif name in NULLABLE_FIELDS and text.lower() == NONE_WORD:
            changes[name] = None
        else:
            changes[name] = _value(name, text, form)
    return form, user_id, changes


def refusal_field(error: LedgerError) -> str | None:
    """The form field a service refusal names."""
    if isinstance(error, InvalidCurrency):
        return "currency"
    named = error.details.get("field")
    if isinstance(named, str) and named in FIELD_NAMES:
        return named
    several = error.details.get("fields")
    if isinstance(several, list) and several and several[0] in FIELD_NAMES:
        return str(several[0])
    return None


def _refused(form: SettingsForm, error: LedgerError) -> None:
    named = refusal_field(error)
    message = error.message
    if named is None:
        form.general = message
    else:
        form.problems[named] = message


# --- showing settings ---------------------------------------------------------------------


def global_form_values(settings: Settings) -> dict[str, str]:
    values: dict[str, str] = {}
    for name, value in settings.as_values().items():
        if name in BOOLEAN_FIELDS:
            values[name] = "on" if value else ""
        elif name in MONEY_FIELDS:
            values[name] = format.amount(value, settings.currency)
        else:
            values[name] = "" if value is None else str(value)
    return values


def override_form_values(user_id: str, overrides: dict[str, Any], currency: str) -> dict[str, str]:
    values = {"user_id": user_id}
    for name in FIELD_NAMES:
        if name not in overrides:
            values[name] = ""
            continue
        value = overrides[name]
        if value is None:
            values[name] = NONE_WORD
        elif name in BOOLEAN_FIELDS:
            values[name] = "yes" if value else "no"
        elif name in MONEY_FIELDS:
            values[name] = format.amount(value, currency)
        else:
            values[name] = str(value)
    return values


def shown(name: str, value: Any, currency: str) -> str:
    """A setting's value as the list writes it."""
    if value is None:
        return "—"
    if name in BOOLEAN_FIELDS:
        return "yes" if value else "no"
    if name in MONEY_FIELDS:
        return format.money(value, currency)
    return str(value)


def _defaults() -> Any:
    return runtime().config.billing


def _context(**extra: Any) -> dict[str, Any]:
    return {
        "fields": FIELD_NAMES,
        "labels": LABELS,
        "help": HELP,
        "booleans": BOOLEAN_FIELDS,
        "frequencies": FREQUENCIES,
        "nullable": NULLABLE_FIELDS,
        "shown": shown,
        **extra,
    }


def _tab_page(
    global_form: SettingsForm | None = None,
    add_form: SettingsForm | None = None,
    status: int = 200,
) -> ResponseReturnValue:
    filters = Filters(request.args)
    wanted = filters.matching("user", CUSTOMER_ID, "User")
    number = filters.page()

    def load(session: Any) -> tuple[Settings, int, list[tuple[str, dict[str, Any], Settings]]]:
        overrides = user_overrides(session, wanted)
        users = list(overrides)
        shown_users = users[(number - 1) * USERS_PER_PAGE : number * USERS_PER_PAGE]
        effective = effective_settings(session, shown_users, _defaults(), now())
        rows = [(u, overrides[u], effective[u]) for u in shown_users]
        return effective[GLOBAL_SCOPE], len(users), rows

    base, total, rows = transaction(load)
    last = max(1, -(-total // USERS_PER_PAGE))
    pager = {
        "current": number,
        "last": last,
        "previous": number - 1 if number > 1 else None,
        "next": number + 1 if number < last else None,
    }
    return render_template(
        "admin/settings.html",
        **page_context("Settings", "settings"),
        **_context(
            base=base,
            global_form=global_form or SettingsForm(global_form_values(base)),
            add_form=add_form or SettingsForm({"user_id": "", **dict.fromkeys(FIELD_NAMES, "")}),
            rows=rows,
            total=total,
            pager=pager,
            filters=filters,
        ),
    ), (status if status != 200 else (400 if filters.problems else 200))


@tab("settings", "Settings", roles=("admin",))
def settings() -> ResponseReturnValue:
    return _tab_page()


# --- actions ------------------------------------------------------------------------------


@admin_pages.post("/settings/global")
@staff_only("admin")
def save_global() -> ResponseReturnValue:
    """Save the global defaults (`PUT …/billing-settings` without `userId`)."""
    form, changes = read_global_form(request.form)
    if not form.invalid:
        try:
            transaction(lambda s: put_settings(s, GLOBAL_SCOPE, changes, _defaults(), now()))
        except LedgerError as error:
            _refused(form, error)
    if form.invalid:
        return _tab_page(global_form=form, status=422)
    flash("The global settings are saved.", "success")
    return redirect(url_for("admin.home", tab="settings"), 303)


@admin_pages.get("/settings/overrides/<user_id>")
@staff_only("admin")
def edit_overrides(user_id: str) -> ResponseReturnValue:
    """A user's overrides as a form, every field prefilled (blank: inherited)."""
    if not CUSTOMER_ID.match(user_id):
        return errors.error_page(404, "That is not a user id.")

    def load(session: Any) -> tuple[dict[str, Any], dict[str, Settings]]:
        found = user_overrides(session, user_id).get(user_id, {})
        return found, effective_settings(session, [user_id], _defaults(), now())

    found, effective = transaction(load)
    form = SettingsForm(override_form_values(user_id, found, effective[user_id].currency))
    return _edit_page(user_id, form, effective[GLOBAL_SCOPE], bool(found))


def _edit_page(
    user_id: str, form: SettingsForm, base: Settings, exists: bool, status: int = 200
) -> ResponseReturnValue:
    return render_template(
        "admin/settings_overrides.html",
        **page_context(f"Overrides of user {user_id}", "settings"),
        **_context(user_id=user_id, form=form, base=base, exists=exists),
    ), status


@admin_pages.post("/settings/overrides")
@staff_only("admin")
def save_overrides() -> ResponseReturnValue:
    """Add or change a user's overrides (`PUT …/billing-settings` with `userId`). The add form
    merges its fields into the user's overrides; the edit form (`replace`) makes the user's
    overrides exactly its non-blank fields, so a field cleared there is inherited again."""
    form, user_id, changes = read_override_form(request.form)
    replace = request.form.get("replace") == "1"
    if not form.invalid and not changes and not replace:
        form.general = "Set at least one field to override."
    if not form.invalid:

        def save(session: Any) -> Settings | None:
            if replace:
                delete_overrides(session, user_id)
                if not changes:
                    return None
            return put_settings(session, user_id, changes, _defaults(), now())

        try:
            saved = transaction(save)
        except LedgerError as error:
            _refused(form, error)
        else:
            if saved is None:
                flash(f"User {user_id} has no overrides now: every field is inherited.", "success")
            else:
                flash(f"The overrides of user {user_id} are saved.", "success")
            return redirect(url_for("admin.home", tab="settings", user=user_id), 303)
    if replace and "user_id" not in form.problems:
        base = transaction(lambda s: effective_settings(s, [], _defaults(), now())[GLOBAL_SCOPE])
        return _edit_page(user_id, form, base, True, 422)
    return _tab_page(add_form=form, status=422)


@admin_pages.get("/settings/overrides/<user_id>/remove")
@staff_only("admin")
def confirm_remove(user_id: str) -> ResponseReturnValue:
    """The no-JavaScript confirmation of removing every override of a user."""
    if not CUSTOMER_ID.match(user_id):
        return errors.error_page(404, "That is not a user id.")
    return render_template(
        "admin/settings_remove.html",
        **page_context("Remove overrides", "settings"),
        user_id=user_id,
    )


@admin_pages.post("/settings/overrides/<user_id>/remove")
@staff_only("admin")
def remove_overrides(user_id: str) -> ResponseReturnValue:
    """Drop every override of a user (`DELETE …/billing-settings?userId=`)."""
    if not CUSTOMER_ID.match(user_id):
        return errors.error_page(404, "That is not a user id.")
    removed = transaction(lambda s: delete_overrides(s, user_id))
    message = (
        f"The overrides of user {user_id} are removed: every field is inherited."
        if removed
        else f"User {user_id} had no overrides."
    )
    if is_htmx(request):
        return render_template("admin/_settings_removed.html", message=message)
    flash(message, "success")
    return redirect(url_for("admin.home", tab="settings"), 303)

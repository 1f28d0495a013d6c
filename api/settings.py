"""Billing settings for admins: the global defaults and per-user overrides
(`GET/PUT/DELETE /api/admin/sms/billing-settings`, SPEC §5, Appendix A)."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from api.auth import requires
from api.blueprint import Blueprint
from api.fields import Flag, Money, currency_field, money_text, query_flag, webhook_url_field
from billing.chart import CUSTOMER_ID
from billing.settings import (
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

MAX_COUNT = 2**31 - 1
"""The largest message or invoice count a setting may name."""

blp = Blueprint(
    "settings", __name__, url_prefix="/api/admin/sms/billing-settings", description="Settings"
)


class SettingsQuery(Schema):
    include_global = query_flag(data_key="includeGlobal", load_default=False)
    user_id = fields.String(data_key="userId", validate=validate.Regexp(CUSTOMER_ID))


class DeleteQuery(Schema):
    user_id = fields.String(data_key="userId", required=True, validate=validate.Regexp(CUSTOMER_ID))


class SettingsIn(Schema):
    user_id = fields.String(data_key="userId", validate=validate.Regexp(CUSTOMER_ID))
    frequency = fields.String(validate=validate.OneOf(FREQUENCIES))
    threshold_amount = Money(positive=True, allow_none=True)
    threshold_messages = fields.Integer(
        allow_none=True, strict=True, validate=validate.Range(min=1, max=MAX_COUNT)
    )
    currency = currency_field(checked_later=True)
    auto_process = Flag()
    notifications_enabled = Flag()
    notify_at_percent = fields.Integer(strict=True, validate=validate.Range(min=1, max=100))
    require_manual_approval = Flag()
    block_on_pending = Flag()
    max_pending_invoices = fields.Integer(
        allow_none=True, strict=True, validate=validate.Range(min=0, max=MAX_COUNT)
    )
    credit_limit = Money(allow_none=True)
    webhook_url = webhook_url_field()


class SettingsOut(Schema):
    frequency = fields.String()
    threshold_amount = fields.String(allow_none=True)
    threshold_messages = fields.Integer(allow_none=True)
    currency = fields.String()
    auto_process = fields.Boolean()
    notifications_enabled = fields.Boolean()
    notify_at_percent = fields.Integer()
    require_manual_approval = fields.Boolean()
    block_on_pending = fields.Boolean()
    max_pending_invoices = fields.Integer(allow_none=True)
    credit_limit = fields.String(allow_none=True)
    webhook_url = fields.String(allow_none=True)


class UserSettingsOut(Schema):
    user_id = fields.String()
    overrides = fields.Dict()
    effective = fields.Nested(SettingsOut)


class SettingsPageOut(Schema):
    global_ = fields.Nested(SettingsOut, data_key="global")
    users = fields.List(fields.Nested(UserSettingsOut))


def present(values: dict[str, Any], currency: str) -> dict[str, Any]:
    """Settings (or overrides) on the wire: money as decimal strings."""
    shown = dict(values)
    for name in MONEY_FIELDS:
        if shown.get(name) is not None:
            shown[name] = money_text(shown[name], currency)
    return shown


def _user(user_id: str, overrides: dict[str, Any], effective: Settings) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "overrides": present(overrides, effective.currency),
        "effective": present(effective.as_values(), effective.currency),
    }


@blp.route("", methods=["GET"])
@requires("admin")
@blp.arguments(SettingsQuery, location="query")
@blp.response(200, SettingsPageOut)
def read(query: dict[str, Any]) -> dict[str, Any]:
    """Users' overrides with their effective settings (`userId` for one), and the global
    defaults with `includeGlobal=true`."""
    defaults = runtime().config.billing

    def load(session: Any) -> dict[str, Any]:
        overrides = user_overrides(session, query.get("user_id"))
        wanted = [query["user_id"]] if query.get("user_id") else list(overrides)
        effective = effective_settings(session, wanted, defaults, now())
        body: dict[str, Any] = {
            "users": [_user(u, overrides.get(u, {}), effective[u]) for u in wanted]
        }
        if query["include_global"]:
            base = effective[GLOBAL_SCOPE]
            body["global_"] = present(base.as_values(), base.currency)
        return body

    return transaction(load)


@blp.route("", methods=["PUT"])
@requires("admin")
@blp.arguments(SettingsIn)
@blp.response(200, SettingsPageOut)
def write(body: dict[str, Any]) -> dict[str, Any]:
    """Set the global defaults, or (with `userId`) that user's overrides; validated as a whole."""
    scope = body.pop("user_id", None) or GLOBAL_SCOPE
    defaults = runtime().config.billing

    def save(session: Any) -> dict[str, Any]:
        effective = put_settings(session, scope, body, defaults, now())
        if scope == GLOBAL_SCOPE:
            return {"global_": present(effective.as_values(), effective.currency), "users": []}
        overrides = user_overrides(session, scope).get(scope, {})
        return {"users": [_user(scope, overrides, effective)]}

    return transaction(save)


@blp.route("", methods=["DELETE"])
@requires("admin")
@blp.arguments(DeleteQuery, location="query")
@blp.response(200, SettingsPageOut)
def drop(query: dict[str, Any]) -> dict[str, Any]:
    """Drop a user's overrides: the user falls back to the global settings."""
    user_id, defaults = query["user_id"], runtime().config.billing

    def remove(session: Any) -> dict[str, Any]:
        delete_overrides(session, user_id)
        effective = effective_settings(session, [user_id], defaults, now())[user_id]
        return {"users": [_user(user_id, {}, effective)]}

    return transaction(remove)

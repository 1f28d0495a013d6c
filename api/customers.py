"""Customers for admins (SPEC §7, Appendix A): the users smsledger bills, each with its Sippy
account, currency, status and webhook URL."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from api.auth import requires
from api.blueprint import Blueprint, links
from api.fields import currency_field, query_flag, time_text, webhook_url_field
from api.schemas import PageQuery, page_of, paged
from billing.chart import CUSTOMER_ID
from billing.customers import (
    Customer,
    create_customer,
    get_customer,
    list_customers,
    update_customer,
)
from billing.tables import CUSTOMER_STATUSES
from infra.runtime import now, runtime, transaction

blp = Blueprint("customers", __name__, url_prefix="/api/admin/customers", description="Customers")

ONE = "/api/admin/customers/{user_id}"

# Sippy names accounts by an integer `i_account`.
SIPPY_ACCOUNT_ID = validate.Regexp(r"^[0-9]{1,18}$", error="must be Sippy's numeric i_account")


class CustomerQuery(PageQuery):
    status = fields.String(validate=validate.OneOf(CUSTOMER_STATUSES))
    q = fields.String(validate=validate.Length(min=1, max=64))
    has_sippy_account = query_flag()


class CustomerFields(Schema):
    name = fields.String(allow_none=True, validate=validate.Length(max=200))
    sippy_account_id = fields.String(allow_none=True, validate=SIPPY_ACCOUNT_ID)
    status = fields.String(validate=validate.OneOf(CUSTOMER_STATUSES))
    webhook_url = webhook_url_field()


class CustomerIn(CustomerFields):
    user_id = fields.String(required=True, validate=validate.Regexp(CUSTOMER_ID))
    currency = currency_field(
        checked_later=True, metadata={"description": "default: the global settings' currency"}
    )


class CustomerOut(Schema):
    user_id = fields.String()
    name = fields.String(allow_none=True)
    sippy_account_id = fields.String(allow_none=True)
    currency = fields.String()
    status = fields.String()
    webhook_url = fields.String(allow_none=True)
    rate_plan = fields.String(allow_none=True)
    created_at = fields.String()


CustomerPageOut = page_of(CustomerOut, "CustomerPageOut")


def present_customer(customer: Customer) -> dict[str, Any]:
    return {
        "user_id": customer.user_id,
        "name": customer.name,
        "sippy_account_id": customer.sippy_account_id,
        "currency": customer.currency,
        "status": customer.status,
        "webhook_url": customer.webhook_url,
        "rate_plan": customer.rate_plan,
        "created_at": time_text(customer.created_at),
    }


@blp.route("", methods=["GET"])
@requires("admin")
@blp.arguments(CustomerQuery, location="query")
@blp.response(200, CustomerPageOut)
def list_all(query: dict[str, Any]) -> dict[str, Any]:
    """Customers by user id; filters: status, `q` (user id or name fragment),
    `has_sippy_account`."""
    return paged(
        query,
        lambda s, limit, offset: list_customers(
            s,
            status=query.get("status"),
            search=query.get("q"),
            has_sippy_account=query.get("has_sippy_account"),
            limit=limit,
            offset=offset,
        ),
        present_customer,
    )


@blp.route("", methods=["POST"])
@requires("admin")
@blp.arguments(CustomerIn)
@blp.response(201, CustomerOut)
@blp.doc(
    **links(
        201,
        read=("GET", ONE, {"user_id": "$response.body#/user_id"}),
        change=("PATCH", ONE, {"user_id": "$response.body#/user_id"}),
    )
)
def create(body: dict[str, Any]) -> dict[str, Any]:
    """Create a customer with its ledger accounts (currency: the global default if omitted)."""
    user_id = body.pop("user_id")
    currency = body.pop("currency", None)
    defaults = runtime().config.billing

    return present_customer(
        transaction(lambda s: create_customer(s, user_id, currency, now(), defaults, **body))
    )


@blp.route("/<string:user_id>", methods=["GET"])
@requires("admin")
@blp.response(200, CustomerOut)
def read(user_id: str) -> dict[str, Any]:
    """One customer."""
    return present_customer(transaction(lambda s: get_customer(s, user_id)))


@blp.route("/<string:user_id>", methods=["PATCH"])
@requires("admin")
@blp.arguments(CustomerFields)
@blp.response(200, CustomerOut)
def change(body: dict[str, Any], user_id: str) -> dict[str, Any]:
    """Change `sippy_account_id`, `status` (active | suspended), `name`, `webhook_url`; the
    currency is fixed (the customer's accounts are in it)."""

    def work(session: Any) -> Customer:
        if not body:
            return get_customer(session, user_id)
        return update_customer(session, user_id, now(), **body)

    return present_customer(transaction(work))

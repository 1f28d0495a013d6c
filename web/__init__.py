"""The pages (docs/decisions/0020): server-rendered Jinja2 for admins and accountants
(`/admin/sms`) and end users (the billing widget, history, notifications). They call the same
service functions as the JSON API inside one unit of work each, read without JavaScript, and use
vendored htmx only to act without a full reload. `register` mounts them on the app."""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, Flask
from flask_bootstrap import Bootstrap5
from werkzeug.middleware.proxy_fix import ProxyFix

from infra.config import Config
from web import filters, format, security
from web.blueprints import admin_pages, user_pages

assets = Blueprint("assets", __name__, static_folder="static", url_prefix="/assets")


def register(app: Flask, config: Config) -> None:
    # The modules that add routes and tabs to the blueprints.
    from web import (  # noqa: F401
        admin,
        billing_tab,
        customers_tab,
        failed_tab,
        reconciliation_tab,
        record_page,
        settings_tab,
        stats_tab,
        user,
    )

    app.secret_key = config.secret_key or security.stored_secret_key()
    app.config.update(
        SESSION_COOKIE_NAME="smsledger_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        WTF_CSRF_CHECK_DEFAULT=False,  # the JSON API authenticates by bearer, not cookie
        WTF_CSRF_TIME_LIMIT=None,  # valid as long as the session is
        BOOTSTRAP_SERVE_LOCAL=True,
        SESSION_COOKIE_SECURE=config.secure_cookies,
    )
    if config.trust_proxy_headers:  # HTTPS seen by the proxy counts as HTTPS here
        app.wsgi_app = ProxyFix(app.wsgi_app, x_proto=1, x_host=1)  # type: ignore[method-assign]
    app.session_interface = security.SessionCookie()
    security.csrf.init_app(app)
    Bootstrap5(app)
    app.jinja_env.filters.update(format.FILTERS)
    app.jinja_env.globals["page_url"] = filters.page_url
    app.register_blueprint(admin_pages)
    app.register_blueprint(user_pages)
    app.register_blueprint(assets)

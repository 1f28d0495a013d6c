"""The HTTP adapter: `create_app` wires configuration, the database and the blueprints."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from flask import Flask, abort, request
from flask_smorest import Api

from api import (
    billing_records,
    cron,
    customers,
    docs,
    errors,
    health,
    ledger,
    metrics,
    rates,
    reconciliation,
    settings,
    stats,
    usage,
    usage_voids,
    user,
)
from api.jsonio import ExactJSONProvider
from api.schemas import ErrorEnvelope
from infra.config import Config
from infra.logs import configure_logging
from infra.replica import Replica
from infra.runtime import Runtime, system_clock
from ledger.db import make_engine, make_session_factory


class SmsLedgerApi(Api):
    """flask-smorest's Api, documenting and answering errors in smsledger's envelope."""

    ERROR_SCHEMA = ErrorEnvelope

    def handle_http_exception(self, error):  # type: ignore[no-untyped-def]
        return errors.http_error(error)


def _refuse_nul_in_url() -> None:
    """A NUL cannot be stored or compared by PostgreSQL: refuse it before any query (the API
    in its envelope, a page with the pages' 400)."""
    if "\x00" in request.path or b"%00" in request.query_string:
        if not request.path.startswith("/api/"):
            abort(400, "NUL characters are not accepted.")
        raise errors.ApiError(400, "invalid_characters", "NUL characters are not accepted.")


def _document_security(api: Api) -> None:
    """The three bearer schemes of SPEC §7 and the refusals they share."""
    schemes = {
        "apiKey": "an API key (`keys create`); each key has one role: admin, service, accountant",
        "userToken": "an end user's HS256 JWT signed with USER_TOKEN_SECRET (`sub`, `exp`)",
        "cronSecret": "the value of CRON_SECRET",
    }
    for name, description in schemes.items():
        api.spec.components.security_scheme(
            name, {"type": "http", "scheme": "bearer", "description": description}
        )
    envelope = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}
    api.spec.components.response(
        "BAD_REQUEST",
        {
            "description": "`malformed_json`: the body is not JSON (NaN and Infinity are not"
            " JSON); `invalid_characters`: a NUL character in the URL or in a JSON string"
            " (PostgreSQL can neither store nor compare one)",
            "content": envelope,
        },
    )
    api.spec.components.response(
        "UNAUTHORIZED",
        {"description": "missing, unknown or invalid credentials", "content": envelope},
    )
    api.spec.components.response(
        "FORBIDDEN",
        {"description": "the key's role may not use this endpoint", "content": envelope},
    )


def _rq_dispatch(redis_url: str) -> Callable[[], None]:
    from jobs.context import rq_enqueue
    from jobs.payments import dispatch_charges

    enqueue = rq_enqueue(redis_url)
    return lambda: enqueue("payments", dispatch_charges, (), None)


def create_app(config: Config | None = None, clock: Callable[[], datetime] = system_clock) -> Flask:
    """Build the app for `config` (default: from the environment and `.env`)."""
    if config is None:
        from dotenv import load_dotenv

        load_dotenv()
        config = Config.from_environ()
        configure_logging(config.log_format)
    app = Flask("smsledger")
    app.json = ExactJSONProvider(app)
    app.config.update(
        API_TITLE="smsledger",
        API_VERSION="1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        OPENAPI_SWAGGER_UI_URL=docs.ASSETS_URL,
        MAX_CONTENT_LENGTH=64 * 1024 * 1024,
    )
    engine = make_engine(config.database_url)
    state = Runtime(config, engine, make_session_factory(engine), clock)
    if config.database_replica_url:
        state.replica = Replica(
            make_engine(config.database_replica_url), engine, config.database_replica_max_lag_s
        )
    if config.redis_url:
        state.extras["dispatch_charges"] = _rq_dispatch(config.redis_url)
    app.extensions["smsledger"] = state
    api = SmsLedgerApi(app)
    _document_security(api)

    api.register_blueprint(health.blp)
    api.register_blueprint(ledger.blp)
    api.register_blueprint(usage.blp)
    api.register_blueprint(usage_voids.blp)
    api.register_blueprint(rates.blp)
    api.register_blueprint(settings.blp)
    api.register_blueprint(cron.blp)
    api.register_blueprint(billing_records.blp)
    api.register_blueprint(customers.blp)
    api.register_blueprint(stats.blp)
    api.register_blueprint(user.blp)
    api.register_blueprint(reconciliation.blp)
    app.register_blueprint(docs.assets)
    metrics.instrument(app)
    api.register_blueprint(metrics.blp)
    errors.register(app)
    app.before_request(_refuse_nul_in_url)

    import web

    web.register(app, config)

    from api.cli import register_commands

    register_commands(app)
    return app

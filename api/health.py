"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

import sqlalchemy as sa

from api.blueprint import Blueprint
from api.runtime import runtime

blp = Blueprint("health", __name__, description="Liveness and readiness")


@blp.route("/healthz")
def healthz() -> tuple[dict[str, str], int]:
    """The process answers."""
    return {"status": "ok"}, 200


@blp.route("/readyz")
def readyz() -> tuple[dict[str, object], int]:
    """The database answers (Redis joins this check once jobs run on it)."""
    checks: dict[str, str] = {}
    try:
        with runtime().engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
        checks["database"] = "ok"
    except sa.exc.SQLAlchemyError:
        checks["database"] = "unavailable"
    ready = all(v == "ok" for v in checks.values())
    return {"status": "ready" if ready else "unavailable", "checks": checks}, 200 if ready else 503

"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

import sqlalchemy as sa

from api.blueprint import Blueprint
from infra.runtime import runtime

blp = Blueprint("health", __name__, description="Liveness and readiness")


@blp.route("/healthz")
@blp.doc(responses={"200": {"description": '`{"status": "ok"}`'}})
def healthz() -> tuple[dict[str, str], int]:
    """The process answers."""
    return {"status": "ok"}, 200


@blp.route("/readyz")
@blp.doc(
    responses={
        "200": {
            "description": "`{status, checks}`: the database answers; with `REDIS_URL`, Redis"
            " answers and holds every schedule; with `DATABASE_REPLICA_URL`, `replica`: `{up,"
            " lag_s, max_lag_s, reports_from}` (`primary` while the replica is down or lags"
            " more than `max_lag_s`), which does not decide readiness"
        },
        "503": {
            "description": "a dependency does not answer, or schedules are missing"
            " (`schedules`: `missing: <ids>`, `unknown` while Redis does not answer);"
            " `checks` names it"
        },
    }
)
def readyz() -> tuple[dict[str, object], int]:
    """The database answers, and, when jobs run on Redis (`REDIS_URL`), Redis answers and
    holds every schedule (a Redis restarted empty has none until the scheduler puts them
    back)."""
    checks: dict[str, str] = {}
    state = runtime()
    try:
        with state.engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
        checks["database"] = "ok"
    except sa.exc.SQLAlchemyError:
        checks["database"] = "unavailable"
    if state.config.redis_url:
        from redis import Redis
        from redis.exceptions import RedisError

        from jobs.schedule import missing_schedules

        client = Redis.from_url(state.config.redis_url, socket_timeout=1)
        try:
            client.ping()
            checks["redis"] = "ok"
            missing = missing_schedules(client)
            checks["schedules"] = f"missing: {', '.join(missing)}" if missing else "ok"
        except RedisError:
            checks["redis"] = "unavailable"
            checks["schedules"] = "unknown"
        finally:
            client.close()
    ready = all(v == "ok" for v in checks.values())
    body: dict[str, object] = {"status": "ready" if ready else "unavailable", "checks": checks}
    if state.replica is not None:
        # not a readiness condition: without the replica, reports read from the primary
        replica = state.replica.state()
        body["replica"] = {
            "up": replica.up,
            "lag_s": replica.lag_s,
            "max_lag_s": state.replica.max_lag_s,
            "reports_from": replica.reads_from,
        }
    return body, 200 if ready else 503

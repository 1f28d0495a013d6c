"""A small, believable billing history built through the API, as its users would make it: the
data behind the screenshots and the accessibility sweep. Seven days of SMS for six customers,
closed day by day and charged in the Sippy simulator: most invoices paid, one customer with no
Sippy account (failed), one who needs manual approval (pending), one on threshold billing near
its limit (the widget), a suspended customer, and a reconciliation run over the week."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.scenarios import sms
from tests.web.conftest import Site

DESTINATIONS = ("+447400123456", "+33612345678", "+4915123456789", "+12025550123")


@dataclass(frozen=True)
class Demo:
    paid_invoice: str
    failed_invoice: str
    pending_invoice: str
    run_id: str
    widget_user: str


def populate(site: Site, days: int = 7) -> Demo:
    """Build the history ending at the site clock's current time (which is left as it was)."""
    admin = site.api.as_role("admin")
    service = site.api.as_role("service")
    cron = site.api.as_cron()
    end = site.clock()
    customers = {
        "acme": ("Acme Logistics", "1001"),
        "globex": ("Globex <Corp>", "1002"),
        "initech": ("Initech", "1003"),
        "umbrella": ("Umbrella Health", None),
        "hooli": ("Hooli (manual approval)", "1004"),
        "piedpiper": ("Pied Piper", "1005"),
    }
    for user_id, (name, account) in customers.items():
        body: dict[str, Any] = {"user_id": user_id, "name": name}
        if account:
            body["sippy_account_id"] = account
        assert admin.post("/api/admin/customers", body).status_code == 201
    for overrides in (
        {"userId": "hooli", "require_manual_approval": True},
        {"userId": "piedpiper", "frequency": "threshold", "threshold_amount": "0.25"},
    ):
        assert admin.put("/api/admin/sms/billing-settings", overrides).status_code == 200
    start = datetime(end.year, end.month, end.day, tzinfo=UTC) - timedelta(days=days)
    for day in range(days):
        midnight = start + timedelta(days=day)
        events = []
        for index, user_id in enumerate(("acme", "globex", "initech", "umbrella", "hooli")):
            for n in range(1 + (day * 3 + index * 5) % 7):
                sent = midnight + timedelta(hours=8 + n, minutes=index)
                destination = DESTINATIONS[(n + index) % len(DESTINATIONS)]
                events.append(
                    sms(f"{user_id}-{day}-{n}", sent, user=user_id, destination=destination)
                )
        assert service.post("/api/usage", {"events": events}).status_code == 201
        site.clock.now = midnight + timedelta(days=1, hours=2)
        assert cron.post("/api/cron/process-sms-billing?type=daily").status_code == 200
    site.clock.now = end
    widget_usage = [
        sms(f"piedpiper-{n}", end - timedelta(hours=3, minutes=n), user="piedpiper")
        for n in range(30)
    ]
    assert service.post("/api/usage", {"events": widget_usage}).status_code == 201
    assert admin.patch("/api/admin/customers/initech", {"status": "suspended"}).status_code == 200
    run = admin.post(
        "/api/reconciliation/runs",
        {"from": _text(start), "to": _text(end), "source": "sippy"},
    )
    assert run.status_code in (200, 201), run.json
    records = admin.get("/api/admin/sms/billing?limit=200").json["items"]

    def first(status: str, user: str | None = None) -> str:
        return next(
            r["id"] for r in records if r["status"] == status and user in (None, r["user_id"])
        )

    return Demo(
        first("paid", "acme"), first("failed"), first("pending"), run.json["id"], "piedpiper"
    )


def _text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")

"""`python -m tests.web.screenshots DIR` (or `make screenshots`): a PNG of every page, on a
desktop (1280 px) and a phone (390 px), over the demo history of `tests.web.demo`, on a
throwaway PostgreSQL and the Sippy simulator, in Debian's headless chromium."""

from __future__ import annotations

import argparse
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from werkzeug.serving import make_server

import migrations
from sippy_simulator.server import start_simulator
from tests.client import ApiClient
from tests.conftest import NOW, Clock, build_app
from tests.pgserver import PostgresServer
from tests.scenarios import charge_at_once, charging_config, load_rates
from tests.web.conftest import Site, chromium
from tests.web.demo import Demo, populate

VIEWPORTS = {"desktop": (1280, 900), "phone": (390, 844)}


def pages(demo: Demo) -> list[tuple[str, str, str]]:
    """(file name, path, who: admin | accountant | user | nobody)."""
    return [
        ("sign-in", "/admin/sms", "nobody"),
        ("billing", "/admin/sms?tab=billing", "admin"),
        ("record", f"/admin/sms/billing/{demo.paid_invoice}", "admin"),
        ("failed", "/admin/sms?tab=failed", "admin"),
        ("stats", "/admin/sms?tab=stats", "admin"),
        ("settings", "/admin/sms?tab=settings", "admin"),
        ("customers", "/admin/sms?tab=customers", "admin"),
        ("reconciliation", "/admin/sms?tab=reconciliation", "accountant"),
        ("reconciliation-run", f"/admin/sms/reconciliation/{demo.run_id}", "accountant"),
        ("widget", "/widget/billing", "user"),
        ("history", "/billing/history", "user"),
        ("notifications", "/billing/notifications", "user"),
    ]


def shoot(site: Site, demo: Demo, out: Path, browser: Any) -> list[Path]:
    made = []
    for viewport, (width, height) in VIEWPORTS.items():
        context = browser.new_context(viewport={"width": width, "height": height})
        page = context.new_page()
        signed_in: set[str] = set()
        for name, path, who in pages(demo):
            if who in ("admin", "accountant") and who not in signed_in:
                page.goto(f"{site.url}/admin/sms")
                if signed_in:  # the other staff role: sign out first
                    page.get_by_role("button", name="Sign out").click()
                page.get_by_label("API key").fill(site.key(who))
                page.get_by_role("button", name="Sign in").click()
                page.get_by_text("Signed in as").wait_for()
                signed_in = {who}
            if who == "user" and "user" not in signed_in:
                page.goto(site.widget_url(demo.widget_user))
                signed_in.add("user")
            page.goto(f"{site.url}{path}")
            target = out / f"{name}-{viewport}.png"
            page.screenshot(path=str(target), full_page=True)
            made.append(target)
        context.close()
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path, nargs="?", default=Path("docs/screenshots"))
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    server = PostgresServer()
    admin_url = server.start()
    try:
        engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.exec_driver_sql("CREATE DATABASE screenshots")
        engine.dispose()
        url = sa.make_url(admin_url).set(database="screenshots").render_as_string(False)
        migrations.upgrade(url)
        clock = Clock(NOW)
        sim = start_simulator(clock=clock)
        app, keys = build_app(url, clock, charging_config(url, sim))
        api = ApiClient(app, keys)
        load_rates(api.sessions, datetime(2026, 1, 1, tzinfo=UTC))
        charge_at_once(api, sim)
        http = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=http.serve_forever, daemon=True).start()
        site = Site(f"http://127.0.0.1:{http.server_port}", api, sim, clock)
        demo = populate(site)
        with chromium() as browser:
            for path in shoot(site, demo, out, browser):
                print(path)
        http.shutdown()
        sim.stop()
        api.dispose()
    finally:
        server.stop()


if __name__ == "__main__":
    main()

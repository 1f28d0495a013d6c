"""Every page, as each of its users sees it, checked by axe-core (axe-playwright-python) in
Chromium on the demo history: no serious or critical violation, on a desktop and on a 390 px
phone; and no request to another host, no console error (a CSP violation would be one)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.web.conftest import Site, Watched
from tests.web.demo import populate
from tests.web.screenshots import pages

pytestmark = [pytest.mark.postgres, pytest.mark.browser]

SERIOUS = {"serious", "critical"}


def violations(page: Any) -> list[str]:
    from axe_playwright_python.sync_playwright import Axe

    found = Axe().run(page).response["violations"]
    return [
        f"{v['id']} ({v['impact']}) at {node['target']}: {node['failureSummary']}"
        for v in found
        if v["impact"] in SERIOUS
        for node in v["nodes"][:5]
    ]


def test_no_page_has_a_serious_accessibility_violation(
    page: Any, site: Site, watched: Watched
) -> None:
    demo = populate(site)
    problems: dict[str, list[str]] = {}
    signed_in = None
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        for name, path, who in pages(demo):
            if who == "nobody":
                page.context.clear_cookies()
                signed_in = None
            if who in ("admin", "accountant") and signed_in != who:
                page.context.clear_cookies()
                page.goto(f"{site.url}/admin/sms")
                page.get_by_label("API key").fill(site.key(who))
                page.get_by_role("button", name="Sign in").click()
                page.get_by_text("Signed in as").wait_for()
                signed_in = who
            if who == "user":
                page.goto(site.widget_url(demo.widget_user))
            answer = page.goto(f"{site.url}{path}")
            assert answer is not None and answer.status == 200, (name, answer and answer.status)
            found = violations(page)
            if found:
                problems[f"{name} at {width} px"] = found

    report = "\n".join(
        f"{where}: {problem}" for where, found in problems.items() for problem in found
    )
    assert not problems, report
    assert watched.foreign_requests == []
    assert watched.console_errors == []

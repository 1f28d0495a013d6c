"""The pages on a real server: the app served on 127.0.0.1 from a thread of the test process,
on the test's PostgreSQL, charging the Sippy simulator at once (`site`), and headless Chromium
driven by Playwright (`page`): Debian's `/usr/bin/chromium` through `executable_path`, never a
browser Playwright downloads."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.serving import BaseWSGIServer, make_server

from billing.access.user_tokens import mint_user_token
from sippy_simulator.server import SimulatorHandle
from tests.client import ApiClient
from tests.conftest import Clock
from tests.scenarios import USER_TOKEN_SECRET, charge_at_once, charging_config, load_rates

CHROMIUM = (
    os.environ.get("SMSLEDGER_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOCAL = re.compile(r"^(https?://127\.0\.0\.1[:/]|data:|about:)")


@dataclass
class Site:
    """The served app: its URL, its API client (to arrange data as the API's users would), the
    simulator it charges, and the test clock it runs on."""

    url: str
    api: ApiClient
    sim: SimulatorHandle
    clock: Clock

    def key(self, role: str) -> str:
        return self.api.keys[role]

    def user_token(self, user_id: str, ttl: timedelta = timedelta(hours=1)) -> str:
        """A host-application token minted now (PyJWT checks `exp` against the real time,
        not the site's clock)."""
        return mint_user_token(USER_TOKEN_SECRET, user_id, datetime.now(UTC), ttl)

    def widget_url(self, user_id: str) -> str:
        return f"{self.url}/widget/billing?token={self.user_token(user_id)}"


@pytest.fixture
def serve() -> Iterator[Callable[[ApiClient], str]]:
    """`serve(api)`: the app of `api` served on 127.0.0.1 (a free port); stopped after the test."""
    servers: list[tuple[BaseWSGIServer, threading.Thread]] = []

    def start(api: ApiClient) -> str:
        server = make_server("127.0.0.1", 0, api.app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server, thread in servers:
        server.shutdown()
        thread.join(timeout=5)


@pytest.fixture
def site(
    make_api: Callable[..., ApiClient],
    pg_url: str,
    clock: Clock,
    start_sim: Callable[..., SimulatorHandle],
    serve: Callable[[ApiClient], str],
) -> Iterator[Site]:
    """The sample rates loaded, charges dispatched at once to the simulator (its accounts
    1001-1010), served on 127.0.0.1."""
    sim = start_sim(clock=clock)
    api = make_api(charging_config(pg_url, sim))
    load_rates(api.sessions, datetime(2026, 1, 1, tzinfo=UTC))
    charge_at_once(api, sim)
    yield Site(serve(api), api, sim, clock)
    api.runtime.extras.pop("dispatch_charges", None)


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """Debian's chromium, headless, driven by Playwright."""
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        raise RuntimeError(f"Chromium not found at {CHROMIUM}: `make test` installs it")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Chromium for the whole run."""
    with chromium() as launched:
        yield launched


class Watched:
    """What a page did that no page should: a request to another host (aborted), or an error
    on the console (a CSP violation is one)."""

    def __init__(self) -> None:
        self.foreign_requests: list[str] = []
        self.console_errors: list[str] = []


@pytest.fixture
def watched() -> Watched:
    return Watched()


@pytest.fixture
def page(browser: Any, watched: Watched) -> Iterator[Any]:
    """A fresh browser context (no cookies) and a page in it, 1280 x 900; requests to any host
    but 127.0.0.1 are aborted and recorded in `watched`, console errors too."""
    browser_context = browser.new_context(viewport={"width": 1280, "height": 900})
    new_page = browser_context.new_page()

    def guard(route: Any) -> None:
        if LOCAL.match(route.request.url):
            route.continue_()
        else:
            watched.foreign_requests.append(route.request.url)
            route.abort()

    def console(message: Any) -> None:
        if message.type == "error":
            watched.console_errors.append(message.text)

    new_page.route("**/*", guard)
    new_page.on("console", console)
    new_page.set_default_timeout(10_000)
    yield new_page
    browser_context.close()


CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token a page's forms carry."""
    found = CSRF.search(html)
    assert found, "the page has a CSRF token"
    return found.group(1)


def csrf_token(http: FlaskClient, path: str) -> str:
    return csrf_of(http.get(path).get_data(as_text=True))


def staff_client(site: Site | ApiClient, role: str = "admin") -> FlaskClient:
    """A Flask test client of a site's (or any test app's) pages, signed in as `role` through
    the sign-in form, as a browser without JavaScript would."""
    api = site.api if isinstance(site, Site) else site
    http = api.app.test_client()
    answer = http.post(
        "/admin/sms/sign-in",
        data={"api_key": api.keys[role], "csrf_token": csrf_token(http, "/admin/sms")},
    )
    assert answer.status_code == 303
    return http


def sign_in(page: Any, site: Site, role: str = "admin") -> None:
    """Sign in at /admin/sms with the role's API key, as a person would."""
    page.goto(f"{site.url}/admin/sms")
    page.get_by_label("API key").fill(site.key(role))
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("Signed in as").wait_for()

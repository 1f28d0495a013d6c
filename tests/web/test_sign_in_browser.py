"""Signing in to Billing Management in a real browser."""

from __future__ import annotations

from typing import Any

import pytest

from tests.web.conftest import Site, Watched, sign_in

pytestmark = [pytest.mark.postgres, pytest.mark.browser]


def test_an_admin_signs_in_with_a_key_and_sees_the_billing_tab(
    page: Any, site: Site, watched: Watched
) -> None:
    sign_in(page, site)

    assert page.get_by_role("heading", name="Billing records").is_visible()
    assert site.key("admin") not in page.content()
    assert site.key("admin") not in page.url
    assert watched.foreign_requests == []
    assert watched.console_errors == []


def test_a_wrong_key_is_refused_on_the_same_page_with_no_session(page: Any, site: Site) -> None:
    page.goto(f"{site.url}/admin/sms")
    page.get_by_label("API key").fill("sk_not-a-key")
    page.get_by_role("button", name="Sign in").click()

    assert page.get_by_role("alert").inner_text().startswith("That key is not a live")
    page.goto(f"{site.url}/admin/sms?tab=billing")
    assert page.get_by_label("API key").is_visible()


def test_the_service_key_cannot_sign_in(page: Any, site: Site) -> None:
    page.goto(f"{site.url}/admin/sms")
    page.get_by_label("API key").fill(site.key("service"))
    page.get_by_role("button", name="Sign in").click()

    assert page.get_by_role("alert").is_visible()

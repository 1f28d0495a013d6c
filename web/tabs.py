"""The tabs of `/admin/sms?tab=…`: each use case's module registers its tab with the roles that
see it; the page shows a staff member only the tabs of their role."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask.typing import ResponseReturnValue

from web.auth import staff_role

ORDER = ("billing", "failed", "stats", "settings", "customers", "reconciliation")


@dataclass(frozen=True, slots=True)
class Tab:
    name: str
    title: str
    roles: tuple[str, ...]
    render: Callable[[], ResponseReturnValue]


TABS: dict[str, Tab] = {}


def tab(
    name: str, title: str, roles: tuple[str, ...]
) -> Callable[[Callable[[], ResponseReturnValue]], Callable[[], ResponseReturnValue]]:
    """Register the view of `?tab=name`."""

    def register(render: Callable[[], ResponseReturnValue]) -> Callable[[], ResponseReturnValue]:
        TABS[name] = Tab(name, title, roles, render)
        return render

    return register


def tabs_for(role: str) -> list[Tab]:
    return [TABS[name] for name in ORDER if name in TABS and role in TABS[name].roles]


def page_context(heading: str, current_tab: str) -> dict[str, Any]:
    """What the staff layout (`admin/layout.html`) needs: the heading, the role, its tabs and
    the current one."""
    role = staff_role() or ""
    return {"heading": heading, "current_tab": current_tab, "role": role, "tabs": tabs_for(role)}


def back_to(fields: Any, tab_name: str) -> str:
    """Where a plain form returns: the staff page it came from (`back`, a path on this host
    only), else the tab."""
    from flask import url_for

    target = str(fields.get("back", ""))
    if target.startswith("/admin/sms") and "//" not in target and "\\" not in target:
        return target
    return url_for("admin.home", tab=tab_name)

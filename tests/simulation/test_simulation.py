"""The seeded simulation (`tests.simulation.simulator`) at a small size, as part of the suite:
one fixed seed, 12 customers over 6 simulated days (a Monday and a 1st of the month among them,
so every kind of billing cycle closes), a few hundred usage events, faults in Sippy, admin
actions, voids and planted differences; then every invariant of DESIGN.md. A failure names the
seed, the size, the broken invariant and the command that replays it at any size."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sippy_simulator.server import SimulatorHandle
from tests.client import ApiClient
from tests.simulation.simulator import SimConfig, simulate

pytestmark = pytest.mark.postgres

SEED = 20261126


def test_a_seeded_simulation_keeps_every_invariant(
    pg_url: str,
    make_api: Callable[..., ApiClient],
    start_sim: Callable[..., SimulatorHandle],
) -> None:
    summary = simulate(SimConfig(seed=SEED, customers=12, days=6), pg_url, make_api, start_sim)

    stats = summary.stats  # the workload really ran: a simulation that did nothing proves nothing
    assert stats["usage.events_posted"] >= 200, summary.render()
    assert stats["faults.injected"] >= 5, summary.render()
    assert stats["charges.accepted"] >= 10, summary.render()
    assert stats["sippy.planted_debits"] >= 1, summary.render()
    assert summary.reconciliation["status"] == "differences", summary.render()

"""SchedulerState under random, valid traffic: it never raises and keeps its invariants.

The traffic and the invariants are in ``statemodel``: well-behaved clients and
nodes, including nodes that drop and come back (same session: they reclaim
what they hold; new session: they lost it) or never do (what they held is
settled at the deadline).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from statemodel import TIMEOUT, Model, run

if TYPE_CHECKING:
    from conftest import StateDriver

_SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(data=st.data(), steps=st.integers(5, 60))
def test_random_valid_traffic_keeps_every_invariant(
    make_driver: Callable[..., StateDriver], data: st.DataObject, steps: int
) -> None:
    run(Model(make_driver(heartbeat_timeout=TIMEOUT), data, allow_close=False, work_conserving=True), steps)


@settings(_SETTINGS, derandomize=True, database=None, phases=[Phase.generate])  # no shrinking
@given(data=st.data(), steps=st.integers(5, 60))
def test_random_valid_traffic_with_closes_keeps_every_invariant(
    make_driver: Callable[..., StateDriver], data: st.DataObject, steps: int
) -> None:
    run(Model(make_driver(heartbeat_timeout=TIMEOUT), data, allow_close=True, work_conserving=True), steps)


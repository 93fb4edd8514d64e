"""The node's leaving controller against a fake daemon: service hours, stop modes, --serve N.

Time is trio's autojump clock (timeouts pass at once when nothing else can
run) and a fixed wall clock for the service windows.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import partial

import pytest
import trio

from fairpool.config import NodeConfig
from fairpool.messages import NodeDrain
from fairpool.nodes.lifecycle import OUTSIDE_HOURS, Availability, run_controls

pytestmark = pytest.mark.timeout(30)

NOON = datetime(2024, 3, 14, 12, 0)


class FakeNode:
    """Records what the controller asks; ``settle`` returns once ``jobs_end`` is set."""

    def __init__(self, *, jobs_end: bool = True) -> None:
        self.availability = Availability()
        self.served = trio.Event()
        self.jobs_end = trio.Event()
        if jobs_end:
            self.jobs_end.set()
        self.told: list[NodeDrain] = []
        self.handed_back = 0

    def tell_availability(self, lifted: str = "") -> None:
        self.told.append(self.availability.message(lifted=lifted))

    async def settle(self) -> None:
        await self.jobs_end.wait()

    def hand_back(self) -> int:
        self.handed_back += 1
        self.jobs_end.set()  # what was held is the scheduler's now
        return 3


def config(**keys: object) -> NodeConfig:
    return NodeConfig(**keys)  # type: ignore[arg-type]


async def test_outside_its_service_hours_a_node_says_it_takes_no_jobs(autojump_clock) -> None:
    node = FakeNode()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(run_controls, node, config(serve_hours=((18 * 60, 8 * 60),)), None,
                                   clock=lambda: NOON))
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert node.told == [NodeDrain(True, OUTSIDE_HOURS)]


async def test_inside_its_service_hours_a_node_says_nothing(autojump_clock) -> None:
    node = FakeNode()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(run_controls, node, config(serve_hours=((8 * 60, 18 * 60),)), None,
                                   clock=lambda: NOON))
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert node.told == [] and node.availability.serving


async def test_when_its_service_hours_begin_the_node_takes_jobs_again(autojump_clock) -> None:
    node = FakeNode()
    start = trio.current_time()

    def clock() -> datetime:  # wall time follows trio's: 17:59:00 plus the seconds slept
        return datetime(2024, 3, 14, 17, 59) + timedelta(seconds=trio.current_time() - start)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(run_controls, node, config(serve_hours=((18 * 60, 8 * 60),)), None, clock=clock))
        await trio.sleep(30)
        assert node.told == [NodeDrain(True, OUTSIDE_HOURS)]
        await trio.sleep(60)
        nursery.cancel_scope.cancel()
    assert node.told == [NodeDrain(True, OUTSIDE_HOURS), NodeDrain(False, "service hours began")]


async def test_stop_with_finish_waits_for_the_jobs_and_hands_nothing_back(autojump_clock) -> None:
    node = FakeNode(jobs_end=False)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_controls, node, config(stop="finish", stop_timeout=100.0), stop)
        stop.set()
        await trio.sleep(50)
        assert node.told == [NodeDrain(True, "stopping")]
        node.jobs_end.set()
    assert node.handed_back == 0


async def test_stop_with_finish_hands_back_what_outlasts_the_stop_timeout(autojump_clock) -> None:
    node = FakeNode(jobs_end=False)
    stop = trio.Event()
    stop.set()
    began = trio.current_time()
    await run_controls(node, config(stop="finish", stop_timeout=100.0), stop)
    assert node.handed_back == 1
    assert trio.current_time() - began == pytest.approx(100.0)


async def test_stop_with_handback_hands_back_at_once(autojump_clock) -> None:
    node = FakeNode(jobs_end=False)
    stop = trio.Event()
    stop.set()
    began = trio.current_time()
    await run_controls(node, config(stop="handback", stop_timeout=100.0), stop)
    assert node.handed_back == 1
    assert trio.current_time() - began == pytest.approx(0.0)


async def test_a_node_that_served_enough_clusters_finishes_its_jobs_whatever_stop_says(autojump_clock) -> None:
    node = FakeNode(jobs_end=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_controls, node, config(serve=2, stop="handback"), None)
        node.served.set()
        await trio.sleep(5)
        assert node.told == [NodeDrain(True, "served 2 cluster(s)")]
        node.jobs_end.set()
    assert node.handed_back == 0


def test_availability_gives_the_reasons_in_order_and_the_handback() -> None:
    availability = Availability()
    assert availability.message() == NodeDrain(False)
    assert availability.set(OUTSIDE_HOURS, True) is True
    assert availability.set("stopping", True) is False  # it was not serving already
    assert availability.message(["j1"]) == NodeDrain(True, f"{OUTSIDE_HOURS}; stopping", ["j1"])
    availability.set(OUTSIDE_HOURS, False)
    availability.set("stopping", False)
    assert availability.serving and availability.message(["j2"]) == NodeDrain(True, "", ["j2"])

"""serve_node leaving against the fake scheduler: service hours at connect, stop by finishing or handing back."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

import cloudpickle
import pytest
import trio
from nodeharness import function_cluster, task, until
from test_node_daemon import SECRET, FakeScheduler, nap

from fairpool.address import Address
from fairpool.config import NodeConfig
from fairpool.messages import Dispatch, NodeDrain, NodeProgress, NodeReady
from fairpool.nodes.daemon import serve_node

cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.timeout(60)

LEAVE_WITHIN = 20.0


@asynccontextmanager
async def fake_scheduler(tmp_path: Path) -> AsyncIterator[tuple[FakeScheduler, NodeConfig, trio.Nursery]]:
    secret_file = tmp_path / "secret"
    secret_file.write_bytes(SECRET + b"\n")
    fake = FakeScheduler(SECRET)
    fake.echo_heartbeats = True  # a real scheduler acknowledges what the node sent
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, fake.handle, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        config = NodeConfig(scheduler=Address("127.0.0.1", port), name="n1", cpus=1, state_dir=tmp_path / "node",
                            secret_file=secret_file, heartbeat_interval=0.2, reconnect_max_delay=0.5)
        yield fake, config, nursery
        nursery.cancel_scope.cancel()


def drains(fake: FakeScheduler) -> list[NodeDrain]:
    return fake.of_type(NodeDrain)


async def test_a_node_outside_its_hours_says_so_with_its_announcement(tmp_path: Path) -> None:
    later = datetime.now() + timedelta(hours=2)
    start = later.hour * 60 + later.minute
    closed = ((start, (start + 60) % 1440 or 1440),)  # a window that excludes now
    async with fake_scheduler(tmp_path) as (fake, config, nursery):
        await nursery.start(partial(serve_node, replace(config, serve_hours=closed)))
        await until(lambda: drains(fake), message="the node says it takes no jobs")
        ready, drain = fake.received[0], fake.received[1]
        assert isinstance(ready, NodeReady)
        assert drain == NodeDrain(True, "outside service hours")


async def test_stop_with_finish_reports_the_running_job_then_leaves(tmp_path: Path) -> None:
    stop = trio.Event()
    async with fake_scheduler(tmp_path) as (fake, config, nursery):
        left = trio.Event()

        async def node() -> None:
            await serve_node(replace(config, stop="finish"), stop=stop)
            left.set()

        nursery.start_soon(node)
        await until(lambda: fake.of_type(NodeReady), message="the node joined")
        await fake.send(Dispatch([function_cluster("c1", nap)], [task("j1", "c1", 0.5)]))
        await until(lambda: "j1" in fake.started(), message="j1 runs")
        stop.set()
        with trio.fail_after(LEAVE_WITHIN):
            await left.wait()
    assert drains(fake) == [NodeDrain(True, "stopping")]
    assert fake.results()["j1"].status == "FINISHED"
    drain_at = next(i for i, m in enumerate(fake.received) if isinstance(m, NodeDrain))
    result_at = next(i for i, m in enumerate(fake.received) if isinstance(m, NodeProgress) and m.results)
    assert drain_at < result_at  # no new jobs first, then the running one's result


async def test_stop_with_handback_gives_back_the_running_and_the_queued_job(tmp_path: Path) -> None:
    stop = trio.Event()
    async with fake_scheduler(tmp_path) as (fake, config, nursery):
        left = trio.Event()

        async def node() -> None:
            await serve_node(replace(config, stop="handback"), stop=stop)
            left.set()

        nursery.start_soon(node)
        await until(lambda: fake.of_type(NodeReady), message="the node joined")
        await fake.send(Dispatch([function_cluster("c1", nap)], [task("j1", "c1", 30), task("j2", "c1", 0)]))
        await until(lambda: "j1" in fake.started(), message="j1 runs")
        stop.set()
        with trio.fail_after(LEAVE_WITHIN):
            await left.wait()
    handed = [uid for drain in drains(fake) for uid in drain.handback]
    assert sorted(handed) == ["j1", "j2"]
    assert fake.results() == {}  # handed back: no result from this node


async def test_a_dispatch_that_crosses_the_handback_goes_straight_back(tmp_path: Path) -> None:
    stop = trio.Event()
    async with fake_scheduler(tmp_path) as (fake, config, nursery):
        fake.echo_heartbeats = False  # the scheduler is slow to confirm: the node is still there
        nursery.start_soon(partial(serve_node, replace(config, stop="handback"), stop=stop))
        await until(lambda: fake.of_type(NodeReady), message="the node joined")
        await fake.send(Dispatch([function_cluster("c1", nap)], [task("j1", "c1", 30)]))
        await until(lambda: "j1" in fake.started(), message="j1 runs")
        stop.set()
        await until(lambda: any(d.handback for d in drains(fake)), message="j1 handed back")
        await fake.send(Dispatch([], [task("j2", "c1", 0)]))
        await until(lambda: any("j2" in d.handback for d in drains(fake)), message="j2 handed back too")
        assert "j2" not in fake.started()

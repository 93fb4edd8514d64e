"""Network faults between the daemons, through an in-process proxy (``tests/faultproxy.py``).

The client<->scheduler and node<->scheduler paths go through ``FaultProxy``s
that cut connections, delay them, stall them (a partition TCP rides out) or
blackhole them (half-open: bytes vanish, nothing is closed, so only
heartbeats can tell). After each fault heals: no acknowledged job is lost,
each non-reentrant job's body ran at most once (the jobs write a ledger line
per run), every result reaches its client, and what the daemons logged
(losses, rejoins) matches what the proxy did.
"""

from __future__ import annotations

import logging
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import TEST_SCHEDULER_CONFIG, Daemon, SchedulerProcess, async_wait_for
from daemonlogs import at, logged
from faultproxy import FaultProxy

import fairpool.clients.connection as connection
from fairpool import AsyncSharedJobCluster, JobStatus

HEARTBEAT_TIMEOUT = 3.0
CHECK_SLACK = TEST_SCHEDULER_CONFIG["heartbeat_interval"] + 1.5  # one heartbeat check late, plus a busy machine
# a node too gives a silent connection up after its heartbeat timeout
NODE_CONFIG = (f'heartbeat_interval = 0.3\nheartbeat_timeout = {HEARTBEAT_TIMEOUT}\nreconnect_max_delay = 1.0\n'
               'log_format = "json"\n')
FAST_CLIENT = connection.ConnectionTiming(connect_timeout=5.0, heartbeat_interval=0.5,
                                          heartbeat_timeout=HEARTBEAT_TIMEOUT, reconnect_max_delay=1.0)

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.scheduler_config(heartbeat_timeout=HEARTBEAT_TIMEOUT, log_format="json")]


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Recover files (kept when a test fails inside a cluster) land in the test's own directory."""
    monkeypatch.chdir(tmp_path)


def _runs(ledger: Path) -> Counter[str]:
    return Counter(ledger.read_text().split()) if ledger.exists() else Counter()


def _recording(ledger: Path, pause: float) -> Callable[[int], int]:
    """A job that writes a ledger line per run, sleeps ``pause`` and returns ``i * 10``."""
    path = str(ledger)

    def work(i: int) -> int:
        import time

        with open(path, "a") as f:
            f.write(f"{i}\n")
        time.sleep(pause)
        return i * 10

    return work


def _first_run_hangs(markers: Path) -> Callable[[str], str]:
    """A job that leaves a marker per run; only its first run hangs (its node is to be lost)."""
    path = str(markers)

    def body(tag: str) -> str:
        import glob
        import os
        import time
        import uuid

        first = not glob.glob(os.path.join(path, tag + "-*"))
        open(os.path.join(path, f"{tag}-{uuid.uuid4().hex}"), "w").close()
        if first:
            time.sleep(60)
        return tag

    return body


class ProxiedNodes:
    """``nodes(name, address, cpus=2)`` starts a node that knows the scheduler only at ``address`` (a proxy)."""

    def __init__(self, scheduler: SchedulerProcess, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self._scheduler = scheduler
        self._tmp_path = tmp_path
        self._request = request
        self._config = tmp_path / "node.toml"
        self._config.write_text(NODE_CONFIG)
        self.started: list[Daemon] = []

    def __call__(self, name: str, address: str, cpus: int = 2) -> Daemon:
        node = Daemon("node", f"node-{name}", [
            "--scheduler", address, "--secret-file", str(self._scheduler.secret_file), "--cpus", str(cpus),
            "--name", name, "--state-dir", str(self._tmp_path / f"node-{name}"), "--log-level", "debug",
            "--config", str(self._config)], log_dir=self._tmp_path, name=name)
        _attach_log(self._request, node)
        self.started.append(node)
        node.start()
        return node

    async def stop(self) -> None:
        """Stop them while their proxy still runs: a leaving node first confirms its results with the scheduler."""
        for node in self.started:
            node.send_signal(signal.SIGTERM)
        for node in self.started:
            await trio.to_thread.run_sync(node.stop)


@asynccontextmanager
async def proxied(target: str, name: str, nodes: ProxiedNodes | None = None) -> AsyncIterator[FaultProxy]:
    """A ``FaultProxy`` to ``target`` for the block; ``nodes`` behind it are stopped before it closes."""
    proxy = FaultProxy(target, name=name)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        try:
            yield proxy
        finally:
            if nodes is not None:
                proxy.heal()
                await nodes.stop()  # a leaving node confirms its results first: through the proxy
            nursery.cancel_scope.cancel()


@pytest.fixture
def proxied_node(scheduler: SchedulerProcess, tmp_path: Path,
                 request: pytest.FixtureRequest) -> Iterator[ProxiedNodes]:
    nodes = ProxiedNodes(scheduler, tmp_path, request)
    try:
        yield nodes
    finally:
        for node in nodes.started:
            node.send_signal(signal.SIGTERM)
        for node in nodes.started:
            node.stop()


def _attach_log(request: pytest.FixtureRequest, daemon: Daemon) -> None:
    """Have a failed test's report show ``daemon``'s log, like the daemons of tests/conftest.py's fixtures."""
    for plugin in request.config.pluginmanager.get_plugins():
        if Path(getattr(plugin, "__file__", "") or "").resolve() == CONFTEST and hasattr(plugin, "_register"):
            plugin._register(request, daemon)


def _reconnects(caplog: pytest.LogCaptureFixture, cluster: AsyncSharedJobCluster) -> tuple[int, int]:
    """(connections lost, reconnected) as the client logged them."""
    text = [r.getMessage() for r in caplog.records if cluster.cluster_id in r.getMessage()]
    return (sum("connection to the scheduler" in t and " lost " in t for t in text),
            sum("reconnected to the scheduler" in t for t in text))


async def _joined(scheduler: SchedulerProcess, name: str, times: int) -> None:
    await async_wait_for(lambda: len(logged(scheduler, "node joined", node=name)) >= times, timeout=30,
                         message=f"node {name} joined {times} time(s)")


# --- client <-> scheduler ------------------------------------------------------------


async def test_client_connection_cut_repeatedly_loses_no_job_and_runs_none_twice(
        scheduler: SchedulerProcess, start_node: Callable[..., Daemon], cluster_kwargs: dict[str, str],
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fairpool.clients")
    start_node(cpus=2, name="n1")
    ledger = tmp_path / "ledger"
    async with proxied(scheduler.address, "client") as proxy:
        kwargs = dict(cluster_kwargs, scheduler=proxy.address)
        async with AsyncSharedJobCluster(_recording(ledger, 0.05), **kwargs) as cluster:
            jobs = []
            for burst in range(3):
                jobs += [await cluster.submit(i) for i in range(burst * 10, burst * 10 + 10)]
                await trio.lowlevel.checkpoint()  # the burst goes out as one Submit...
                assert proxy.cut() == 1  # ...and the connection breaks under it, acknowledged or not
                await async_wait_for(lambda b=burst: _reconnects(caplog, cluster)[1] == b + 1, timeout=30,
                                     message="the client reconnected")
            assert [await job for job in jobs] == [i * 10 for i in range(30)]
            assert {job.status for job in jobs} == {JobStatus.FINISHED}
    runs = _runs(ledger)
    assert sorted(map(int, runs)) == list(range(30)) and set(runs.values()) == {1}, runs
    assert _reconnects(caplog, cluster) == (3, 3)
    assert proxy.counters.cut == 3 and proxy.counters.accepted == 4


async def test_client_half_open_is_detected_by_heartbeats_and_results_arrive_after_healing(
        scheduler: SchedulerProcess, start_node: Callable[..., Daemon], cluster_kwargs: dict[str, str],
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO, logger="fairpool.clients")
    monkeypatch.setattr(connection, "DEFAULT_TIMING", FAST_CLIENT)  # the client's timeout: 3 s, not 10
    start_node(cpus=2, name="n1")
    ledger = tmp_path / "ledger"
    async with proxied(scheduler.address, "client") as proxy:
        kwargs = dict(cluster_kwargs, scheduler=proxy.address)
        async with AsyncSharedJobCluster(_recording(ledger, 0.4), **kwargs) as cluster:
            jobs = [await cluster.submit(i) for i in range(10)]
            await async_wait_for(lambda: all(j.status is not JobStatus.CREATED for j in jobs) and jobs[0].done(),
                                 timeout=30, message="every job acknowledged, the first one done")
            cut_off = trio.current_time()
            went_dark = time.time()
            proxy.blackhole()
            await async_wait_for(lambda: _reconnects(caplog, cluster)[0] == 1, timeout=HEARTBEAT_TIMEOUT + 10,
                                 message="the client saw the scheduler go silent")
            assert trio.current_time() - cut_off <= HEARTBEAT_TIMEOUT + CHECK_SLACK
            closed = await async_wait_for(
                lambda: logged(scheduler, "closing connection", peer="client*"), timeout=HEARTBEAT_TIMEOUT + 10,
                message="the scheduler saw the client go silent")
            assert "heartbeat" in closed[0]["reason"]
            assert at(closed[0]) - went_dark <= HEARTBEAT_TIMEOUT + CHECK_SLACK
            await async_wait_for(lambda: _runs(ledger).total() == 10, timeout=30,
                                 message="every job ran while the client was cut off")
            assert not all(j.done() for j in jobs)  # their results wait in the scheduler
            proxy.heal()
            assert [await job for job in jobs] == [i * 10 for i in range(10)]
    assert set(_runs(ledger).values()) == {1}
    assert _reconnects(caplog, cluster)[1] == 1
    silent = [r for r in logged(scheduler, "closing connection", peer="client*") if "heartbeat" in r["reason"]]
    assert len(silent) == 1


# --- node <-> scheduler --------------------------------------------------------------


async def test_node_connections_cut_repeatedly_nodes_reclaim_their_jobs_none_lost_or_rerun(
        scheduler: SchedulerProcess, cluster_kwargs: dict[str, str],
        proxied_node: ProxiedNodes, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    async with proxied(scheduler.address, "nodes", proxied_node) as proxy:
        nodes = [proxied_node(name, proxy.address) for name in ("n1", "n2")]
        for node in nodes:
            await _joined(scheduler, node.name, 1)
        async with AsyncSharedJobCluster(_recording(ledger, 0.3), **cluster_kwargs) as cluster:
            jobs = [await cluster.submit(i) for i in range(24)]
            for cut in range(1, 4):
                await async_wait_for(lambda c=cut: sum(j.done() for j in jobs) >= 5 * c - 3, timeout=30,
                                     message="more jobs done")
                assert proxy.cut() == 2  # both nodes' connections, mid-job
                for node in nodes:
                    await _joined(scheduler, node.name, cut + 1)
            assert [await job for job in jobs] == [i * 10 for i in range(24)]
            assert {job.status for job in jobs} == {JobStatus.FINISHED}
        runs = _runs(ledger)
        assert sorted(map(int, runs)) == list(range(24)) and set(runs.values()) == {1}, runs
        for node in nodes:
            assert len(logged(scheduler, "node disconnected", node=node.name)) == 3
            assert len(logged(scheduler, "node joined", node=node.name)) == 4
            assert len(logged(node, "node connected")) == 4
        assert proxy.counters.cut == 6


async def test_node_half_open_is_detected_by_heartbeats_reentrant_rerun_other_abandoned(
        scheduler: SchedulerProcess, start_node: Callable[..., Daemon], cluster_kwargs: dict[str, str],
        proxied_node: ProxiedNodes, tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    count = lambda tag: len(list(markers.glob(f"{tag}-*")))  # noqa: E731
    async with proxied(scheduler.address, "victim", proxied_node) as proxy:
        victim = proxied_node("victim", proxy.address)
        await _joined(scheduler, "victim", 1)
        body = _first_run_hangs(markers)
        async with AsyncSharedJobCluster(body, reentrant=True, **cluster_kwargs) as again, \
                AsyncSharedJobCluster(body, **cluster_kwargs) as once:
            rerun, abandoned = await again.submit("R"), await once.submit("N")
            await async_wait_for(lambda: count("R") == count("N") == 1, timeout=30, message="both jobs run")
            start_node(cpus=2, name="rescuer")
            await _joined(scheduler, "rescuer", 1)

            went_dark = time.time()
            proxy.blackhole()
            lost = await async_wait_for(lambda: logged(scheduler, "node disconnected", node="victim"),
                                        timeout=HEARTBEAT_TIMEOUT + 10, message="the scheduler lost the victim")
            assert "heartbeat" in lost[0]["reason"]
            assert at(lost[0]) - went_dark <= HEARTBEAT_TIMEOUT + CHECK_SLACK
            gave_up = await async_wait_for(lambda: logged(victim, "node disconnected"), timeout=15,
                                           message="the victim saw the scheduler go silent")
            assert "no word from the scheduler" in gave_up[0]["reason"]
            assert at(gave_up[0]) - went_dark <= HEARTBEAT_TIMEOUT + CHECK_SLACK

            assert await rerun == "R" and rerun.node == "rescuer"
            with pytest.raises(Exception):  # noqa: B017 - the future ends with the abandonment
                await abandoned
            assert abandoned.status is JobStatus.ABANDONED and "victim" in str(abandoned.exception())
            proxy.heal()
            await _joined(scheduler, "victim", 2)
            (markers / "B-0").touch()  # not a first run: B returns at once
            back = await once.submit_node("victim", "B")
            assert await back == "B" and back.node == "victim"
        assert count("N") == 1, "the non-reentrant job ran twice"
        assert count("R") == 2  # on the victim (cut off) and on the rescuer
        assert len(logged(scheduler, "node disconnected", node="victim")) == 1
        assert proxy.counters.cut >= 1 and proxy.counters.dropped["up"] > 0  # its heartbeats went nowhere


@pytest.mark.scheduler_config(heartbeat_timeout=4.0, log_format="json")
async def test_node_half_open_healed_in_time_keeps_its_jobs_and_delivers_their_results(
        scheduler: SchedulerProcess, cluster_kwargs: dict[str, str],
        proxied_node: ProxiedNodes, tmp_path: Path) -> None:
    # lost after 4 s of silence, the node's jobs are held 4 s more for it to come back and claim
    ledger = tmp_path / "ledger"
    async with proxied(scheduler.address, "node", proxied_node) as proxy:
        node = proxied_node("n1", proxy.address)
        await _joined(scheduler, "n1", 1)
        async with AsyncSharedJobCluster(_recording(ledger, 0.5), **cluster_kwargs) as cluster:
            jobs = [await cluster.submit(i) for i in range(16)]
            await async_wait_for(lambda: _runs(ledger), timeout=30, message="jobs run")
            proxy.blackhole()
            await async_wait_for(lambda: logged(scheduler, "node disconnected", node="n1"), timeout=15,
                                 message="the scheduler lost the node")
            # jobs that ran (0.5 s each) while the link was dark: their results are held by the node
            held = _runs(ledger).total() - sum(job.done() for job in jobs)
            proxy.heal()
            await _joined(scheduler, "n1", 2)
            assert [await job for job in jobs] == [i * 10 for i in range(16)]
            assert {job.status for job in jobs} == {JobStatus.FINISHED}
        runs = _runs(ledger)
        assert sorted(map(int, runs)) == list(range(16)) and set(runs.values()) == {1}, runs
        assert held >= 1  # and were delivered after healing
        assert len(logged(scheduler, "node disconnected", node="n1")) == 1
        assert len(logged(node, "node connected")) == 2


async def test_non_reentrant_job_a_lost_node_had_queued_is_not_run_again_elsewhere(
        scheduler: SchedulerProcess, start_node: Callable[..., Daemon], cluster_kwargs: dict[str, str],
        proxied_node: ProxiedNodes, tmp_path: Path) -> None:
    # The victim (1 cpu) takes two jobs: one runs, the other waits in its queue. Cut off, it goes
    # on with its queue; the scheduler, which never heard that the second one started, must not
    # give it to another node once it gives the victim up: it may have run (SPEC promise 4).
    markers = tmp_path / "markers"
    markers.mkdir()
    count = lambda tag: len(list(markers.glob(f"{tag}-*")))  # noqa: E731
    path = str(markers)

    def body(tag: str) -> str:
        import os
        import time
        import uuid

        open(os.path.join(path, f"{tag}-{uuid.uuid4().hex}"), "w").close()
        time.sleep(1.0)
        return tag

    async with proxied(scheduler.address, "victim", proxied_node) as proxy:
        proxied_node("victim", proxy.address, cpus=1)
        await _joined(scheduler, "victim", 1)
        async with AsyncSharedJobCluster(body, **cluster_kwargs) as once:
            first, second = await once.submit("A"), await once.submit("B")
            await async_wait_for(lambda: count("A") == 1, timeout=30, message="the first job runs")
            proxy.blackhole()
            start_node(cpus=1, name="rescuer")
            await async_wait_for(lambda: count("B") == 1, timeout=30, message="the second job ran somewhere")
            for job in (first, second):
                await job.wait()
            outcome = {job.uid: (str(job.status), job.node) for job in (first, second)}
            assert count("A") == 1 and first.status is JobStatus.ABANDONED
            assert count("B") == 1, f"the non-reentrant job B ran twice: {outcome}"
            assert second.status in (JobStatus.ABANDONED, JobStatus.FINISHED)


# --- both paths ----------------------------------------------------------------------


async def _run_through(scheduler: SchedulerProcess,
                       cluster_kwargs: dict[str, str], proxied_node: ProxiedNodes, ledger: Path,
                       fault: Callable[[FaultProxy, FaultProxy], Awaitable[None]],
                       ) -> tuple[FaultProxy, FaultProxy, list[Any], list[dict[str, Any]]]:
    """20 jobs with the client and a node behind proxies; ``fault`` is applied once the jobs run."""
    async with proxied(scheduler.address, "client") as to_client, \
            proxied(scheduler.address, "node", proxied_node) as to_node:
        proxied_node("n1", to_node.address)
        await _joined(scheduler, "n1", 1)
        kwargs = dict(cluster_kwargs, scheduler=to_client.address)
        async with AsyncSharedJobCluster(_recording(ledger, 0.1), **kwargs) as cluster:
            jobs = [await cluster.submit(i) for i in range(20)]
            await async_wait_for(lambda: _runs(ledger), timeout=30, message="jobs run")
            await fault(to_client, to_node)
            results = [await job for job in jobs]
        # read before the proxies close, which ends their connections (and is logged)
        troubles = logged(scheduler, "node disconnected") + logged(scheduler, "closing connection")
    return to_client, to_node, results, troubles


async def test_delayed_links_deliver_every_result_once(scheduler: SchedulerProcess,
                                                       cluster_kwargs: dict[str, str],
                                                       proxied_node: ProxiedNodes, tmp_path: Path) -> None:
    async def delay(to_client: FaultProxy, to_node: FaultProxy) -> None:
        to_client.set_delay(0.15)
        to_node.set_delay(0.15)

    ledger = tmp_path / "ledger"
    _, to_node, results, troubles = await _run_through(scheduler, cluster_kwargs, proxied_node, ledger,
                                                       delay)
    assert results == [i * 10 for i in range(20)]
    assert set(_runs(ledger).values()) == {1}
    assert not troubles and to_node.counters.accepted == 1


async def test_a_short_stall_is_ridden_out_without_reconnecting(scheduler: SchedulerProcess,
                                                                cluster_kwargs: dict[str, str],
                                                                proxied_node: ProxiedNodes,
                                                                tmp_path: Path) -> None:
    async def stall(to_client: FaultProxy, to_node: FaultProxy) -> None:
        to_client.stall()
        to_node.stall()
        await trio.sleep(HEARTBEAT_TIMEOUT / 3)  # well inside the heartbeat timeout
        to_client.heal()
        to_node.heal()

    ledger = tmp_path / "ledger"
    to_client, to_node, results, troubles = await _run_through(scheduler, cluster_kwargs, proxied_node,
                                                               ledger, stall)
    assert results == [i * 10 for i in range(20)]
    assert set(_runs(ledger).values()) == {1}
    assert not troubles
    assert to_client.counters.accepted == 1 and to_node.counters.accepted == 1  # nobody reconnected
    assert to_client.counters.cut == to_node.counters.cut == 0

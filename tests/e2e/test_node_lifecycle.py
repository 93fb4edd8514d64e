"""End to end: nodes join and leave at any time, and the node controls dispy's nodes have.

Real ``fairpool scheduler`` and ``fairpool node`` processes on loopback: a
node started later is used at once by a running cluster; SIGTERM drains a
node (finishing or handing back its jobs); ``--serve 1`` exits after one
cluster; ``--discover`` finds a scheduler announcing on loopback multicast;
a failover list skips a dead first address; service hours keep jobs away;
init/close hooks and ``--clean``; and a scheduler frozen (SIGSTOP) longer than
the heartbeat timeout is noticed by the node and the client, which reconnect.
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from conftest import Daemon, SchedulerProcess, wait_for
from jobfunctions import wait_for_gate

from fairpool import JobStatus, SharedJobCluster
from fairpool.clients import connection

# in_tmp_dir: recover files land there.
pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("in_tmp_dir")]

GROUP = "239.255.51.35"  # multicast, sent and heard on 127.0.0.1 only


def work(kind: str, gate: str = "") -> str:
    """A job: return at once, or wait for a gate file to appear."""
    import time

    if kind == "gate":
        wait_for_gate(gate, timeout=60)
    if kind == "nap":
        time.sleep(0.3)
    return kind


class NodeEvents:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def __call__(self, event: str, node: object, job: object) -> None:
        self.events.append((event, str(node)))

    def has(self, event: str, node: str) -> bool:
        return (event, node) in list(self.events)


def exited(daemon: Daemon, timeout: float = 30.0) -> int:
    assert daemon.process is not None
    wait_for(lambda: not daemon.alive(), timeout=timeout, message=f"{daemon.label} exits")
    return daemon.process.wait()


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def own_node(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """``own_node(name, secret_file, *args)``: a node whose scheduler flags the test chooses itself."""
    nodes: list[Daemon] = []

    def start(name: str, secret_file: Path, *args: str) -> Daemon:
        node = Daemon("node", f"node-{name}", [*args, "--secret-file", str(secret_file), "--cpus", "1",
                                               "--name", name, "--state-dir", str(tmp_path / f"node-{name}"),
                                               "--log-level", "debug"], log_dir=tmp_path, name=name)
        nodes.append(node)
        node.start()
        return node

    try:
        yield start
    finally:
        for node in nodes:
            node.stop()


def node_state(cluster: SharedJobCluster, name: str) -> str | None:
    return next((n.state for n in cluster.nodes() if n.name == name), None)


# --- joining ---------------------------------------------------------------------------------


def test_a_node_started_later_is_used_at_once_by_a_running_cluster(scheduler, start_node, cluster_kwargs):
    start_node(cpus=1, name="early")
    events = NodeEvents()
    with SharedJobCluster(work, cluster_status=events, **cluster_kwargs) as cluster:
        assert cluster.submit("plain").result(timeout=15) == "plain"
        start_node(cpus=2, name="late")
        wait_for(lambda: events.has("joined", "late"), timeout=15, message="cluster_status hears 'joined'")
        jobs = [cluster.submit("nap") for _ in range(6)]
        assert all(job.result(timeout=30) == "nap" for job in jobs)
    assert "late" in {job.node for job in jobs}


def test_a_node_finds_a_scheduler_announcing_on_loopback(tmp_path, own_node):
    port = free_port(socket.SOCK_DGRAM)
    config = tmp_path / "announcing.toml"
    config.write_text(f'heartbeat_interval = 0.5\nheartbeat_timeout = 4.0\nname = "lab"\nannounce = true\n'
                      f'announce_address = "{GROUP}:{port}"\nannounce_interface = "127.0.0.1"\n'
                      f'announce_interval = "200ms"\n')
    announcing = SchedulerProcess(tmp_path / "lab", log_dir=tmp_path, extra_args=["--config", str(config)])
    announcing.label = "lab-scheduler"
    announcing.start()
    try:
        node = own_node("finder", announcing.secret_file, "--discover", "--discover-name", "lab",
                        "--announce-address", f"{GROUP}:{port}", "--announce-interface", "127.0.0.1")
        with SharedJobCluster(work, scheduler=announcing.address,
                              secret_file=str(announcing.secret_file)) as cluster:
            job = cluster.submit("plain")
            assert job.result(timeout=30) == "plain"
        assert job.node == "finder"
        assert "scheduler discovered" in node.log()
        node.stop()
    finally:
        announcing.stop()


def test_a_failover_list_skips_a_dead_first_address(scheduler, own_node, cluster_kwargs):
    dead = f"127.0.0.1:{free_port()}"
    node = own_node("failover", scheduler.secret_file, "--scheduler", f"{dead},{scheduler.address}")
    with SharedJobCluster(work, **cluster_kwargs) as cluster:
        job = cluster.submit("plain")
        assert job.result(timeout=30) == "plain"
    assert job.node == "failover"
    log = node.log()
    assert "cannot reach the scheduler" in log and dead in log


# --- leaving -----------------------------------------------------------------------------------


def test_sigterm_drains_a_node_that_finishes_its_running_job_then_leaves(scheduler, start_node, cluster_kwargs,
                                                                          tmp_path, wait_for_log):
    node = start_node(cpus=1, name="leaver")
    gate = tmp_path / "gate"
    events = NodeEvents()
    with SharedJobCluster(work, cluster_status=events, **cluster_kwargs) as cluster:
        running = cluster.submit("gate", str(gate))
        wait_for(lambda: running.status is JobStatus.RUNNING, timeout=20, message="the job runs")
        node.send_signal(signal.SIGTERM)
        wait_for_log(node, "node draining")
        wait_for(lambda: node_state(cluster, "leaver") == "draining", timeout=15, message="it drains")
        assert node.alive()  # its job still runs
        gate.touch()
        assert running.result(timeout=20) == "gate"
        assert exited(node) == 0
        wait_for(lambda: events.has("left", "leaver"), timeout=15, message="cluster_status hears 'left'")
    assert not events.has("failed", "leaver")


def test_sigterm_with_handback_gives_a_reentrant_job_to_another_node(scheduler, start_node, cluster_kwargs,
                                                                     tmp_path):
    node = start_node(cpus=1, name="quitter", extra_args=["--stop", "handback"])
    gate = tmp_path / "gate"
    with SharedJobCluster(work, reentrant=True, **cluster_kwargs) as cluster:
        job = cluster.submit("gate", str(gate))
        wait_for(lambda: job.status is JobStatus.RUNNING, timeout=20, message="the job runs")
        node.send_signal(signal.SIGTERM)
        assert exited(node, timeout=20) == 0
        assert "jobs handed back to the scheduler" in node.log()
        gate.touch()
        start_node(cpus=1, name="taker")
        assert job.result(timeout=30) == "gate"
    assert job.node == "taker"


def test_sigterm_with_handback_abandons_a_started_job_that_is_not_reentrant(scheduler, start_node,
                                                                           cluster_kwargs, tmp_path):
    node = start_node(cpus=1, name="quitter", extra_args=["--stop", "handback"])
    with SharedJobCluster(work, **cluster_kwargs) as cluster:
        job = cluster.submit("gate", str(tmp_path / "never"))
        wait_for(lambda: job.status is JobStatus.RUNNING, timeout=20, message="the job runs")
        node.send_signal(signal.SIGTERM)
        wait_for(lambda: job.done(), timeout=20, message="the job ends")
        assert job.status is JobStatus.ABANDONED
        assert exited(node) == 0


def test_serve_1_exits_after_serving_one_cluster(scheduler, start_node, cluster_kwargs, wait_for_log):
    node = start_node(cpus=1, name="once", extra_args=["--serve", "1"])
    with SharedJobCluster(work, **cluster_kwargs) as cluster:
        assert cluster.submit("plain").result(timeout=20) == "plain"
        assert node.alive()
    assert exited(node) == 0
    assert "cluster served" in node.log()


def test_a_node_outside_its_service_hours_gets_no_jobs(scheduler, start_node, cluster_kwargs):
    later = datetime.now() + timedelta(hours=2)
    closed = f"{later:%H:%M}-{later + timedelta(hours=1):%H:%M}"  # a window that excludes now
    start_node(cpus=2, name="night", extra_args=["--serve-hours", closed])
    start_node(cpus=1, name="day", extra_args=["--serve-hours", "00:00-24:00"])
    with SharedJobCluster(work, **cluster_kwargs) as cluster:
        wait_for(lambda: node_state(cluster, "night") == "drained" and node_state(cluster, "day") == "up",
                 timeout=20, message="night is drained, day is up")
        jobs = [cluster.submit("nap") for _ in range(4)]
        assert all(job.result(timeout=30) == "nap" for job in jobs)
    assert {job.node for job in jobs} == {"day"}


# --- hooks and the state directory -------------------------------------------------------------------


def test_a_failing_init_hook_stops_the_node_from_starting(scheduler, start_node):
    node = start_node(cpus=1, name="broken", extra_args=["--init-hook", "echo scratch not mounted >&2; exit 3"])
    assert exited(node) == 1
    log = node.log()
    assert "init hook `echo scratch not mounted >&2; exit 3` failed with exit status 3: scratch not mounted" in log
    assert "Traceback" not in log and "node connected" not in log


def test_hooks_run_before_start_and_at_exit_with_the_nodes_name(scheduler, start_node, tmp_path, wait_for_log):
    marks = tmp_path / "marks"
    node = start_node(cpus=1, name="hooked", extra_args=[
        "--init-hook", f'echo "init $FAIRPOOL_NODE_NAME" >> {marks}',
        "--close-hook", f'echo "close $FAIRPOOL_NODE_NAME" >> {marks}',
    ])
    wait_for_log(node, "node connected")
    assert marks.read_text() == "init hooked\n"
    node.send_signal(signal.SIGTERM)
    assert exited(node) == 0
    assert marks.read_text() == "init hooked\nclose hooked\n"


@pytest.fixture
def crashed_state_dir(tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    """A node state dir a crashed node left: one stale working dir, one a leftover process still uses."""
    state = tmp_path / "node-crashed"
    stale, busy = state / "clusters" / "c-stale", state / "clusters" / "c-busy"
    stale.mkdir(parents=True)
    busy.mkdir()
    (stale / "data.txt").write_text("old")
    survivor = subprocess.Popen(["sleep", "120"], cwd=busy)  # a job that outlived its node
    try:
        yield state, stale, busy
    finally:
        survivor.kill()
        survivor.wait()


def test_clean_removes_stale_working_dirs_but_not_one_in_use(scheduler, start_node, crashed_state_dir,
                                                           wait_for_log):
    state, stale, busy = crashed_state_dir
    node = start_node(cpus=1, name="crashed", extra_args=["--clean", "--state-dir", str(state)])
    wait_for_log(node, "removed working directories left by an earlier run")
    assert not stale.exists() and busy.exists()
    assert "kept a working directory a process still uses" in node.log()


def test_without_clean_stale_working_dirs_are_kept_and_counted(scheduler, start_node, crashed_state_dir,
                                                               wait_for_log):
    state, stale, busy = crashed_state_dir
    node = start_node(cpus=1, name="crashed", extra_args=["--state-dir", str(state)])
    wait_for_log(node, "node connected")
    assert stale.exists() and busy.exists()
    assert "--clean removes them" in node.log()


def test_a_second_node_on_the_same_state_dir_is_refused(scheduler, start_node, tmp_path, wait_for_log):
    state = tmp_path / "shared-state"
    first = start_node(cpus=1, name="first", extra_args=["--state-dir", str(state)])
    wait_for_log(first, "node connected")
    second = start_node(cpus=1, name="second", extra_args=["--state-dir", str(state)])
    assert exited(second) == 1
    assert f"another node is running on state dir {state}" in second.log()


# --- half-open connections --------------------------------------------------------------------------


def test_a_frozen_scheduler_is_noticed_by_heartbeats_and_everyone_reconnects(
        scheduler, start_node, cluster_kwargs, tmp_path, wait_for_log, monkeypatch, caplog):
    node_config = tmp_path / "node.toml"
    node_config.write_text("heartbeat_interval = 0.3\nheartbeat_timeout = 1.5\nreconnect_max_delay = 0.5\n")
    node = start_node(cpus=1, name="watcher", extra_args=["--config", str(node_config)])
    timing = connection.ConnectionTiming(heartbeat_interval=0.3, heartbeat_timeout=1.5, reconnect_max_delay=0.5)
    monkeypatch.setattr(connection, "DEFAULT_TIMING", timing)
    gate = tmp_path / "gate"
    with caplog.at_level(logging.WARNING, logger="fairpool.clients"):
        with SharedJobCluster(work, **cluster_kwargs) as cluster:
            job = cluster.submit("gate", str(gate))
            wait_for(lambda: job.status is JobStatus.RUNNING, timeout=20, message="the job runs")
            scheduler.send_signal(signal.SIGSTOP)  # the connection stays open; nothing answers
            try:
                wait_for_log(node, "no word from the scheduler for 1.5s", timeout=15)
                wait_for(lambda: "nothing heard from the scheduler in 1.5s" in caplog.text, timeout=15,
                         message="the client gives the silent connection up")
            finally:
                scheduler.send_signal(signal.SIGCONT)
            gate.touch()
            assert job.result(timeout=30) == "gate"
            assert node.log().count("node connected") >= 2
        assert "reconnected to the scheduler" in caplog.text

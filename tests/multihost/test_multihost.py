"""Scheduler, nodes and clients on different network hosts (namespaces joined by a bridge).

Real daemons on 10.213.0.x addresses, clients in hosts of their own: jobs
spread across the nodes, a node started later is used by a running cluster,
and a node whose cable is pulled mid-job is noticed by heartbeats within the
heartbeat timeout -- its reentrant job rerun elsewhere, its non-reentrant one
ABANDONED (SPEC promise 4) and run only once -- and, cable back, it rejoins
and is used again. Jobs leave marker files on the shared filesystem, so that
the test counts how often each body really ran.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import wait_for
from daemonlogs import at, logged
from multihost.hosts import SCHEDULER_CONFIG, MultiHost

pytestmark = pytest.mark.timeout(120)

HEARTBEAT_TIMEOUT = SCHEDULER_CONFIG["heartbeat_timeout"]
# the scheduler checks heartbeats once per interval, and a log line takes a moment to land
CHECK_SLACK = SCHEDULER_CONFIG["heartbeat_interval"] + 1.5


def _joined(mh: MultiHost, *names: str) -> bool:
    up = {n["name"] for n in mh.admin("nodes.list") if n["state"] == "up"}
    return set(names) <= up


def test_jobs_spread_across_nodes_on_other_hosts(mh: MultiHost) -> None:
    mh.start_node("n1", cpus=2)
    mh.start_node("n2", cpus=2)
    wait_for(lambda: _joined(mh, "n1", "n2"), timeout=30, message="both nodes joined over the lab network")
    client = mh.client("c1")
    client.exec("""
        def slow(i):
            import time
            time.sleep(0.3)
            return i * i
        cluster = SharedJobCluster(slow, scheduler=SCHEDULER, secret_file=SECRET)
        jobs = [cluster.submit(i) for i in range(8)]
    """)
    assert client.eval("[j.result(timeout=60) for j in jobs]", timeout=70) == [i * i for i in range(8)]
    assert set(client.eval("[j.node for j in jobs]")) == {"n1", "n2"}
    client.exec("cluster.close()")


def test_a_node_started_later_is_used_by_a_running_cluster(mh: MultiHost) -> None:
    mh.start_node("n1", cpus=1)
    wait_for(lambda: _joined(mh, "n1"), timeout=30, message="n1 joined")
    client = mh.client("c1")
    client.exec("""
        import threading
        events = []
        def status(event, node, job):
            events.append([event, str(node), node.cpus])
        def slow(i):
            import time
            time.sleep(0.4)
            return i + 1
        cluster = SharedJobCluster(slow, scheduler=SCHEDULER, secret_file=SECRET, cluster_status=status)
        first = [cluster.submit(i) for i in range(2)]
    """)
    assert client.eval("[j.result(timeout=60) for j in first]", timeout=70) == [1, 2]
    mh.start_node("n3", cpus=2)
    wait_for(lambda: ["joined", "n3", 2] in client.eval("events"), timeout=30,
             message="the running cluster's cluster_status saw n3 join")
    # the emptiest node that fits is chosen first: n3 (2 free cpus) is used at once
    client.exec("later = [cluster.submit(i) for i in range(6)]")
    assert client.eval("[j.result(timeout=60) for j in later]", timeout=70) == list(range(1, 7))
    assert "n3" in client.eval("[j.node for j in later]")
    client.exec("cluster.close()")


def _markers(directory: Path, tag: str) -> int:
    return len(list(directory.glob(f"{tag}-*")))


def test_node_link_down_mid_job_is_noticed_jobs_rerun_or_abandoned_and_it_rejoins(mh: MultiHost,
                                                                                   tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    victim = mh.start_node("victim", cpus=2)
    wait_for(lambda: _joined(mh, "victim"), timeout=30, message="victim joined")
    client = mh.client("c1")
    client.exec(f"""
        MARKERS = {str(markers)!r}
        def body(tag):
            # every run leaves a marker; only the first run of a job takes long
            import glob, os, time, uuid
            first = not glob.glob(os.path.join(MARKERS, tag + "-*"))
            open(os.path.join(MARKERS, f"{{tag}}-{{uuid.uuid4().hex}}"), "w").close()
            if first:
                time.sleep(60)
            return tag
        again = SharedJobCluster(body, scheduler=SCHEDULER, secret_file=SECRET, reentrant=True)
        once = SharedJobCluster(body, scheduler=SCHEDULER, secret_file=SECRET)
        rerun_job = again.submit("R")
        once_job = once.submit("N")
    """)
    wait_for(lambda: client.eval("[rerun_job.status, once_job.status]") == ["RUNNING", "RUNNING"]
             and _markers(markers, "R") == 1 and _markers(markers, "N") == 1,
             timeout=30, message="both jobs run on the victim")
    assert client.eval("[rerun_job.node, once_job.node]") == ["victim", "victim"]
    mh.start_node("rescuer", cpus=2)
    wait_for(lambda: _joined(mh, "rescuer"), timeout=30, message="rescuer joined")

    pulled = time.time()
    mh.lab.link_down(victim.host)
    lost = wait_for(lambda: logged(mh.scheduler, "node disconnected", node="victim"), timeout=HEARTBEAT_TIMEOUT + 10,
                    message="the scheduler noticed the victim is gone")
    noticed = at(lost[0]) - pulled
    assert noticed <= HEARTBEAT_TIMEOUT + CHECK_SLACK, f"noticed after {noticed:.1f}s"
    assert "heartbeat" in lost[0]["reason"]  # by heartbeats: the kernels said nothing

    assert client.eval("rerun_job.result(timeout=60)", timeout=70) == "R"
    assert client.eval("rerun_job.node") == "rescuer"
    assert client.eval("once_job.exception(timeout=60) is not None", timeout=70)
    assert client.eval("once_job.status") == "ABANDONED"
    assert "victim" in client.eval("str(once_job.exception())")
    # the node went on with its jobs, unaware: it too hears nothing, by its own heartbeats
    wait_for(lambda: logged(victim, "node disconnected"), timeout=15, message="the victim gave its connection up")

    mh.lab.link_up(victim.host)
    wait_for(lambda: len(logged(mh.scheduler, "node joined", node="victim")) == 2, timeout=30,
             message="the victim rejoined")
    (markers / "B-0").touch()  # not a first run: B returns at once
    client.exec("back = once.submit_node('victim', 'B')")
    assert client.eval("back.result(timeout=60)", timeout=70) == "B"
    assert client.eval("back.node") == "victim"
    assert _markers(markers, "N") == 1, "the non-reentrant job ran twice"
    assert _markers(markers, "R") == 2  # once on the victim (cut off), once on the rescuer
    assert len(logged(mh.scheduler, "node disconnected", node="victim")) == 1
    client.exec("again.close(); once.close()")


def test_a_cable_pulled_for_less_than_the_heartbeat_timeout_is_ridden_out(mh: MultiHost, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    node = mh.start_node("n1", cpus=2)
    wait_for(lambda: _joined(mh, "n1"), timeout=30, message="n1 joined")
    client = mh.client("c1")
    client.exec(f"""
        def work(i):
            import time
            with open({str(ledger)!r}, "a") as f:
                f.write(f"{{i}}\\n")
            time.sleep(0.2)
            return -i
        cluster = SharedJobCluster(work, scheduler=SCHEDULER, secret_file=SECRET)
        jobs = [cluster.submit(i) for i in range(12)]
    """)
    wait_for(lambda: ledger.exists(), timeout=30, message="jobs run")
    mh.lab.link_down(node.host)
    time.sleep(HEARTBEAT_TIMEOUT / 3)  # the outage itself, well inside the heartbeat timeout
    mh.lab.link_up(node.host)
    assert client.eval("[j.result(timeout=60) for j in jobs]", timeout=70) == [-i for i in range(12)]
    assert sorted(map(int, ledger.read_text().split())) == list(range(12))  # each once
    assert not logged(mh.scheduler, "node disconnected") and len(logged(mh.scheduler, "node joined")) == 1
    client.exec("cluster.close()")

"""End to end: a scheduler and a node configured with mutual TLS; clients with certificates.

The CA and certificates come from ``fairpool.certs`` (as ``fairpool certs``
makes them); the scheduler reads ``tls = {...}`` from its config file, the
node takes ``--tls-ca/--tls-cert/--tls-key``. Every refusal is checked on
both ends: the client's exception and the scheduler's log say why, and the
scheduler goes on serving a good client.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import TEST_SCHEDULER_CONFIG, Daemon, SchedulerProcess, _register, wait_for
from jobfunctions import double

from fairpool import JobStatus, SharedJobCluster, certs, recover_jobs
from fairpool.address import Address
from fairpool.clients.errors import SchedulerConnectionError
from fairpool.messages import Reply, Request
from fairpool.tls import TlsFiles
from fairpool.wire import open_connection

pytestmark = pytest.mark.timeout(120)

HANDSHAKE_TIMEOUT = 6.0  # a client without TLS is told so after a third of it


@dataclass
class TlsPool:
    scheduler: SchedulerProcess
    node: Daemon
    files: dict[str, TlsFiles]

    def tls(self, which: str) -> dict[str, str]:
        """What a user passes as ``tls=``."""
        files = self.files[which]
        return {"ca": str(files.ca), "cert": str(files.cert), "key": str(files.key)}


def toml_string(path: Path) -> str:
    return json.dumps(str(path))


@pytest.fixture
def pool(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[TlsPool]:
    ours, other = tmp_path / "certs", tmp_path / "other-ca"
    certs.init_ca(ours)
    certs.init_ca(other)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    files = {
        "scheduler": certs.issue("scheduler", "pool", directory=ours).files,
        "node": certs.issue("node", "n1", directory=ours).files,
        "alice": certs.issue("client", "alice", directory=ours).files,
        "admin": certs.issue("admin", "root", directory=ours).files,
        "expired": certs.issue("client", "late", directory=ours, not_before=past, days=1).files,
        "foreign": certs.issue("client", "alice", directory=other).files,
    }
    files["foreign"] = TlsFiles(files["alice"].ca, files["foreign"].cert, files["foreign"].key)
    ca, cert, key = files["scheduler"].ca, files["scheduler"].cert, files["scheduler"].key
    config = tmp_path / "scheduler.toml"
    settings = {**TEST_SCHEDULER_CONFIG, "handshake_timeout": HANDSHAKE_TIMEOUT}
    config.write_text("".join(f"{k} = {v!r}\n" for k, v in settings.items()) +
                      f"tls = {{ ca = {toml_string(ca)}, cert = {toml_string(cert)}, key = {toml_string(key)} }}\n")
    scheduler = SchedulerProcess(tmp_path / "sched", log_dir=tmp_path, extra_args=["--config", str(config)])
    _register(request, scheduler)
    scheduler.start()
    node_files = files["node"]
    node = Daemon("node", "node-n1", [
        "--scheduler", scheduler.address, "--cpus", "1", "--name", "n1", "--state-dir", str(tmp_path / "node"),
        "--log-level", "debug", "--tls-ca", str(node_files.ca), "--tls-cert", str(node_files.cert),
        "--tls-key", str(node_files.key),
    ], log_dir=tmp_path, name="n1")
    _register(request, node)
    node.start()
    try:
        wait_for(lambda: "node joined" in scheduler.log(), timeout=30, message="the TLS node joined")
        yield TlsPool(scheduler, node, files)
    finally:
        node.stop()
        scheduler.stop()


def slow_double(x: int) -> int:
    import time

    time.sleep(1.5)  # long enough for the test to list it while it is queued or running
    return 2 * x


def admin_request(pool: TlsPool, verb: str, args: dict[str, Any]) -> Any:
    """One request over TLS, proven by the admin certificate (no secret)."""

    async def ask() -> Any:
        stream = await open_connection(Address.parse(pool.scheduler.address), b"", role="admin", name="test-admin",
                                       auth="tls", tls=pool.files["admin"], timeout=20)
        try:
            await stream.send(Request(1, verb, args))
            while True:
                for message in await stream.receive():
                    if isinstance(message, Reply) and message.id == 1:
                        assert message.ok, message.error
                        return message.body
        finally:
            await stream.aclose()

    return trio.run(ask)


def assert_serves_a_good_client(pool: TlsPool) -> None:
    with SharedJobCluster(double, scheduler=pool.scheduler.address, tls=pool.tls("alice")) as cluster:
        assert cluster.submit(21).result(timeout=60) == 42


# --- served ------------------------------------------------------------------------------------------


def test_a_client_certificate_runs_jobs_as_its_tenant(pool: TlsPool) -> None:
    with SharedJobCluster(slow_double, scheduler=pool.scheduler.address, tls=pool.tls("alice")) as cluster:
        jobs = [cluster.submit(i) for i in range(3)]
        listed = wait_for(lambda: admin_request(pool, "jobs.list", {"cluster": cluster.cluster_id}),
                          timeout=30, message="the scheduler lists the cluster's jobs")
        assert {job["tenant"] for job in listed} == {"alice"}
        assert [job.result(timeout=60) for job in jobs] == [0, 2, 4]
        assert {job.node for job in jobs} == {"n1"}  # the node joined over TLS with its certificate


def test_node_and_client_reconnect_over_tls_after_a_scheduler_crash(pool: TlsPool) -> None:
    with SharedJobCluster(slow_double, scheduler=pool.scheduler.address, tls=pool.tls("alice")) as cluster:
        jobs = [cluster.submit(i) for i in range(4)]
        wait_for(lambda: all(job.status is not JobStatus.CREATED for job in jobs), timeout=30,
                 message="every job acknowledged QUEUED")
        pool.scheduler.restart(kill=True)  # SIGKILL, then the same address and TLS files again
        assert [job.result(timeout=90) for job in jobs] == [0, 2, 4, 6]
    assert pool.scheduler.log().count("node joined") >= 2  # the node came back, with its certificate


# --- refused, with the reason on both ends -------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    kwargs: Callable[[TlsPool], dict[str, Any]]
    client_says: str
    scheduler_says: str


REFUSALS = {
    "foreign-ca": Refusal(lambda p: {"tls": p.tls("foreign")},
                          "the scheduler refused this certificate: it is not signed by the scheduler's CA",
                          "the peer's certificate is not signed by this scheduler's CA"),
    "expired": Refusal(lambda p: {"tls": p.tls("expired")},
                       "the scheduler refused this certificate: it has expired",
                       "the peer's certificate has expired"),
    "node-as-client": Refusal(lambda p: {"tls": p.tls("node")},
                              "the certificate is for role 'node', not 'client'",
                              "the certificate is for role 'node', not 'client'"),
    "plain-client": Refusal(lambda p: {"secret_file": str(p.scheduler.secret_file)},
                            "refused by server: this scheduler requires TLS",
                            "not a TLS connection: the peer sent nothing"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_a_bad_client_is_refused_with_a_clear_reason(pool: TlsPool, case: str) -> None:
    refusal = REFUSALS[case]
    with pytest.raises(SchedulerConnectionError) as info:
        SharedJobCluster(double, scheduler=pool.scheduler.address, **refusal.kwargs(pool))
    assert refusal.client_says in str(info.value)
    wait_for(lambda: refusal.scheduler_says in pool.scheduler.log(), timeout=20,
             message=f"the scheduler logs {refusal.scheduler_says!r}")
    assert "connection refused" in pool.scheduler.log()
    assert_serves_a_good_client(pool)


def test_a_node_certificate_cannot_act_as_admin(pool: TlsPool) -> None:
    async def connect_as_admin() -> None:
        await open_connection(Address.parse(pool.scheduler.address), b"", role="admin", auth="tls",
                              tls=pool.files["node"], timeout=20)

    with pytest.raises(Exception, match="the certificate is for role 'node', not 'admin'"):
        trio.run(connect_as_admin)
    wait_for(lambda: "the certificate is for role 'node', not 'admin'" in pool.scheduler.log(), timeout=20)
    assert_serves_a_good_client(pool)


# --- a client killed -9: its jobs reattached and recovered over TLS ----------------------------------------

# Opens a cluster with a client certificate (no secret file anywhere), submits, waits until every
# job is acknowledged QUEUED, prints the cluster id and waits to be killed.
TLS_CLIENT = textwrap.dedent("""
    import json, sys, time
    from fairpool import SharedJobCluster

    def slow_double(x):
        import time
        time.sleep(0.3)
        return 2 * x

    cluster = SharedJobCluster(slow_double, scheduler=sys.argv[1], tls=json.loads(sys.argv[2]))
    jobs = [cluster.submit(i) for i in range(int(sys.argv[3]))]
    deadline = time.monotonic() + 60
    while any(j.status == "CREATED" for j in jobs) and time.monotonic() < deadline:
        time.sleep(0.01)
    print(json.dumps({"cluster_id": cluster.cluster_id}), flush=True)
    time.sleep(600)  # killed here
""")
KILLED_JOBS = 4


def killed_tls_client(pool: TlsPool, directory: Path) -> str:
    """Run TLS_CLIENT in ``directory`` (its recover file lands there), SIGKILL it; its cluster id."""
    directory.mkdir()
    script = directory / "client.py"
    script.write_text(TLS_CLIENT)
    proc = subprocess.Popen([sys.executable, str(script), pool.scheduler.address, json.dumps(pool.tls("alice")),
                             str(KILLED_JOBS)], cwd=directory, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line, proc.stderr.read() if proc.stderr else "the client printed nothing"
    finally:
        proc.kill()  # SIGKILL: no goodbye
        proc.wait()
    assert (directory / f"fairpool-{json.loads(line)['cluster_id']}.recover").exists()
    return str(json.loads(line)["cluster_id"])


def test_a_killed_clients_cluster_is_reattached_elsewhere_with_tls(pool: TlsPool, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    cluster_id = killed_tls_client(pool, tmp_path / "client")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # no recover file here: the certificate comes only from tls=
    cluster = SharedJobCluster.reattach(cluster_id, scheduler=pool.scheduler.address, tls=pool.tls("alice"))
    try:
        jobs = wait_for(lambda: cluster.jobs() if len(cluster.jobs()) == KILLED_JOBS else None, timeout=30,
                        message="the scheduler lists every job of the killed client")
        assert sorted(job.result(timeout=60) for job in jobs) == [2 * i for i in range(KILLED_JOBS)]
        assert cluster.tenant == "alice"
    finally:
        cluster.close(timeout=30)


def test_recover_jobs_with_tls_collects_a_killed_clients_results(pool: TlsPool, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    cluster_id = killed_tls_client(pool, tmp_path / "client")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    jobs = recover_jobs(cluster_id, scheduler=pool.scheduler.address, tls=pool.tls("alice"), timeout=60)
    assert sorted(job.result(timeout=0) for job in jobs) == [2 * i for i in range(KILLED_JOBS)]


def test_recover_jobs_takes_the_certificate_from_the_recover_file(pool: TlsPool, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    cluster_id = killed_tls_client(pool, tmp_path / "client")
    monkeypatch.chdir(tmp_path / "client")  # where the dead client wrote its recover file (and no secret)
    jobs = recover_jobs(timeout=60)  # the file names the scheduler and the TLS files
    assert sorted(job.result(timeout=0) for job in jobs) == [2 * i for i in range(KILLED_JOBS)]
    assert all(job.uid.startswith(cluster_id) for job in jobs)
    assert not (tmp_path / "client" / f"fairpool-{cluster_id}.recover").exists()  # every result taken

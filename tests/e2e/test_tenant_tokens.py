"""End to end: tenant tokens and tenant isolation against a real scheduler (and node) process.

``fairpool admin tenants add`` issues a token; SharedJobCluster and
``fairpool admin --tenant --token`` connect with it and no secret file; the
cluster secret is then refused for tenant clients; the token outlives a
``kill -9`` of the scheduler; ``--rotate`` and ``tenants remove`` revoke it
and close what it let in. A tenant sees, cancels, reattaches to and
recovers only its own jobs and clusters: another tenant's answer exactly as
missing ones. Jobs that must stay QUEUED have no node to go to.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from adminresult import AdminResult
from conftest import fairpool_command, wait_for
from jobfunctions import double

from fairpool import SharedJobCluster, recover_jobs
from fairpool.address import Address
from fairpool.admin import RequestRefused, request_async, resolve_credentials
from fairpool.cli import main
from fairpool.clients.errors import ClusterNotFound, SchedulerConnectionError
from fairpool.handshake import WRONG_TOKEN, AuthError
from fairpool.messages import Error
from fairpool.tokens import new_token
from fairpool.wire import ConnectionClosed, open_connection

# in_tmp_dir: recover files land there, and there is no ./.fairpool/secret to find by accident.
pytestmark = [pytest.mark.timeout(90), pytest.mark.usefixtures("in_tmp_dir", "no_fairpool_env")]


def credential_flags(scheduler: Any, tenant: str | None, token: str | None) -> list[str]:
    flags = ["--scheduler", scheduler.address]
    if token is not None:
        return [*flags, "--tenant", str(tenant), "--token", token]
    return [*flags, "--secret-file", str(scheduler.secret_file)]


@pytest.fixture
def admin(scheduler, capsys) -> Callable[..., AdminResult]:
    """``admin(*args, tenant=None, token=None)``: ``fairpool admin`` in this process (the secret without a token)."""

    def run(*args: str, tenant: str | None = None, token: str | None = None) -> AdminResult:
        capsys.readouterr()
        code = main(["admin", *credential_flags(scheduler, tenant, token), *args])
        out, err = capsys.readouterr()
        return AdminResult(code, out, err)

    return run


async def admin_process(scheduler: Any, *args: str, tenant: str | None = None, token: str | None = None) -> AdminResult:
    """The installed ``fairpool admin`` console script (for trio tests, which cannot nest ``main``'s trio.run)."""
    done = await trio.run_process([*fairpool_command(), "admin", *credential_flags(scheduler, tenant, token), *args],
                                  capture_stdout=True, capture_stderr=True, check=False)
    return AdminResult(done.returncode, done.stdout.decode(), done.stderr.decode())


def add_token(admin: Callable[..., AdminResult], tenant: str, *flags: str) -> str:
    issued = admin("--json", "tenants", "add", tenant, *flags).json()
    assert set(issued) == {"tenant", "token"} and issued["tenant"] == tenant
    return str(issued["token"])


@pytest.fixture
def clusters(scheduler) -> Iterator[Callable[..., SharedJobCluster]]:
    """``clusters(tenant, token)``: token clusters of ``double``, closed without waiting at the end."""
    opened: list[SharedJobCluster] = []

    def open_cluster(tenant: str, token: str, computation: Callable[..., Any] = double) -> SharedJobCluster:
        cluster = SharedJobCluster(computation, scheduler=scheduler.address, tenant=tenant, token=token)
        opened.append(cluster)
        return cluster

    yield open_cluster
    for cluster in opened:
        cluster.close(timeout=10, terminate=True)


def job_uids(admin: Callable[..., AdminResult], **credential: str) -> set[str]:
    return {job["uid"] for job in admin("--json", "jobs", **credential).json()}


# --- issuing and using tokens ------------------------------------------------------------------


def test_tenants_add_prints_the_token_once_with_a_warning_to_keep_it(admin):
    result = admin("tenants", "add", "alice")
    assert result.code == 0, result.err
    token = next(line.split()[-1] for line in result.out.splitlines() if line.startswith("token:"))
    assert token.startswith("fpt_") and "shown only this once" in result.out
    assert admin("--json", "tenants", "show", "alice").json()["token"] is True
    assert token not in admin("--json", "tenants").out  # never shown again


def test_a_token_runs_jobs_for_its_tenant_with_no_secret_file(admin, clusters, start_node):
    token = add_token(admin, "alice")
    start_node(cpus=2)
    cluster = clusters("alice", token)
    jobs = [cluster.submit(i) for i in range(4)]
    assert [job.result(timeout=60) for job in jobs] == [0, 2, 4, 6]
    assert {j["tenant"] for j in admin("--json", "jobs").json() if j["cluster_id"] == cluster.cluster_id} <= {"alice"}


def test_admin_cli_with_a_token_lists_only_the_tenants_own_jobs(admin, clusters):
    alice, bob = add_token(admin, "alice"), add_token(admin, "bob")
    mine = clusters("alice", alice).submit(1)
    theirs = clusters("bob", bob).submit(2)
    wait_for(lambda: job_uids(admin) >= {mine.uid, theirs.uid})
    assert job_uids(admin, tenant="alice", token=alice) == {mine.uid}
    listed = admin("--json", "jobs", "--tenant", "bob", tenant="alice", token=alice).json()  # a filter cannot widen it
    assert [job["uid"] for job in listed] == [mine.uid]
    assert admin("--json", "why", mine.uid, tenant="alice", token=alice).json()["uid"] == mine.uid


def test_the_secret_is_refused_for_tenant_clients_once_a_token_is_issued(admin, scheduler):
    with SharedJobCluster(double, scheduler=scheduler.address, tenant="carol",
                          secret_file=str(scheduler.secret_file)) as before:
        assert before.cluster_id
    add_token(admin, "alice")
    with pytest.raises(SchedulerConnectionError, match="issues tenant tokens"):
        SharedJobCluster(double, scheduler=scheduler.address, tenant="carol", secret_file=str(scheduler.secret_file))
    result = admin("jobs", "--json", tenant=None)
    assert result.code == 0  # the secret stays the admin credential
    secret_tenant = main(["admin", "--scheduler", scheduler.address, "--secret-file", str(scheduler.secret_file),
                          "--tenant", "carol", "jobs"])
    assert secret_tenant == 1


def test_a_wrong_token_and_an_unknown_tenant_get_the_same_answer(admin, scheduler):
    add_token(admin, "alice")
    errors = []
    for tenant in ("alice", "nobody"):
        with pytest.raises(SchedulerConnectionError) as caught:
            SharedJobCluster(double, scheduler=scheduler.address, tenant=tenant, token=new_token())
        errors.append(str(caught.value))
    assert errors[0] == errors[1] and WRONG_TOKEN in errors[0]
    lines = [admin("jobs", tenant=tenant, token=new_token()).error_line() for tenant in ("alice", "nobody")]
    assert WRONG_TOKEN in lines[0] and lines[0].replace("'alice'", "T") == lines[1].replace("'nobody'", "T")


def test_a_token_outlives_a_scheduler_kill_9_and_restart(admin, scheduler, clusters):
    token = add_token(admin, "alice")  # its reply came once the record was on disk
    scheduler.restart(kill=True)
    assert admin("--json", "jobs", tenant="alice", token=token).json() == []
    cluster = clusters("alice", token)
    job = cluster.submit(3)
    wait_for(lambda: job.uid in job_uids(admin, tenant="alice", token=token))
    with pytest.raises(SchedulerConnectionError, match="issues tenant tokens"):
        SharedJobCluster(double, scheduler=scheduler.address, tenant="bob", secret_file=str(scheduler.secret_file))


# --- revoking ------------------------------------------------------------------------------------


async def connect_as(scheduler: Any, tenant: str, token: str) -> Any:
    return await open_connection(Address.parse(scheduler.address), b"", role="client", tenant=tenant,
                                 name="probe", auth="token", token=token)


async def closed_after_an_error(stream: Any) -> list[str]:
    """What the scheduler said before hanging up (fails if it does not hang up within the deadline)."""
    said: list[str] = []
    with trio.fail_after(20):
        try:
            while True:
                said += [m.reason for m in await stream.receive() if isinstance(m, Error)]
        except ConnectionClosed:
            return said


async def test_rotate_refuses_the_old_token_and_closes_its_connections(scheduler):
    first = await admin_process(scheduler, "--json", "tenants", "add", "alice")
    old = first.json()["token"]
    stream = await connect_as(scheduler, "alice", old)
    rotated = await admin_process(scheduler, "tenants", "add", "alice", "--rotate")
    assert rotated.code == 0 and "old token no longer works" in rotated.out, rotated.err
    new = next(line.split()[-1] for line in rotated.out.splitlines() if line.startswith("token:"))
    assert await closed_after_an_error(stream) == ["tenant 'alice' has a new token: connect with that one"]
    with pytest.raises(AuthError, match=WRONG_TOKEN):
        await connect_as(scheduler, "alice", old)
    await (await connect_as(scheduler, "alice", new)).aclose()


async def test_adding_a_token_again_without_rotate_is_refused_and_the_old_one_works(scheduler):
    token = (await admin_process(scheduler, "--json", "tenants", "add", "alice")).json()["token"]
    again = await admin_process(scheduler, "tenants", "add", "alice")
    assert again.code == 1 and again.out == "" and "has a token already" in again.error_line()
    await (await connect_as(scheduler, "alice", token)).aclose()


async def test_remove_revokes_the_token_and_closes_its_connections(scheduler):
    token = (await admin_process(scheduler, "--json", "tenants", "add", "alice")).json()["token"]
    bob = (await admin_process(scheduler, "--json", "tenants", "add", "bob")).json()["token"]
    stream = await connect_as(scheduler, "alice", token)
    bystander = await connect_as(scheduler, "bob", bob)
    removed = await admin_process(scheduler, "--json", "tenants", "remove", "alice")
    assert removed.json() == {"tenant": "alice", "removed": True, "token_revoked": True}
    assert await closed_after_an_error(stream) == ["tenant 'alice' was removed: its token no longer works"]
    with pytest.raises(AuthError, match=WRONG_TOKEN):
        await connect_as(scheduler, "alice", token)
    creds = resolve_credentials(scheduler=scheduler.address, tenant="bob", token=bob)
    assert await request_async(creds, "jobs.list") == []  # bob's token and connections are untouched
    await bystander.aclose()


# --- isolation ---------------------------------------------------------------------------------


@pytest.fixture
def two_tenants(admin, clusters) -> tuple[dict[str, Any], dict[str, Any]]:
    """alice and bob, each with a token and a cluster of two QUEUED jobs (no node)."""
    tenants = []
    for name in ("alice", "bob"):
        token = add_token(admin, name)
        cluster = clusters(name, token)
        jobs = [cluster.submit(i) for i in range(2)]
        tenants.append({"name": name, "token": token, "cluster": cluster, "uids": [j.uid for j in jobs]})
    wait_for(lambda: len(job_uids(admin)) == 4)
    return tenants[0], tenants[1]


def same_line(admin: Callable[..., AdminResult], bob: dict[str, Any], verb: list[str], theirs: str, missing: str) -> str:
    foreign = admin(*verb, theirs, tenant="bob", token=bob["token"])
    nothing = admin(*verb, missing, tenant="bob", token=bob["token"])
    assert foreign.code == nothing.code == 1 and foreign.out == nothing.out == ""
    assert foreign.error_line().replace(theirs, "ID") == nothing.error_line().replace(missing, "ID")
    return foreign.error_line()


@pytest.mark.parametrize("verb", [["jobs", "show"], ["why"], ["jobs", "cancel"]])
def test_another_tenants_job_is_not_found_through_the_admin_cli(admin, two_tenants, verb):
    alice, bob = two_tenants
    missing = alice["cluster"].cluster_id[::-1] + ".0"
    assert "no such job" in same_line(admin, bob, verb, alice["uids"][0], missing)
    statuses = {j["uid"]: j["status"] for j in admin("--json", "jobs").json()}
    assert [statuses[u] for u in alice["uids"] + bob["uids"]] == ["QUEUED"] * 4


def test_a_tenant_lists_only_its_own_jobs(admin, two_tenants):
    alice, bob = two_tenants
    assert job_uids(admin, tenant="bob", token=bob["token"]) == set(bob["uids"])
    by_cluster = admin("--json", "jobs", "--cluster", alice["cluster"].cluster_id, tenant="bob", token=bob["token"])
    assert by_cluster.json() == []


def test_a_tenant_cannot_reattach_to_another_tenants_cluster(admin, scheduler, two_tenants):
    alice, bob = two_tenants
    missing = alice["cluster"].cluster_id[::-1]
    errors = []
    for cluster_id in (alice["cluster"].cluster_id, missing):
        with pytest.raises(ClusterNotFound) as caught:
            SharedJobCluster.reattach(cluster_id, scheduler=scheduler.address, tenant="bob", token=bob["token"])
        errors.append(str(caught.value).replace(cluster_id, "ID"))
    assert errors[0] == errors[1]
    assert job_uids(admin, tenant="alice", token=alice["token"]) == set(alice["uids"])


def test_a_tenant_cannot_recover_another_tenants_jobs(admin, scheduler, two_tenants):
    alice, bob = two_tenants
    missing = alice["cluster"].cluster_id[::-1]
    errors = []
    for cluster_id in (alice["cluster"].cluster_id, missing):
        with pytest.raises(ClusterNotFound) as caught:
            recover_jobs(cluster_id, scheduler=scheduler.address, tenant="bob", token=bob["token"], timeout=5)
        errors.append(str(caught.value).replace(cluster_id, "ID"))
    assert errors[0] == errors[1]
    statuses = {j["uid"]: j["status"] for j in admin("--json", "jobs").json()}
    assert [statuses[u] for u in alice["uids"]] == ["QUEUED", "QUEUED"]


def test_a_tenant_cannot_cancel_another_tenants_jobs_through_its_cluster(admin, scheduler, two_tenants):
    alice, bob = two_tenants
    creds = resolve_credentials(scheduler=scheduler.address, tenant="bob", token=bob["token"])
    reply = trio.run(request_async, creds, "jobs.cancel", {"uids": [*alice["uids"], bob["uids"][0]]})
    assert reply == {"cancelled": [bob["uids"][0]], "already_ended": [], "not_found": alice["uids"]}
    statuses = {j["uid"]: j["status"] for j in admin("--json", "jobs").json()}
    assert [statuses[u] for u in alice["uids"]] == ["QUEUED", "QUEUED"]
    assert statuses[bob["uids"][1]] == "QUEUED"


# --- admin verbs need the admin credential ----------------------------------------------------------


def test_admin_verbs_with_a_tenant_token_exit_1_and_change_nothing(admin, start_node, scheduler):
    token = add_token(admin, "alice")
    admin("tenants", "set", "alice", "--weight", "2")
    start_node(cpus=1, name="n1")
    wait_for(lambda: any(n["name"] == "n1" and n["state"] == "up" for n in admin("--json", "nodes").json()))
    for verb in (["nodes", "drain", "n1"], ["tenants", "set", "alice", "--weight", "9"], ["tenants", "add", "mallory"]):
        result = admin(*verb, tenant="alice", token=token)
        assert result.code == 1 and result.out == ""
        assert "needs the admin credential" in result.error_line()
    # The scheduler refuses them too, to a client that asks anyway.
    creds = resolve_credentials(scheduler=scheduler.address, tenant="alice", token=token)
    with pytest.raises(RequestRefused, match="'nodes.drain' needs the admin credential"):
        trio.run(request_async, creds, "nodes.drain", {"name": "n1"})
    assert [n["state"] for n in admin("--json", "nodes").json() if n["name"] == "n1"] == ["up"]
    tenants = {t["name"]: t for t in admin("--json", "tenants").json()}
    assert tenants["alice"]["weight"] == 2 and "mallory" not in tenants


def test_the_token_file_flow_needs_no_secret_file(admin, tmp_path: Path, monkeypatch, scheduler):
    token = add_token(admin, "alice")
    monkeypatch.setenv("FAIRPOOL_SCHEDULER", scheduler.address)
    monkeypatch.setenv("FAIRPOOL_TENANT", "alice")
    monkeypatch.setenv("FAIRPOOL_TOKEN", token)
    assert not (tmp_path / ".fairpool").exists()
    assert main(["admin", "--json", "jobs"]) == 0

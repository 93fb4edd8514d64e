"""End to end: ``fairpool admin`` against real scheduler and node processes.

Most calls run ``fairpool.cli.main`` in the test process (quick); one runs
the installed console script. Jobs that must stay RUNNING wait for a gate
file the test creates; jobs that must stay QUEUED have no node to go to.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from adminresult import AdminResult
from conftest import fairpool_command, wait_for
from jobfunctions import wait_for_gate as hold_until_file

from fairpool import JobStatus, SharedJobCluster
from fairpool.cli import main

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("in_tmp_dir", "no_fairpool_env")]

SPEC_STATUS_KEYS = {"nodes", "queued", "running", "finished", "policy"}
SPEC_NODE_KEYS = {"name", "cpus", "busy", "state"}
SPEC_JOB_KEYS = {"uid", "tenant", "cluster_id", "status", "node"}
SPEC_TENANT_KEYS = {"name", "weight", "running", "queued"}


def wait_for_gate(gate: str) -> str:
    """Run until the test creates ``gate`` (a file), then return."""
    return hold_until_file(gate, timeout=50)


Admin = Callable[..., AdminResult]


@pytest.fixture
def admin(scheduler, capsys) -> Admin:
    """``admin("nodes", "drain", "n1", tenant=None, secret_file=None)`` -> AdminResult."""

    def run(*args: str, tenant: str | None = None, secret_file: Path | None = None) -> AdminResult:
        flags = ["--scheduler", scheduler.address, "--secret-file", str(secret_file or scheduler.secret_file)]
        if tenant is not None:
            flags += ["--tenant", tenant]
        capsys.readouterr()
        code = main(["admin", *flags, *args])
        out, err = capsys.readouterr()
        return AdminResult(code, out, err)

    return run


@pytest.fixture
def clusters(cluster_kwargs) -> Iterator[Callable[..., SharedJobCluster]]:
    """``clusters(tenant="alice", computation=...)``: clusters closed without waiting at the end."""
    opened: list[SharedJobCluster] = []

    def open_cluster(tenant: str = "alice", computation: Callable[..., Any] = wait_for_gate) -> SharedJobCluster:
        cluster = SharedJobCluster(computation, tenant=tenant, **cluster_kwargs)
        opened.append(cluster)
        return cluster

    yield open_cluster
    for cluster in opened:
        cluster.close(timeout=10, terminate=True)


def jobs_by_uid(admin: Admin, *args: str, tenant: str | None = None) -> dict[str, dict[str, Any]]:
    return {job["uid"]: job for job in admin("--json", "jobs", *args, tenant=tenant).json()}


def node_state(admin: Admin, name: str) -> str:
    return {n["name"]: n["state"] for n in admin("--json", "nodes").json()}.get(name, "")


# --- reads -----------------------------------------------------------------------------------


def test_status_json_from_the_console_script_has_the_spec_keys(scheduler, start_node, admin):
    start_node(cpus=2, name="n1")
    wait_for(lambda: node_state(admin, "n1") == "up")
    done = subprocess.run([*fairpool_command(), "admin", "--scheduler", scheduler.address, "--secret-file",
                           str(scheduler.secret_file), "status", "--json"],
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert SPEC_STATUS_KEYS <= status.keys()
    assert status["nodes"] == 1 and status["policy"] == "fifo"


def test_nodes_json_lists_each_node_with_the_spec_keys(start_node, admin):
    start_node(cpus=2, name="n1")
    nodes = wait_for(lambda: admin("--json", "nodes").json())
    assert len(nodes) == 1 and SPEC_NODE_KEYS <= nodes[0].keys()
    assert (nodes[0]["name"], nodes[0]["cpus"], nodes[0]["busy"], nodes[0]["state"]) == ("n1", 2, 0, "up")


def test_jobs_json_has_the_spec_keys_and_filters_narrow_it(admin, clusters):
    alice, bob = clusters("alice"), clusters("bob")
    alice_jobs = [alice.submit("never") for _ in range(2)]
    bob_job = bob.submit("never")
    everything = wait_for(lambda: (jobs := jobs_by_uid(admin)) and len(jobs) == 3 and jobs)
    assert all(SPEC_JOB_KEYS <= job.keys() and job["status"] == "QUEUED" for job in everything.values())
    assert set(jobs_by_uid(admin, "--tenant", "alice")) == {j.uid for j in alice_jobs}
    assert set(jobs_by_uid(admin, "list", "--cluster", bob.cluster_id)) == {bob_job.uid}
    assert len(jobs_by_uid(admin, "list", "--status", "queued", "--limit", "2")) == 2
    assert jobs_by_uid(admin, "--status", "FINISHED") == {}


def test_jobs_table_has_a_row_per_job(admin, clusters):
    cluster = clusters("alice")
    job = cluster.submit("never")
    wait_for(lambda: job.uid in jobs_by_uid(admin))
    lines = admin("jobs").out.splitlines()
    assert lines[0].split()[:5] == ["UID", "TENANT", "CLUSTER", "STATUS", "NODE"]
    assert lines[1].split()[:4] == [job.uid, "alice", cluster.cluster_id, "QUEUED"]


def test_jobs_show_of_an_unknown_uid_exits_1_with_one_line(admin):
    result = admin("jobs", "show", "no-such-uid")
    assert result.code == 1 and result.out == ""
    assert result.error_line() == "fairpool admin jobs show: no such job 'no-such-uid'"


def test_why_explains_a_queued_job(admin, clusters):
    job = clusters("alice").submit("never")
    wait_for(lambda: job.uid in jobs_by_uid(admin))
    why = admin("--json", "why", job.uid).json()
    assert why["status"] == "QUEUED" and job.uid in why["explanation"] and why["rank"] == 1
    assert admin("why", job.uid).out.strip() == why["explanation"]


def test_tenants_json_has_the_spec_keys(admin, clusters):
    job = clusters("alice").submit("never")
    wait_for(lambda: job.uid in jobs_by_uid(admin))
    tenants = {t["name"]: t for t in admin("--json", "tenants").json()}
    assert SPEC_TENANT_KEYS <= tenants["alice"].keys() and tenants["alice"]["queued"] == 1
    assert admin("--json", "tenants", "show", "alice").json() == tenants["alice"]


# --- commands --------------------------------------------------------------------------------


def test_jobs_cancel_cancels_a_queued_job(admin, clusters):
    cluster = clusters("alice")
    doomed, kept = cluster.submit("never"), cluster.submit("never")
    wait_for(lambda: len(jobs_by_uid(admin)) == 2)
    assert admin("--json", "jobs", "cancel", doomed.uid).json() == {"cancelled": [doomed.uid], "already_ended": [],
                                                                     "not_found": []}
    wait_for(lambda: doomed.status is JobStatus.CANCELLED)
    assert admin("--json", "jobs", "show", kept.uid).json()["status"] == "QUEUED"


def test_drained_node_finishes_its_job_takes_no_new_ones_until_undrained(tmp_path, start_node, admin, clusters):
    start_node(cpus=1, name="n1")
    wait_for(lambda: node_state(admin, "n1") == "up")
    cluster = clusters("alice")
    gate = tmp_path / "gate"
    running = cluster.submit(str(gate))
    wait_for(lambda: jobs_by_uid(admin).get(running.uid, {}).get("status") == "RUNNING")

    assert admin("--json", "nodes", "drain", "n1").json()["state"] == "draining"
    waiting = cluster.submit(str(gate))  # the gate opens below: it would finish at once if it ran
    wait_for(lambda: waiting.uid in jobs_by_uid(admin))
    gate.touch()
    assert running.result(timeout=30) == "released" and running.node == "n1"
    wait_for(lambda: node_state(admin, "n1") == "drained")
    held = jobs_by_uid(admin)[waiting.uid]
    assert (held["status"], held["node"]) == ("QUEUED", "")  # a free CPU, and still not given work

    assert admin("--json", "nodes", "undrain", "n1").json()["state"] == "up"
    assert waiting.result(timeout=30) == "released" and waiting.node == "n1"


def test_draining_an_unknown_node_exits_1(admin):
    result = admin("nodes", "drain", "nowhere")
    assert result.code == 1
    assert result.error_line() == "fairpool admin nodes drain: no such node 'nowhere'"


def test_policy_set_switches_live_and_back(admin):
    assert admin("--json", "policy").json()["policy"] == "fifo"
    assert admin("--json", "policy", "set", "fair-share").json() == {"policy": "fair-share"}
    assert admin("--json", "policy", "show").json()["policy"] == "fair-share"
    assert admin("--json", "status").json()["policy"] == "fair-share"
    assert admin("policy", "set", "fifo").code == 0
    assert admin("--json", "policy").json()["policy"] == "fifo"


def test_unknown_policy_exits_1_and_changes_nothing(admin):
    admin("policy", "set", "fair-share")
    result = admin("policy", "set", "no-such-policy")
    assert result.code == 1 and "unknown policy 'no-such-policy'" in result.error_line()
    assert admin("--json", "policy").json()["policy"] == "fair-share"


def test_policy_reload_reads_the_policy_file_again(scheduler, admin, tmp_path):
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text('policy = "fair-share"\n[tenants.alice]\nweight = 2\n')
    scheduler.stop()
    scheduler.args += ["--policy-file", str(policy_file)]
    scheduler.start()
    shown = admin("--json", "policy").json()
    assert shown["policy"] == "fair-share" and shown["tenants"]["alice"]["weight"] == 2
    policy_file.write_text('policy = "fifo"\n[tenants.alice]\nweight = 3\n')
    assert admin("--json", "policy", "reload").json() == {"policy": "fifo", "tenants": ["alice"]}
    assert admin("--json", "policy").json()["tenants"]["alice"]["weight"] == 3


def test_tenants_add_prints_the_token_and_applies_the_settings(admin):
    issued = admin("--json", "tenants", "add", "carol", "--weight", "2").json()
    assert set(issued) == {"tenant", "token"} and issued["tenant"] == "carol" and issued["token"].startswith("fpt_")
    carol = admin("--json", "tenants", "show", "carol").json()
    assert (carol["weight"], carol["token"]) == (2, True)


def test_journal_compact_replies_with_sizes_and_inspect_reads_the_journal(scheduler, admin, clusters):
    job = clusters("alice").submit("never")
    wait_for(lambda: job.uid in jobs_by_uid(admin))
    sizes = admin("--json", "journal", "compact").json()
    assert sizes["bytes_after"] > 0 and set(sizes) == {"bytes_before", "bytes_after"}
    inspected = admin("--json", "journal", "inspect", "--state-dir", str(scheduler.state_dir)).json()
    assert [job.uid] in [r.get("uids") for r in inspected["records"] if r["kind"] == "jobs-queued"]


# --- credentials -----------------------------------------------------------------------------


def test_tenant_credential_sees_only_its_own_jobs(admin, clusters):
    alice, bob = clusters("alice"), clusters("bob")
    mine = alice.submit("never")
    theirs = bob.submit("never")
    wait_for(lambda: len(jobs_by_uid(admin)) == 2)
    assert set(jobs_by_uid(admin, tenant="alice")) == {mine.uid}
    assert set(jobs_by_uid(admin, "--tenant", "bob", tenant="alice")) == {mine.uid}  # the filter cannot widen it
    result = admin("jobs", "show", theirs.uid, tenant="alice")
    assert result.code == 1 and result.error_line() == f"fairpool admin jobs show: no such job '{theirs.uid}'"
    assert admin("jobs", "cancel", theirs.uid, tenant="alice").code == 1
    assert admin("--json", "jobs", "show", theirs.uid).json()["status"] == "QUEUED"


def test_tenant_credential_cannot_drain_a_node(start_node, admin):
    start_node(cpus=1, name="n1")
    wait_for(lambda: node_state(admin, "n1") == "up")
    result = admin("nodes", "drain", "n1", tenant="alice")
    assert result.code == 1 and result.out == ""
    assert "'nodes.drain' needs the admin credential" in result.error_line()
    assert node_state(admin, "n1") == "up"


def test_wrong_secret_exits_1_with_one_line(admin, tmp_path):
    wrong = tmp_path / "wrong-secret"
    wrong.write_text("not the cluster secret\n")
    result = admin("status", secret_file=wrong)
    assert result.code == 1 and result.out == ""
    assert "wrong secret" in result.error_line()

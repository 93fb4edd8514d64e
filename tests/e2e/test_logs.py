"""The daemons' logs, end to end: JSON lines off a terminal, job fields on job lines, no credential anywhere.

A real scheduler and node (stderr to files, so JSON by default, at log level
debug, where the scheduler logs each step of each job) run a client's jobs:
some that finish, one that kills its worker, one cancelled while it runs.
Every line either daemon wrote must parse as JSON; every line about a job
names the job, its tenant and its node. Then, with a tenant token issued,
neither the cluster secret nor the token (nor a wrong token a client tried)
appears in anything the daemons, the admin command or the client printed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from conftest import Daemon, SchedulerProcess, run_admin, wait_for

from fairpool import JobStatus, SharedJobCluster

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("in_tmp_dir")]  # recover files land there

TENANT = "alice"


def compute(n):
    if n == "crash":
        import os

        os._exit(3)  # the worker dies under the job
    if n == "hang":
        import time

        time.sleep(300)
    return n * 2


def records(daemon: Daemon) -> list[dict[str, Any]]:
    """Every line the daemon wrote to stderr, parsed (a line that is not JSON fails the test)."""
    lines = [line for line in daemon.stderr_path.read_text().splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"{daemon.label} wrote a line that is not JSON: {line!r}")
    return parsed


def run_jobs(cluster: SharedJobCluster) -> None:
    """Jobs that finish, one whose worker dies, one cancelled while it runs."""
    assert [job.result() for job in [cluster.submit(i) for i in range(4)]] == [0, 2, 4, 6]
    crash = cluster.submit("crash")
    assert crash.exception(timeout=60) is not None and crash.status == JobStatus.FAILED
    hang = cluster.submit("hang")
    wait_for(lambda: hang.status == JobStatus.RUNNING, message="the hanging job runs")
    cluster.cancel(hang)
    wait_for(lambda: hang.status == JobStatus.CANCELLED, message="the hanging job is cancelled")


def stop_all(scheduler: SchedulerProcess, node: Daemon) -> None:
    """SIGTERM both: their logs are complete once they have exited."""
    assert node.stop() == 0
    assert scheduler.stop() == 0


def test_every_log_line_is_json_and_job_lines_name_job_tenant_and_node(
        scheduler: SchedulerProcess, start_node: Callable[..., Daemon], cluster_kwargs: dict[str, str]) -> None:
    node = start_node(cpus=1, name="n1")
    with SharedJobCluster(compute, tenant=TENANT, **cluster_kwargs) as cluster:
        wait_for(lambda: cluster.nodes(), message="the node joined")
        run_jobs(cluster)
        uids = {job.uid for job in cluster.jobs()}
    stop_all(scheduler, node)

    scheduler_records, node_records = records(scheduler), records(node)
    for record in scheduler_records + node_records:
        assert {"timestamp", "level", "event", "logger"} <= record.keys(), record
    job_lines = [r for r in scheduler_records + node_records if "job" in r]
    for record in job_lines:
        assert record["job"] in uids, record
        assert record.get("tenant") == TENANT, f"a job line without its tenant: {record}"
        expected_node = "" if record["event"] == "job queued" else "n1"  # not placed yet
        assert record.get("node") == expected_node, f"a job line without its node: {record}"
    scheduler_events = {r["event"] for r in scheduler_records if "job" in r}
    assert {"job queued", "job dispatched", "job ended"} <= scheduler_events
    node_events = {r["event"] for r in node_records if "job" in r}
    assert {"stopping a job", "worker died"} <= node_events
    ended = {r["job"]: r["status"] for r in scheduler_records if r["event"] == "job ended"}
    assert sorted(ended.values()) == ["CANCELLED", "FAILED", "FINISHED", "FINISHED", "FINISHED", "FINISHED"]
    # every line of the node names it, job or not
    assert all(r.get("node") == "n1" for r in node_records if r["logger"] == "fairpool.node")


def test_no_secret_or_token_is_ever_logged(scheduler: SchedulerProcess, start_node: Callable[..., Daemon],
                                           capfd: pytest.CaptureFixture[str],
                                           caplog: pytest.LogCaptureFixture) -> None:
    node = start_node(cpus=1, name="n1")
    admin = run_admin(scheduler, "--json", "tenants", "add", TENANT)
    assert admin.returncode == 0, admin.stderr
    token = json.loads(admin.stdout)["token"]
    wrong = token[:-6] + ("AAAAAA" if not token.endswith("AAAAAA") else "BBBBBB")

    with SharedJobCluster(compute, scheduler=scheduler.address, tenant=TENANT, token=token) as cluster:
        wait_for(lambda: cluster.nodes(), message="the node joined")
        run_jobs(cluster)
    with pytest.raises(Exception):  # noqa: B017 - refused: which exception is the client's business
        with SharedJobCluster(compute, scheduler=scheduler.address, tenant=TENANT, token=wrong) as refused:
            refused.submit(1).result(timeout=30)
    wait_for(lambda: "connection refused" in scheduler.log(), message="the scheduler logged the refusal")
    stop_all(scheduler, node)

    secret = scheduler.secret_file.read_text().strip()
    assert secret and token
    printed = capfd.readouterr()
    outputs = {
        "scheduler log": scheduler.log(),
        "node log": node.log(),
        "admin stderr": admin.stderr,
        "client output": printed.out + printed.err + caplog.text,
    }
    for where, text in outputs.items():
        assert secret not in text, f"the cluster secret is in the {where}"
        assert token not in text and wrong not in text, f"a tenant token is in the {where}"
    assert records(scheduler) and records(node)  # still JSON, every line

"""End to end: what the policy charged the tenants outlives a scheduler killed with -9 (twice:
once replaying the journal's records, once its compacted books)."""

from __future__ import annotations

from typing import Any

import pytest
from adminresult import AdminResult

from fairpool import SharedJobCluster
from fairpool.cli import main

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("in_tmp_dir", "no_fairpool_env")]


def received(scheduler: Any, capsys: pytest.CaptureFixture[str]) -> dict[str, float]:
    capsys.readouterr()
    code = main(["admin", "--scheduler", scheduler.address, "--secret-file", str(scheduler.secret_file),
                 "--json", "tenants"])
    result = AdminResult(code, *capsys.readouterr())
    assert result.code == 0, result.err
    return {view["name"]: view["received"] for view in result.json()}


@pytest.mark.scheduler_config(policy="decayed-usage")
def test_decayed_usage_survives_the_scheduler_killed_twice(scheduler, start_node, cluster_kwargs, capsys):
    def pause(seconds: float) -> float:  # (defined here: sent by value, as a user's function is)
        import time

        time.sleep(seconds)
        return seconds

    start_node(cpus=2, name="n1")
    for tenant, jobs in (("alice", 6), ("bob", 2)):
        with SharedJobCluster(pause, tenant=tenant, **cluster_kwargs) as cluster:
            assert sum(job.result(timeout=60) for job in [cluster.submit(0.2) for _ in range(jobs)]) == pytest.approx(
                0.2 * jobs)
    before = received(scheduler, capsys)
    assert before["alice"] > before["bob"] > 0  # 1.2 s of the pool against 0.4 s: 3 to 1, decayed
    for _ in range(2):
        scheduler.restart(kill=True)  # (back when it listens again)
        assert received(scheduler, capsys) == pytest.approx(before, rel=0.01)

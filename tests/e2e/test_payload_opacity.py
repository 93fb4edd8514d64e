"""SPEC promise 5: the scheduler never unpickles tenant data; only nodes (and the client) do."""

from __future__ import annotations

import os

import pytest

from fairpool import SharedJobCluster

pytestmark = pytest.mark.timeout(90)


def test_scheduler_never_unpickles_functions_arguments_or_results(scheduler, start_node, cluster_kwargs, tmp_path):
    ledger = str(tmp_path / "unpicklers")

    def record(tag):
        # Runs in whichever process unpickles a Canary: it writes down who that was.
        import os as _os

        with open(ledger, "a") as f:
            f.write(f"{tag} {_os.getpid()}\n")
        return Canary(tag, record_on_load=False)

    class Canary:
        def __init__(self, tag, record_on_load=True):
            self.tag = tag
            self.record_on_load = record_on_load

        def __reduce__(self):
            return (record, (self.tag,))

    def compute(canary):
        return Canary("result")

    start_node(cpus=1, name="n1")
    with SharedJobCluster(compute, **cluster_kwargs) as cluster:
        job = cluster.submit(Canary("argument"))
        assert job.result(timeout=60).tag == "result"

    with open(ledger) as f:
        entries = [line.split() for line in f]
    by_tag = {}
    for tag, pid in entries:
        by_tag.setdefault(tag, set()).add(int(pid))
    # The mechanism works: the argument was unpickled on the node, the result in this client.
    assert by_tag["argument"] and os.getpid() not in by_tag["argument"]
    assert by_tag["result"] == {os.getpid()}
    # ...and never in the scheduler process.
    assert all(scheduler.pid not in pids for pids in by_tag.values())

"""A node's backlog of large results, held while the scheduler was away, arrives in frames it accepts.

The pool's frames are limited to 4 MiB here; four results of 1.5 MB each pile up on the node while
the scheduler is down. Sent as one report (6 MB) the scheduler would refuse the frame, drop the
connection, and the node would send the same report on reconnecting, forever: the node splits it.
"""

from __future__ import annotations

import hashlib

import pytest
from conftest import wait_for

from fairpool import JobStatus, SharedJobCluster

FRAME = 4 * 1024 * 1024
RESULT = 1_500_000

pytestmark = [pytest.mark.usefixtures("in_tmp_dir")]


@pytest.mark.scheduler_config(max_frame_size=FRAME, max_payload_size=3 * 1024 * 1024)
def test_results_held_through_a_scheduler_outage_arrive_when_they_exceed_one_frame(
        scheduler, start_node, cluster_kwargs, tmp_path):
    node_config = tmp_path / "node.toml"
    node_config.write_text(f"max_frame_size = {FRAME}\n")
    start_node(cpus=4, name="n1", extra_args=["--config", str(node_config)])
    gate = tmp_path / "gate"
    started = tmp_path / "started"
    started.mkdir()

    def big(i):
        import os
        import time

        open(os.path.join(str(started), str(i)), "w").close()
        while not os.path.exists(str(gate)):
            time.sleep(0.01)
        return bytes([i]) * RESULT

    with SharedJobCluster(big, **cluster_kwargs) as cluster:
        jobs = [cluster.submit(i) for i in range(4)]
        wait_for(lambda: len(list(started.iterdir())) == 4, timeout=60, message="all four jobs running")
        scheduler.kill()  # the results pile up on the node while the scheduler is away
        gate.touch()
        scheduler.start()
        results = [job.result(timeout=90) for job in jobs]
        assert [hashlib.sha256(r).hexdigest() for r in results] == [
            hashlib.sha256(bytes([i]) * RESULT).hexdigest() for i in range(4)]
        assert all(job.status is JobStatus.FINISHED for job in jobs)
    assert "exceeds the limit" not in scheduler.log()

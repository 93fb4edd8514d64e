"""Promise 3 with the payload store: a scheduler killed -9 with jobs queued comes back with their arguments.

The arguments (and the computation) are big enough to live in the store beside
the log, not in its records: what the restarted scheduler dispatches is read
back from there, checked, and every job runs once with its own arguments.
"""

from __future__ import annotations

import hashlib

import pytest
from conftest import wait_for

from fairpool import JobStatus, SharedJobCluster
from fairpool.scheduler.journal import JOURNAL_NAME, read_journal
from fairpool.scheduler.journalrecords import RJobsQueuedRef, payload_refs
from fairpool.scheduler.payloadstore import PAYLOADS_DIR, segment_files

pytestmark = pytest.mark.timeout(150)

JOBS = 30


def digest(blob: bytes, i: int) -> tuple[int, str]:
    import hashlib

    return i, hashlib.sha256(blob).hexdigest()


def argument(i: int) -> bytes:
    return bytes([i % 256]) * 2000 + str(i).encode()  # far over what stays inline in a record


def test_scheduler_killed_with_queued_jobs_runs_them_with_their_stored_arguments(scheduler, start_node,
                                                                                cluster_kwargs):
    with SharedJobCluster(digest, **cluster_kwargs) as cluster:
        jobs = [cluster.submit(argument(i), i) for i in range(JOBS)]
        wait_for(lambda: all(j.status is JobStatus.QUEUED for j in jobs), timeout=30,
                 message="every job acknowledged QUEUED (so in the journal)")
        records = read_journal(scheduler.state_dir / JOURNAL_NAME).records
        stored = [ref for r in records if isinstance(r, RJobsQueuedRef) for ref in payload_refs(r)]
        assert len(stored) == JOBS  # the arguments are in the store, the records name them
        assert segment_files(scheduler.state_dir / PAYLOADS_DIR)
        scheduler.kill()  # -9, no node yet: the jobs exist only on disk now
        scheduler.start()
        start_node(cpus=2, name="after-crash")
        results = [j.result(timeout=90) for j in jobs]
    assert results == [(i, hashlib.sha256(argument(i)).hexdigest()) for i in range(JOBS)]
    assert {j.node for j in jobs} == {"after-crash"}

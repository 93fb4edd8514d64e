"""The recover file's log (fairpool.clients.recover) and the session's adoption of an earlier client's jobs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from fairpool.clients.errors import JobAbandoned, NoRecoverFile
from fairpool.clients.job import Job
from fairpool.clients.reattach import MISSING_REASON, listing
from fairpool.clients.recover import (
    RecoverInfo,
    RecoverLog,
    latest_recover_file,
    read_recover_file,
    read_recover_state,
    write_recover_file,
)
from fairpool.clients.session import ClusterSession
from fairpool.jobstatus import JobStatus
from fairpool.messages import JobResult, JobStarted, JobsUpdate

CID = "c" * 32


def info(cluster_id: str = CID, created: float = 1700000000.0) -> RecoverInfo:
    return RecoverInfo(cluster_id, "127.0.0.1:51350", "alice", "/x/secret", created, name="work",
                       priority=3, resources={"cpus": 2})


def uids(*numbers: int) -> list[str]:
    return [f"{CID}.{n}" for n in numbers]


def test_a_submit_batch_is_logged_as_one_run_of_numbers(tmp_path: Path) -> None:
    log = RecoverLog(CID)
    path = log.create(info(), tmp_path)
    log.sent(1000)
    log.queued(uids(*range(1, 1001)), 1700000001.5, {f"{CID}.7": "seven"})
    log.close()
    lines = path.read_text().splitlines()
    assert json.loads(lines[0])["cluster_id"] == CID
    assert lines[1:] == ["sent 1000", "queued 1700000001.5 1-1000", 'ids {"7": "seven"}']


def test_the_log_reads_back_as_the_jobs_still_pending(tmp_path: Path) -> None:
    log = RecoverLog(CID)
    path = log.create(info(), tmp_path)
    log.sent(6)
    log.queued(uids(1, 2, 3, 5), 10.0, {f"{CID}.2": [1, "two"], f"{CID}.3": object()})  # not JSON: dropped
    log.received(uids(1, 3))
    log.close()
    state = read_recover_state(path)
    assert state.info == info() and state.sent == 6 and state.highest() == 6
    assert state.pending() == [(f"{CID}.2", 10.0, [1, "two"]), (f"{CID}.5", 10.0, None)]


def test_lines_logged_before_the_file_exists_follow_its_header(tmp_path: Path) -> None:
    log = RecoverLog(CID)
    log.received(uids(4))  # a result re-sent while a reattached cluster was opening
    path = log.create(info(), tmp_path)
    log.queued(uids(9), 1.0)
    log.close()
    state = read_recover_state(path)
    assert state.received == {f"{CID}.4"} and list(state.queued) == [9]
    assert read_recover_file(path) == info()  # the header alone, as before


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    path = write_recover_file(info(), tmp_path)
    with open(path, "a") as f:
        f.write("queued 5.0 1-3\nreceived " + f"{CID}.1\nqueued 6.0 4-")
    state = read_recover_state(path)
    assert sorted(state.queued) == [1, 2, 3] and state.received == {f"{CID}.1"}


def test_appending_after_a_torn_line_starts_a_line_of_its_own(tmp_path: Path) -> None:
    path = write_recover_file(info(), tmp_path)
    with open(path, "a") as f:
        f.write("queued 5.0 1-")  # the dead client's last write, cut short
    log = RecoverLog(CID)
    log.attach(path)
    log.received(uids(2))
    log.close()
    assert read_recover_state(path).received == {f"{CID}.2"}


def test_the_latest_recover_file_is_the_one_created_last(tmp_path: Path) -> None:
    newer = write_recover_file(info("b" * 32, created=2000.0), tmp_path)
    write_recover_file(info("a" * 32, created=1000.0), tmp_path)  # written after, created before
    (tmp_path / f"fairpool-{'d' * 32}.recover").write_text("not json\n")  # ignored, with a warning
    assert latest_recover_file(tmp_path).path == newer


def test_no_recover_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NoRecoverFile, match=f"no recover file .* in {tmp_path}"):
        latest_recover_file(tmp_path)


def new_session() -> ClusterSession:
    session = ClusterSession(CID)
    session.adopting = True
    return session


def test_adopted_jobs_are_queued_jobs_and_new_uids_follow_them() -> None:
    session = new_session()
    assert session.adopt([(f"{CID}.3", 5.0, "three"), (f"{CID}.1", 4.0, None), ("other.9", 1.0, None)]) == 2
    assert [(j.uid, j.id, j.status, j.submitted_at) for j in session.jobs()] == [
        (f"{CID}.1", None, JobStatus.QUEUED, 4.0), (f"{CID}.3", "three", JobStatus.QUEUED, 5.0)]
    session.reserve(7)  # the earlier client sent up to .7
    job = Job((1,), {}, time.time())
    session.add(job, b"payload")
    assert job.uid == f"{CID}.8"
    assert session.outstanding == 3


def test_a_reattached_session_takes_on_jobs_the_scheduler_reports() -> None:
    session = new_session()
    session.apply(JobsUpdate([JobStarted(f"{CID}.2", "n1", 1.0)],
                             [JobResult(f"{CID}.4", "FAILED", reason="boom")]))
    two, four = session.jobs()
    assert (two.uid, two.status, two.node) == (f"{CID}.2", JobStatus.RUNNING, "n1")
    assert four.status is JobStatus.FAILED and "boom" in str(four.exception(0))
    assert session.take_acks() is not None  # the result is acknowledged like any other


def test_a_listing_adopts_its_jobs_and_ends_those_the_scheduler_no_longer_holds() -> None:
    session = new_session()
    session.adopt([(f"{CID}.1", 1.0, None), (f"{CID}.2", 2.0, None)])  # from the recover file
    session.apply_listing([(f"{CID}.1", "QUEUED", 1.0), (f"{CID}.5", "RUNNING", 5.0)])
    assert session.settle_missing() == 1
    one, two, five = session.jobs()
    assert one.status is JobStatus.QUEUED and not one.done()
    assert two.status is JobStatus.ABANDONED and two.status_reason == MISSING_REASON
    assert isinstance(two.exception(0), JobAbandoned)
    assert (five.uid, five.submitted_at, five.status) == (f"{CID}.5", 5.0, JobStatus.RUNNING)
    assert session.outstanding == 2


def test_a_jobs_list_reply_reads_as_uid_status_and_submission_time() -> None:
    views = [{"uid": f"{CID}.1", "status": "QUEUED", "submitted_at": 1.5, "node": ""},
             {"uid": f"{CID}.2", "status": "RUNNING"}, {"status": "QUEUED"}, "junk", (f"{CID}.3", "FINISHED", 3)]
    assert listing(views) == [(f"{CID}.1", "QUEUED", 1.5), (f"{CID}.2", "RUNNING", 0.0), (f"{CID}.3", "FINISHED", 3.0)]
    assert listing({"not": "a list"}) == []

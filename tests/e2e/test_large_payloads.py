"""End to end: large arguments and results travel out of band, and oversize ones fail clearly.

A bytes-like object that pickles its data as a ``pickle.PickleBuffer`` (as a
numpy array does) reaches the job as a view of the received payload and comes
back to the client the same way. An argument over the scheduler's
``max_payload_size`` is refused by ``submit`` itself, naming its size and the
limit; a result over it fails its job on the node, saying so, and the node's
connection carries on.
"""

from __future__ import annotations

import pickle

import pytest

from fairpool import JobStatus, SharedJobCluster
from fairpool.clients.errors import ArgumentsError

pytestmark = pytest.mark.timeout(90)

LIMIT = 1_000_000
BIG = 3 * LIMIT


@pytest.fixture(autouse=True)
def in_tmp_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


class Blob:
    """Bytes that pickle out of band under protocol 5, as a numpy array does."""

    def __init__(self, data):
        self.data = data

    def __reduce_ex__(self, protocol):
        if protocol >= 5:
            return Blob, (pickle.PickleBuffer(self.data),)
        return Blob, (bytes(self.data),)


def blob(size: int) -> Blob:
    return Blob(bytearray(range(256)) * (size // 256))


def inspect_and_echo(x):
    """How the argument arrived (a read-only view: out of band), and the argument itself."""
    view = x.data
    return isinstance(view, memoryview) and view.readonly, len(view), x


def make(size):
    return blob(size)


@pytest.mark.scheduler_config(max_payload_size=64 * 1024 * 1024)
def test_a_large_argument_and_result_travel_out_of_band(scheduler, start_node, cluster_kwargs):
    start_node(cpus=1, name="n1")
    sent = blob(8 * 1024 * 1024)
    with SharedJobCluster(inspect_and_echo, **cluster_kwargs) as cluster:
        out_of_band, size, back = cluster.submit(sent).result(timeout=60)
    assert out_of_band, "the job's argument was copied out of its payload, not viewed in place"
    assert size == len(sent.data)
    assert isinstance(back.data, memoryview) and back.data.readonly  # the result came back out of band too
    assert back.data == sent.data


@pytest.mark.scheduler_config(max_payload_size=LIMIT)
def test_an_argument_over_the_schedulers_limit_fails_at_submit_naming_its_size_and_the_limit(
        scheduler, start_node, cluster_kwargs):
    start_node(cpus=1, name="n1")
    with SharedJobCluster(make, **cluster_kwargs) as cluster:
        with pytest.raises(ArgumentsError) as refused:
            cluster.submit(blob(BIG))
        message = str(refused.value)
        assert message.startswith("the job's arguments pickle to ") and f"({LIMIT} bytes)" in message
        assert "max_payload_size" in message
        size = int(message.split()[5])
        assert size > BIG
        assert cluster.jobs() == []  # nothing was registered
        assert len(cluster.submit(1024).result(timeout=60).data) == 1024  # and the cluster carries on


@pytest.mark.scheduler_config(max_payload_size=LIMIT)
def test_a_result_over_the_limit_fails_its_job_and_the_node_stays_connected(scheduler, start_node, cluster_kwargs):
    node = start_node(cpus=1, name="n1")
    with SharedJobCluster(make, **cluster_kwargs) as cluster:
        job = cluster.submit(BIG)
        with pytest.raises(RuntimeError) as raised:
            job.result(timeout=60)
        assert job.status is JobStatus.FAILED
        reason = job.status_reason
        assert reason.startswith("the job's result is ")
        assert reason.endswith(f"bytes, over the scheduler's limit of {LIMIT} bytes (max_payload_size)")
        assert int(reason.split()[4]) > BIG
        # the node failed it (the scheduler, refusing a result, would raise JobFailed): it never left the node
        assert type(raised.value) is RuntimeError and str(raised.value) == reason
        # the node's connection was not broken by it: the next job runs there at once
        after = cluster.submit(1024)
        assert len(after.result(timeout=60).data) == 1024 and after.node == "n1"
    assert "node disconnected" not in node.log() and "scheduler connection lost" not in node.log()


def provisional_then_done(size):
    import fairpool

    fairpool.provisional_result(blob(size))
    return "done"


@pytest.mark.scheduler_config(max_payload_size=64 * 1024 * 1024)
def test_a_large_provisional_result_arrives_out_of_band_too(scheduler, start_node, cluster_kwargs):
    start_node(cpus=1, name="n1")
    size = 2 * 1024 * 1024
    with SharedJobCluster(provisional_then_done, **cluster_kwargs) as cluster:
        job = cluster.submit(size)
        assert job.result(timeout=60) == "done"
    assert isinstance(job.provisional, Blob) and isinstance(job.provisional.data, memoryview)
    assert job.provisional.data == blob(size).data


def echo_with_digest(x):
    import hashlib

    return hashlib.sha256(x.data).hexdigest(), x


def patterned(size: int) -> Blob:
    """Bytes whose every 256-byte block differs: a frame cut, shifted or duplicated on the way shows."""
    return Blob(bytearray(b"".join(i.to_bytes(4, "big") * 64 for i in range(size // 256))))


def test_a_50_mb_argument_and_result_round_trip_intact_while_small_jobs_flow(scheduler, start_node, cluster_kwargs):
    """Large frames on every hop (client, scheduler, node, worker and back, the journal storing both)
    gathered and relayed without being mixed up with the small frames around them."""
    import hashlib

    start_node(cpus=2, name="n1")
    sent = patterned(50 * 1024 * 1024)
    with SharedJobCluster(echo_with_digest, **cluster_kwargs) as cluster:
        small_before = [cluster.submit(Blob(bytearray(b"s%d" % i))) for i in range(20)]
        big = cluster.submit(sent)
        small_after = [cluster.submit(Blob(bytearray(b"t%d" % i))) for i in range(20)]
        digest, back = big.result(timeout=120)
        for i, job in enumerate(small_before):
            assert bytes(job.result(timeout=60)[1].data) == b"s%d" % i
        for i, job in enumerate(small_after):
            assert bytes(job.result(timeout=60)[1].data) == b"t%d" % i
    assert digest == hashlib.sha256(sent.data).hexdigest()  # the job saw every byte sent
    assert len(back.data) == len(sent.data) and back.data == sent.data  # and so did the client, back

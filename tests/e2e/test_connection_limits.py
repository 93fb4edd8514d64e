"""Limits against abuse on a real scheduler: each refusal names the limit, and frees up when it should.

``max_connections_per_peer`` (per IP address, from the first byte),
``max_connections_per_tenant`` (per tenant, once authenticated) and
``max_payload_size`` (jobs, cluster specs and results), as a user of the
client library meets them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from conftest import TEST_SCHEDULER_CONFIG, SchedulerProcess, _register

from fairpool import SharedJobCluster, certs
from fairpool.address import Address
from fairpool.clients.errors import ArgumentsError
from fairpool.handshake import AuthError
from fairpool.messages import Refused
from fairpool.protocol import Connection
from fairpool.secret import read_secret
from fairpool.wire import MessageStream, open_connection

pytestmark = pytest.mark.timeout(120)

PAYLOAD_LIMIT = 64 * 1024


async def admin(address: Address, secret: bytes) -> MessageStream:
    return await open_connection(address, secret, role="admin", name="slot-holder", timeout=20)


@pytest.mark.scheduler_config(max_connections_per_peer=3)
async def test_one_connection_over_the_per_peer_limit_is_refused_with_the_reason(scheduler):
    address, secret = Address.parse(scheduler.address), read_secret(Path(scheduler.secret_file))
    held = [await admin(address, secret) for _ in range(3)]

    raw = await trio.open_tcp_stream(address.host, address.port)  # told why, in place of the hello
    first = Connection().receive_data(await raw.receive_some(65536))
    assert first == [Refused("too many connections from 127.0.0.1 (limit 3)")]
    assert await raw.receive_some(65536) == b""  # and closed
    with pytest.raises(AuthError, match=r"refused by server: too many connections from 127\.0\.0\.1 \(limit 3\)"):
        await open_connection(address, secret, role="admin", timeout=20)

    await held.pop().aclose()  # a slot is given back when its connection ends
    with trio.fail_after(20):
        while True:
            try:
                held.append(await admin(address, secret))
                break
            except AuthError:
                await trio.sleep(0.1)  # the scheduler has not seen the close yet
    for stream in held:
        await stream.aclose()
    assert "too many connections from 127.0.0.1 (limit 3)" in scheduler.log()


async def test_over_the_per_peer_limit_under_tls_the_refusal_comes_inside_tls(tmp_path, request):
    """With TLS the refusal is sent once TLS is up, so that the client can read it."""
    certs.init_ca(tmp_path / "ca")
    server = certs.issue("scheduler", "pool", directory=tmp_path / "ca").files
    admin_files = certs.issue("admin", "root", directory=tmp_path / "ca").files
    config = tmp_path / "scheduler.toml"
    settings = {**TEST_SCHEDULER_CONFIG, "max_connections_per_peer": 1}
    config.write_text("".join(f"{k} = {v!r}\n" for k, v in settings.items())
                      + f'tls = {{ ca = "{server.ca}", cert = "{server.cert}", key = "{server.key}" }}\n')
    scheduler = SchedulerProcess(tmp_path / "sched", log_dir=tmp_path, extra_args=["--config", str(config)])
    _register(request, scheduler)
    scheduler.start()
    try:
        address = Address.parse(scheduler.address)
        held = await open_connection(address, b"", role="admin", auth="tls", tls=admin_files, timeout=20)
        with pytest.raises(AuthError, match=r"too many connections from 127\.0\.0\.1 \(limit 1\)"):
            await open_connection(address, b"", role="admin", auth="tls", tls=admin_files, timeout=20)
        await held.aclose()
    finally:
        scheduler.stop()


@pytest.mark.scheduler_config(max_connections_per_tenant=1)
def test_a_tenant_over_its_connection_limit_is_refused_and_others_are_not(scheduler, cluster_kwargs):
    first = SharedJobCluster(lambda: 1, tenant="alice", **cluster_kwargs)
    try:
        with pytest.raises(ConnectionError, match=r"too many connections for tenant 'alice' \(limit 1\)"):
            SharedJobCluster(lambda: 2, tenant="alice", **cluster_kwargs)
        SharedJobCluster(lambda: 3, tenant="bob", **cluster_kwargs).close()
    finally:
        first.close()
    again = SharedJobCluster(lambda: 4, tenant="alice", **cluster_kwargs)  # alice's slot is free again
    again.close()


def _length(data: bytes) -> int:
    return len(data)


def _big_result(n: int) -> bytes:
    return b"r" * n


@pytest.mark.scheduler_config(max_payload_size=PAYLOAD_LIMIT)
def test_payloads_over_the_limit_are_refused_with_the_reason(scheduler, start_node, cluster_kwargs, tmp_path):
    start_node(cpus=1, name="n1")
    with SharedJobCluster(_length, **cluster_kwargs) as cluster:
        small = cluster.submit(b"x" * 100)
        # The scheduler told its limit when the cluster opened: the client refuses at submit.
        with pytest.raises(ArgumentsError, match=r"pickle to \d+ bytes, more than the scheduler's "
                                                 r"max_payload_size \(65536 bytes\)"):
            cluster.submit(b"x" * (2 * PAYLOAD_LIMIT))
        assert small.result(timeout=60) == 100

    with SharedJobCluster(_big_result, **cluster_kwargs) as cluster:
        job = cluster.submit(2 * PAYLOAD_LIMIT)
        with pytest.raises(Exception, match=r"the job's result is \d+ bytes, over the scheduler's limit"):
            job.result(timeout=60)
        assert cluster.submit(10).result(timeout=60) == b"r" * 10  # the cluster goes on

    depend = tmp_path / "big.bin"
    depend.write_bytes(b"d" * (2 * PAYLOAD_LIMIT))
    with pytest.raises(ConnectionError, match=r"its spec \(computation and depends\) is \d+ bytes, over the "
                                              r"scheduler's limit of 65536 bytes \(max_payload_size\)"):
        SharedJobCluster(_length, depends=[str(depend)], **cluster_kwargs)

"""End to end: hostile or broken peers are refused with a logged reason, everyone else is served."""

from __future__ import annotations

import os
import socket
import struct

import msgspec
import pytest

from fairpool import SharedJobCluster
from fairpool.messages import PROTOCOL_VERSION, ClientHello, Refused, ServerHello, decode, encode
from fairpool.protocol import PREAUTH_MAX_FRAME

pytestmark = pytest.mark.timeout(90)


def _connect(address: str) -> socket.socket:
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=20)
    return sock


def _read_frame(sock: socket.socket):
    header = _recv_exactly(sock, 4)
    (length,) = struct.unpack(">I", header)
    return decode(_recv_exactly(sock, length))


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return True
    except ConnectionResetError:
        return True


def _assert_still_serving(cluster_kwargs) -> None:
    with SharedJobCluster(lambda x: x + 1, **cluster_kwargs) as cluster:
        assert cluster.submit(1).result(timeout=60) == 2


@pytest.fixture
def pool(scheduler, start_node, cluster_kwargs):
    start_node(cpus=1, name="n1")
    return cluster_kwargs


def test_wrong_secret_is_refused_with_clear_error(pool, scheduler, tmp_path, wait_for_log):
    wrong = tmp_path / "wrong-secret"
    wrong.write_text("not-the-secret")
    os.chmod(wrong, 0o600)
    with pytest.raises(ConnectionError, match="(?i)secret|refused|authenticat"):
        SharedJobCluster(lambda: 1, scheduler=pool["scheduler"], secret_file=str(wrong))
    wait_for_log(scheduler, "wrong secret")
    _assert_still_serving(pool)


def test_garbage_bytes_are_refused_and_logged(pool, scheduler, wait_for_log):
    sock = _connect(scheduler.address)
    _read_frame(sock)  # the server hello
    sock.sendall(struct.pack(">I", 12) + b"\xc1" * 12)  # 0xc1 is never valid msgpack
    assert _closed_by_peer(sock)
    wait_for_log(scheduler, "malformed message")
    _assert_still_serving(pool)


def test_oversize_frame_is_refused_before_its_body(pool, scheduler, wait_for_log):
    sock = _connect(scheduler.address)
    _read_frame(sock)
    sock.sendall(struct.pack(">I", PREAUTH_MAX_FRAME + 1))  # announce, never send the body
    assert _closed_by_peer(sock)
    wait_for_log(scheduler, "exceeds the limit")
    _assert_still_serving(pool)


def test_wrong_protocol_version_is_refused_with_reason(pool, scheduler, wait_for_log):
    sock = _connect(scheduler.address)
    hello = _read_frame(sock)
    assert isinstance(hello, ServerHello)
    bogus = ClientHello(PROTOCOL_VERSION + 41, "client", os.urandom(32), b"x" * 32, "mallory", "m")
    body = encode(bogus)
    sock.sendall(struct.pack(">I", len(body)) + body)
    answer = _read_frame(sock)
    assert isinstance(answer, Refused)
    assert str(PROTOCOL_VERSION + 41) in answer.reason and "version" in answer.reason
    assert _closed_by_peer(sock)
    wait_for_log(scheduler, "version")
    _assert_still_serving(pool)


def test_replayed_handshake_is_refused(pool, scheduler, wait_for_log):
    """A hello captured from one connection does not authenticate another."""
    from fairpool.handshake import ClientHandshake
    from fairpool.secret import read_secret

    secret = read_secret(pool["secret_file"])
    first = _connect(scheduler.address)
    hello = _read_frame(first)
    captured = ClientHandshake(secret, "client", "alice", "c").respond(hello)
    body = encode(captured)
    first.sendall(struct.pack(">I", len(body)) + body)
    assert _read_frame(first).__class__.__name__ == "ServerAuth"  # the genuine one works
    first.close()

    second = _connect(scheduler.address)
    _read_frame(second)
    second.sendall(struct.pack(">I", len(body)) + body)  # replay
    answer = _read_frame(second)
    assert isinstance(answer, Refused)
    assert _closed_by_peer(second)
    _assert_still_serving(pool)


def test_silent_peer_is_dropped_after_handshake_timeout(scheduler):
    """A connection that never says hello cannot hold a slot forever (the default is 10 s)."""
    sock = _connect(scheduler.address)
    _read_frame(sock)
    sock.settimeout(30)
    assert _closed_by_peer(sock)


def test_control_messages_are_not_pickle():
    """The wire format is msgpack: a pickle opcode stream is rejected, not executed."""
    import pickle

    with pytest.raises(Exception) as info:
        decode(pickle.dumps({"evil": True}))
    assert isinstance(info.value, ValueError | msgspec.DecodeError)

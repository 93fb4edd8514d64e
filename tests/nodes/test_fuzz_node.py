"""Fuzzing the node's handling of what "the scheduler" says: garbage never crashes it or escapes its dir.

Three seams, from the inside out:

* ``_NodeDaemon._handle`` (the node's message handler) takes arbitrary
  messages of every type, messages the scheduler really sends with hostile
  fields (cluster ids like ``../victim``, specs whose depends files are named
  ``/etc/x``, NaN timeouts, unknown uids), and byte-mutated encodings of
  them. It never raises, and it never writes or deletes outside its clusters
  directory; the worker pool is not running, so tasks only queue.
* ``_NodeDaemon._session`` (one connection) over an in-memory stream whose
  other end sends raw garbage, half frames or valid frames, then hangs up:
  the session ends by itself, with nothing but ConnectionClosed or
  ProtocolError inside it (caught there), within a deadline.
* ``ClientHandshake`` (the node's side of the handshake, before
  authentication) only ever raises AuthError on what a fake server says.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import trio
import trio.lowlevel
import trio.testing
from fuzzprofiles import fuzz_settings
from hypothesis import given
from hypothesis import strategies as st
from messagestrategies import ALL_MESSAGES, any_message, mutate

from fairpool.address import Address
from fairpool.clusterspec import ClusterSpec, DependFile, encode_spec
from fairpool.config import NodeConfig
from fairpool.handshake import AuthError, ClientHandshake
from fairpool.messages import (
    PROTOCOL_VERSION,
    CancelTasks,
    ClusterDef,
    Dispatch,
    Heartbeat,
    Message,
    MessageError,
    ReleaseCluster,
    ServerAuth,
    ServerHello,
    Task,
    decode,
    encode,
)
from fairpool.nodes.daemon import _NodeDaemon
from fairpool.protocol import HEADER, encode_frames
from fairpool.wire import MessageStream

SECRET = b"node-fuzz-secret"
HOSTILE_IDS = ("c1", "c2", "../victim", "..", ".", "", "/tmp", "a/b", "victim", "c1\x00x", "clusters", "-rf")
SPECS = (
    encode_spec(ClusterSpec("function", b"\x80\x04N.", files=[DependFile("data.txt", b"hello", 0o644)])),
    encode_spec(ClusterSpec("program", program="run.sh", files=[DependFile("run.sh", b"#!/bin/sh\n", 0o755)])),
    encode_spec(ClusterSpec("function", b"", files=[DependFile("../victim/x", b"owned", 0o777)])),
    encode_spec(ClusterSpec("function", b"", files=[DependFile("/tmp/owned", b"owned", 0o4777)])),
    b"\x93garbage",
    b"",
)
FIELDS = {"cluster_id": HOSTILE_IDS, "uid": ("c1.0", "c1.1", "c2.0", "../victim"), "uids": ("c1.0", "c2.0"),
          "name": ("data.txt", "run.sh", "../victim", "/etc/passwd"), "reason": ("cancelled", "", "shutdown")}
FROM_SCHEDULER = tuple(cls for cls in ALL_MESSAGES if cls in (Dispatch, CancelTasks, ReleaseCluster, Heartbeat))

_float = st.sampled_from([0.0, 0.5, float("nan"), float("inf"), -1.0, 1e308])
_cid = st.sampled_from(HOSTILE_IDS)
HOSTILE_DISPATCH = st.builds(
    Dispatch,
    st.lists(st.builds(ClusterDef, _cid, st.sampled_from(SPECS)), max_size=3),
    st.lists(st.builds(Task, st.sampled_from(FIELDS["uid"]), _cid, st.binary(max_size=16), _float), max_size=3),
)


@st.composite
def scheduler_messages(draw: st.DrawFn) -> list[Message]:
    messages: list[Message] = []
    for _ in range(draw(st.integers(1, 6))):
        source = draw(st.sampled_from(["hostile", "own", "own", "any", "mutated"]))
        if source == "hostile":
            messages.append(draw(st.one_of(HOSTILE_DISPATCH, st.builds(ReleaseCluster, _cid),
                                           st.builds(CancelTasks, st.lists(st.sampled_from(FIELDS["uid"]))))))
            continue
        kinds = FROM_SCHEDULER if source != "any" else ALL_MESSAGES
        message = draw(any_message(kinds=kinds, payloads=SPECS, fields=FIELDS))
        if source == "mutated":
            try:
                message = decode(mutate(draw, encode(message)))
            except MessageError:
                continue
        messages.append(message)
    return messages


def make_node(root: Path) -> _NodeDaemon:
    state = root / "node"
    (state / "clusters").mkdir(parents=True)
    secret = state / "secret"
    secret.write_bytes(SECRET)
    os.chmod(secret, 0o600)
    config = NodeConfig(scheduler=Address("127.0.0.1", 9), name="n1", cpus=2, memory=1 << 30, state_dir=state,
                        secret_file=secret, heartbeat_interval=0.05, heartbeat_timeout=0.5)
    return _NodeDaemon(config, SECRET)


def plant_victims(root: Path) -> dict[Path, bytes]:
    """Files beside and above the clusters directory that no message may touch."""
    victims = {root / "victim" / "keep": b"victim", root / "node" / "keep": b"node's own", root / "keep": b"root"}
    for path, data in victims.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return victims


def outside_clusters(root: Path) -> set[Path]:
    clusters = root / "node" / "clusters"
    return {p for p in root.rglob("*") if clusters not in p.parents and p != clusters}


@fuzz_settings(150)
@given(messages=scheduler_messages())
def test_node_handler_takes_any_message_without_raising_or_leaving_its_directory(messages: list[Message]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        node = make_node(root)
        victims = plant_victims(root)
        before = outside_clusters(root)
        for message in messages:
            node._handle(message)
        assert outside_clusters(root) == before, "the node wrote or deleted outside its clusters directory"
        assert {path: path.read_bytes() for path in victims} == victims
        assert not Path("/tmp/owned").exists()
        # every task handed over is accounted for: queued in the pool, or failed with a reason
        queued = {task.uid for task in node.pool._queue}
        reported = node.held.result_uids()
        for message in messages:
            if isinstance(message, Dispatch):
                for task in message.tasks:
                    assert task.uid in queued or task.uid in reported or node._leaving, f"{task.uid} vanished"


async def _session_with_garbage(root: Path, data: bytes, chunk: int) -> None:
    node = make_node(root)
    ours, theirs = trio.testing.memory_stream_pair()
    stream = MessageStream(ours)

    async def scheduler() -> None:
        await theirs.receive_some(65536)  # the node's NodeReady
        for start in range(0, len(data), chunk):
            await theirs.send_all(data[start:start + chunk])
            await trio.lowlevel.checkpoint()
        await trio.sleep(0.01)
        await theirs.aclose()  # hangs up: the session must notice and end

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(scheduler)
            announced = await node._session(stream, None, Address("127.0.0.1", 9))
    assert announced  # it said NodeReady, then served until the end


@st.composite
def garbage_streams(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["bytes", "frames", "mutated", "valid-then-garbage"]))
    if kind == "bytes":
        return draw(st.binary(min_size=1, max_size=512))
    if kind == "frames":
        return b"".join(HEADER.pack(len(b)) + b for b in draw(st.lists(st.binary(max_size=64), min_size=1,
                                                                         max_size=4)))
    valid = encode_frames(draw(scheduler_messages()))
    if kind == "mutated":
        return mutate(draw, valid)
    return valid + draw(st.binary(min_size=1, max_size=64))


@fuzz_settings(40)
@given(data=garbage_streams(), chunk=st.sampled_from([1, 7, 4096]))
def test_node_session_ends_cleanly_whatever_the_scheduler_sends(data: bytes, chunk: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        trio.run(_session_with_garbage, Path(tmp), data, chunk)


def test_node_session_hears_a_half_frame_then_silence_and_gives_up_after_its_heartbeat_timeout() -> None:
    async def main(root: Path) -> None:
        node = make_node(root)
        ours, theirs = trio.testing.memory_stream_pair()
        async with trio.open_nursery() as nursery:
            async def scheduler() -> None:
                await theirs.receive_some(65536)
                await theirs.send_all(encode_frames([Heartbeat(1.0)]) + HEADER.pack(100) + b"half")
                await trio.sleep_forever()  # then nothing, and never a close

            nursery.start_soon(scheduler)
            with trio.fail_after(5):  # heartbeat_timeout is 0.5 s
                assert await node._session(MessageStream(ours), None, Address("127.0.0.1", 9))
            nursery.cancel_scope.cancel()

    with tempfile.TemporaryDirectory() as tmp:
        trio.run(main, Path(tmp))


# --- the node's side of the handshake -----------------------------------------------------------


@fuzz_settings(200)
@given(first=any_message(words=("scheduler",)), second=any_message(), auth=st.sampled_from(["secret", "tls"]))
def test_node_handshake_refuses_a_fake_server_with_auth_error_only(first: Message, second: Message,
                                                                   auth: str) -> None:
    handshake = ClientHandshake(SECRET, "node", "", "n1", auth=auth)
    try:
        handshake.respond(first)
        handshake.finish(second)
    except AuthError as exc:
        assert str(exc)
    else:  # accepted only what proves the server: TLS did, or it holds the secret (a random MAC never does)
        assert isinstance(first, ServerHello) and first.version == PROTOCOL_VERSION
        assert isinstance(second, ServerAuth) and auth == "tls" and second.mac == b""

"""Fuzzing every message handler of the scheduler, before and after authentication.

After authentication: ``SchedulerState.handle`` gets arbitrary messages of
every type (fields from ``messagestrategies``, strings often naming the
clusters, jobs, nodes and verbs that exist; sometimes byte-mutated
encodings) from two tenants' clients, a stranger tenant, a ready node, a
node that never said NodeReady, an admin and an unknown connection, mixed
with time passing and connections dropping. Whatever arrives, the state

* never raises, and says nothing it could not encode or journal;
* answers a violation with an Error to that peer before closing it, and
  closes nobody else but a node replaced by its own reconnection;
* sends each role only what that role understands;
* keeps its invariants: every job in exactly one place (queued, on a node,
  held for a lost node, or ended), clusters and jobs agreeing, the policy
  charging exactly the jobs on nodes, nothing over ``max_payload_size``;
* keeps tenants apart: one tenant's messages change nothing of another's jobs;
* journals what it did: replaying the journal gives the same jobs and results;
* still serves: a new client and a new node run a job to its result.

Before authentication: ``ServerHandshake.check`` and ``accept_handshake``
(fed raw garbage over an in-memory stream) only ever refuse, with AuthError,
ProtocolError or ConnectionClosed, within the handshake timeout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio
import trio.testing
from fuzzprofiles import fuzz_settings
from hypothesis import given
from hypothesis import strategies as st
from messagestrategies import ALL_MESSAGES, any_message, mutate

from fairpool.handshake import AuthError, CertIdentity, ServerHandshake
from fairpool.messages import (
    CancelTasks,
    ClientHello,
    ClusterClosed,
    ClusterOpened,
    Dispatch,
    Error,
    Heartbeat,
    JobOptions,
    JobProvisional,
    JobResult,
    JobStarted,
    JobSubmit,
    JobsUpdate,
    Message,
    MessageError,
    NodeEvent,
    NodeProgress,
    NodeReady,
    OpenCluster,
    Queued,
    ReleaseCluster,
    Reply,
    Request,
    Submit,
    decode,
    encode,
)
from fairpool.policies.fifo import FifoPolicy
from fairpool.protocol import HEADER, ProtocolError
from fairpool.scheduler.events import Close, Send
from fairpool.scheduler.journalrecords import decode_record, encode_record
from fairpool.scheduler.queries import VERBS
from fairpool.scheduler.replay import replay
from fairpool.scheduler.state import SHELL_VERBS, SchedulerState
from fairpool.tokens import new_token, token_keys
from fairpool.wire import ConnectionClosed, MessageStream, accept_handshake

if TYPE_CHECKING:
    from conftest import Outcome, StateDriver

MAX_PAYLOAD = 64
TIMEOUT = 10.0
WHO = ("alice", "bob", "mallory", "node", "fresh", "admin", "ghost")
ROLE = {"alice": "client", "bob": "client", "mallory": "client", "node": "node", "fresh": "node",
        "admin": "admin", "ghost": "client"}
GHOST = 999_999  # a connection id the state never heard of

WORDS = (
    "c1", "b1", *(f"c1.{i}" for i in range(6)), *(f"b1.{i}" for i in range(4)), "n1", "n2", "n3", "s1", "s2",
    "alice", "bob", "mallory", "FINISHED", "FAILED", "CANCELLED", "RUNNING", "QUEUED", "up", "drained",
    "fifo", "fair-share", "*", *sorted(VERBS), *sorted(SHELL_VERBS),
    "cluster", "cluster_id", "cpus", "limit", "name", "newest", "node", "nodes", "rotate", "status", "tenant",
    "terminate", "uid", "uids", "weight", "tier", "max_running", "max_queued", "parent",
)
PAYLOADS = (b"", b"p", b"x" * MAX_PAYLOAD, b"x" * (MAX_PAYLOAD + 1))
UIDS = ("c1.0", "c1.2", "c1.3", "c1.4", "c1.5", "c1.1", "b1.0", "b1.1", "c1.9")
NODES = ("n1", "n2", "n3")
FIELDS = {
    "uid": UIDS, "uids": UIDS, "held": UIDS, "ref": UIDS,
    "cluster_id": ("c1", "b1", "c1.0"), "node": NODES, "name": NODES, "session": ("s1", "s2", ""),
    "tenant": ("alice", "bob", "mallory", ""), "status": ("FINISHED", "FAILED", "FINISHED", "FAILED", "CANCELLED", "RUNNING"),
    "verb": (*sorted(VERBS), *sorted(SHELL_VERBS)),
}


def _kinds(*names: str) -> tuple[type[Message], ...]:
    """The message classes of these names that exist (by name: a message added later joins in)."""
    return tuple(cls for cls in ALL_MESSAGES if cls.__name__ in names)


# What each role sends (most of the time: the rest is any message at all).
ROLE_KINDS: dict[str, tuple[type[Message], ...]] = {
    "client": _kinds("OpenCluster", "Submit", "AckResults", "CancelJobs", "CloseCluster", "Request", "Heartbeat"),
    "node": _kinds("NodeReady", "NodeProgress", "NodeDrain", "Heartbeat"),
    "admin": _kinds("Request", "Heartbeat"),
}
# What each role's peer is ever sent (anything else would puzzle it).
HEARS: dict[str, tuple[type[Message], ...]] = {
    "client": (ClusterOpened, Queued, JobsUpdate, ClusterClosed, Error, NodeEvent, Reply),
    "node": (Dispatch, ReleaseCluster, CancelTasks, Heartbeat, Error),
    "admin": (Reply, Error),
}


# --- a state worth protecting ------------------------------------------------------------


def busy(make_driver: Any) -> tuple[StateDriver, dict[str, int]]:
    """Two tenants' clusters with queued, running, finished and orphaned jobs; every kind of peer."""
    d: StateDriver = make_driver(heartbeat_timeout=TIMEOUT)
    d.state.max_payload = MAX_PAYLOAD
    conns = {"alice": d.open_cluster("c1", "alice"), "bob": d.open_cluster("b1", "bob", reentrant=True)}
    n1, _ = d.node("n1", cpus=2, session="s1")
    d.submit(conns["alice"], "c1", 6)  # c1.0-c1.3 on n1 (it prefetches), c1.4-5 queued
    d.start(n1, "c1.0")
    d.finish(n1, "c1.1")  # a result waiting for its acknowledgement
    n2, _ = d.node("n2", cpus=1, session="s2")  # takes c1.4 and c1.5
    d.start(n2, "c1.4")
    d.disconnect(n2)  # n2's jobs are held for it
    d.submit(conns["bob"], "b1", 4)  # all queued: no room anywhere
    conns.update(node=n1, fresh=d.node_conn("n3"), admin=d.connect("admin", "", "operator"),
                 mallory=d.client("mallory"), ghost=GHOST)
    return d, conns


def reconnect(d: StateDriver, conns: dict[str, int], who: str) -> None:
    """A peer the state closed comes back, as a real one would."""
    match who:
        case "alice" | "bob":
            conns[who] = d.client(who)
            cid = "c1" if who == "alice" else "b1"
            d.send(conns[who], OpenCluster(cid, "again", b"spec:" + cid.encode()))
        case "mallory":
            conns[who] = d.client("mallory")
        case "node":
            conns[who] = d.node("n1", cpus=2, session="s1")[0]
        case "fresh":
            conns[who] = d.node_conn("n3")
        case "admin":
            conns[who] = d.connect("admin", "", "operator")


# --- checks ------------------------------------------------------------------------------


def check_outcome(d: StateDriver, out: Outcome, sender: int | None, roles: dict[int, str]) -> None:
    """What one step told the shell to do is sane (``roles``: who was connected before the step)."""
    errors_to = {i.conn for i in out if isinstance(i, Send) and isinstance(i.message, Error)}
    for instruction in out:
        if isinstance(instruction, Send):
            conn, message = instruction.conn, instruction.message
            encode(message)  # the writer task must be able to send it
            assert conn in d.state.conns or (isinstance(message, Error) and any(
                isinstance(i, Close) and i.conn == conn for i in out)), f"{message!r} to a closed connection {conn}"
            role = roles.get(conn) or d.state.conns[conn].role
            assert isinstance(message, HEARS[role]), f"a {role} is sent {type(message).__name__}"
            if isinstance(message, JobsUpdate):
                tenant = (d.state.conns.get(conn) or _Gone).tenant
                for result in message.results:
                    owner = d.state.jobs.get(result.uid)
                    assert owner is None or owner.tenant == tenant, "another tenant's result"
        elif isinstance(instruction, Close):
            if sender is None:  # time passed: the silent ones are closed
                assert instruction.reason.startswith("no heartbeat"), instruction
            elif instruction.conn == sender:
                assert sender in errors_to, "closed without saying why"
            else:  # a node that reconnected replaces its old connection
                assert roles.get(instruction.conn) == "node", "a step closed a bystander"
    for record in out.persisted():
        decode_record(encode_record(record))  # the journal can take it, and give it back


class _Gone:
    tenant = ""


def check_invariants(state: SchedulerState) -> None:
    order = [job.uid for job in state.policy.order()]
    queued = set(order)
    assert len(order) == len(queued) == len(state.policy), "a job queued twice"
    assert queued <= set(state.jobs), "a queued job the state does not know"
    assigned: dict[str, int] = {}
    for conn, node in state.nodes.items():
        assert conn in state.conns and state.conns[conn].node is node and state.conns[conn].role == "node"
        for uid, job in node.assigned.items():
            assert uid not in assigned and job.node_conn == conn and job.node == node.name
            assert state.jobs.get(uid) is job
            assigned[uid] = conn
    orphaned = {job.uid: name for name, _, jobs in state.orphans.by_node() for job in jobs}
    assert len(orphaned) == len(state.orphans)
    for uid, job in state.jobs.items():
        places = (uid in queued) + (uid in assigned) + (uid in orphaned) + (job.result is not None)
        assert places == 1, f"{uid} is in {places} places"
        cluster = state.clusters.get(job.cluster_id)
        assert cluster is not None and cluster.jobs.get(uid) is job and job.tenant == cluster.tenant
        assert uid.startswith(job.cluster_id + ".")
        assert len(job.payload) <= MAX_PAYLOAD
        if job.result is not None:
            assert job.status.is_final and job.status == job.result.status
            assert len(job.result.payload) <= MAX_PAYLOAD
        elif uid in queued:
            assert not job.status.is_final and job.node_conn is None
        elif uid in orphaned:
            assert job.node_conn is None and job.node == orphaned[uid]
    for cluster in state.clusters.values():
        assert len(cluster.spec) <= MAX_PAYLOAD
        assert all(state.jobs.get(uid) is job for uid, job in cluster.jobs.items())
        if cluster.conn is not None:
            owner = state.conns.get(cluster.conn)
            assert owner is not None and owner.role == "client" and owner.tenant == cluster.tenant
    assert {job.uid for job in state.dispatcher.running()} == set(assigned) | set(orphaned), \
        "the policy charges other jobs than those on nodes"
    stats = state.statistics()
    assert (stats["queued"], stats["running"], stats["nodes"], stats["connections"]) == (
        len(order), len(assigned), len(state.nodes), len(state.conns))


def tenant_view(state: SchedulerState, tenant: str) -> dict[str, Any]:
    return {uid: (j.status, j.result, j.node, j.cancel_requested) for uid, j in state.jobs.items()
            if j.tenant == tenant}


def check_replay(d: StateDriver) -> None:
    """The journal, replayed through its encoding, gives the same jobs, and a sane state."""
    fresh = SchedulerState(FifoPolicy(), heartbeat_timeout=TIMEOUT)
    replay(fresh, [decode_record(encode_record(r)) for r in d.records], d.now)
    check_invariants(fresh)
    assert set(fresh.jobs) == set(d.state.jobs)
    assert {uid: j.result for uid, j in fresh.jobs.items()} == {uid: j.result for uid, j in d.state.jobs.items()}


def check_still_serves(d: StateDriver) -> None:
    """A new tenant's job goes through: queued, dispatched to a new node, its result delivered."""
    carol = d.client("carol")
    opened = d.send(carol, OpenCluster("zz", "z", b"spec")).messages(carol, ClusterOpened)
    assert [m.cluster_id for m in opened] == ["zz"]
    out = d.send(carol, Submit("zz", [JobSubmit("zz.0", b"args")]))
    assert [q.uids for q in out.messages(carol, Queued)] == [["zz.0"]], out
    d.node("zz-node", cpus=1_000_000, session="zz")
    job = d.state.jobs["zz.0"]
    assert job.node_conn is not None, "a new node did not get the new job"
    out = d.send(job.node_conn, NodeProgress([], [JobResult("zz.0", "FINISHED", b"r", node=job.node)]))
    assert [(r.uid, r.status, r.payload) for r in out.results(carol)] == [("zz.0", "FINISHED", b"r")]


# --- the fuzzing --------------------------------------------------------------------------

_uid = st.sampled_from(["c1.0", "c1.2", "c1.3"]) | st.sampled_from(UIDS)  # n1 runs the first three
_float = st.one_of(st.sampled_from([0.0, 1000.0, float("nan"), float("inf"), float("-inf"), -1.0, 1e308]),
                   st.just(float("nan")), st.floats())
_payload = st.sampled_from(PAYLOADS)
_options = st.none() | st.builds(JobOptions, cpus=_float, memory=st.integers(-(2**63), 2**64 - 1),
                                 gpus=st.integers(-3, 3), timeout=_float, priority=st.integers(-(2**63), 2**63 - 1),
                                 node=st.sampled_from(["", "n1", "n2", "zz-node"]))
# Nearly valid messages, with a hostile value or two: they get past the first checks, into the handlers.
PLAUSIBLE: dict[str, st.SearchStrategy[Message]] = {
    "client": st.one_of(
        st.builds(Submit, st.sampled_from(["c1", "b1"]), st.lists(st.builds(JobSubmit, _uid, _payload, _options),
                                                                    max_size=3)),
        st.builds(OpenCluster, st.sampled_from(["c1", "b1", "m1"]), st.just("x"), _payload, st.booleans(),
                  st.integers(-(2**63), 2**63 - 1), st.none() | st.lists(st.sampled_from(["n*", "*", "[", ""]))),
    ),
    "node": st.one_of(
        st.builds(NodeProgress,
                  st.lists(st.builds(JobStarted, _uid, st.sampled_from(NODES), _float), max_size=2),
                  st.lists(st.builds(JobResult, _uid, st.sampled_from(["FINISHED", "FAILED"]), _payload,
                                     started_at=_float, finished_at=_float, node=st.sampled_from(NODES)),
                           max_size=2),
                  st.lists(st.builds(JobProvisional, _uid, _payload, _float), max_size=2)),
        st.builds(NodeReady, st.sampled_from(NODES), st.integers(-1, 4), st.integers(-(2**63), 2**64 - 1),
                  st.integers(-2, 2), st.sampled_from(["s1", "s2", "s3"]), st.lists(_uid, max_size=3)),
    ),
    "admin": st.builds(Request, st.integers(0, 3), st.sampled_from(sorted(VERBS)),
                       st.dictionaries(st.sampled_from(["uid", "uids", "name", "node", "cluster", "tenant", "cpus",
                                                        "weight", "limit", "status", "nodes"]),
                                       st.one_of(_uid, st.sampled_from(NODES), _float, st.lists(_uid, max_size=2),
                                                 st.integers(-(2**63), 2**64 - 1), st.none()), max_size=3)),
}


@st.composite
def steps(draw: st.DrawFn) -> tuple[Any, ...]:
    kind = draw(st.sampled_from(["send"] * 8 + ["tick", "drop"]))
    if kind == "tick":
        return ("tick", draw(st.sampled_from([0.5, 3.0, 3.0, TIMEOUT + 1.0])))
    who = draw(st.sampled_from(WHO))
    if kind == "drop":
        return ("drop", who)
    own = ROLE_KINDS[ROLE[who]]
    messages: list[Message] = []
    for _ in range(draw(st.integers(1, 3))):
        source = draw(st.sampled_from(["plausible", "plausible", "own", "own", "any", "mutated"]))
        if source == "plausible":
            messages.append(draw(PLAUSIBLE[ROLE[who]]))
            continue
        kinds = ALL_MESSAGES if source == "any" else own
        message = draw(any_message(words=WORDS, payloads=PAYLOADS, kinds=kinds, fields=FIELDS))
        if source == "mutated":
            try:
                message = decode(mutate(draw, encode(message)))
            except MessageError:
                continue
        messages.append(message)
    return ("send", who, tuple(messages))


def run(make_driver: Any, script: list[tuple[Any, ...]]) -> None:
    d, conns = busy(make_driver)
    check_invariants(d.state)
    for step in script:
        roles = {c: r.role for c, r in d.state.conns.items()}
        before = {t: tenant_view(d.state, t) for t in ("alice", "bob")}
        sender: int | None = None
        if step[0] == "tick":
            d.now += step[1]
            out = d.tick()
        elif step[0] == "drop":
            out = d.disconnect(conns[step[1]])
        else:
            who, messages = step[1], step[2]
            sender = conns[who]
            out = d.send(sender, *messages)
            if who == "ghost":
                assert out == [], "a connection the state does not know was heard"
            if who in ("bob", "mallory"):
                assert tenant_view(d.state, "alice") == before["alice"], f"{who} changed alice's jobs"
            if who in ("alice", "mallory"):
                assert tenant_view(d.state, "bob") == before["bob"], f"{who} changed bob's jobs"
        check_outcome(d, out, sender, roles)
        check_invariants(d.state)
        for who in WHO:
            if who != "ghost" and conns[who] not in d.state.conns:
                roles = {c: r.role for c, r in d.state.conns.items()}
                mark = len(d.records)
                reconnect(d, conns, who)
                assert all(decode_record(encode_record(r)) for r in d.records[mark:])
                check_invariants(d.state)
    check_replay(d)
    check_still_serves(d)
    check_invariants(d.state)


@fuzz_settings(300)
@given(script=st.lists(steps(), min_size=1, max_size=12))
def test_garbage_from_every_role_never_breaks_the_state(make_driver: Any, script: list[tuple[Any, ...]]) -> None:
    run(make_driver, script)


@fuzz_settings(100)
@given(messages=st.lists(any_message(words=WORDS, payloads=PAYLOADS, fields=FIELDS), min_size=1, max_size=6),
       who=st.sampled_from(WHO))
def test_any_message_of_any_type_from_any_role_is_answered_or_refused(
    make_driver: Any, messages: list[Message], who: str
) -> None:
    """One burst of anything, in one Received (the shell batches what arrived together)."""
    run(make_driver, [("send", who, tuple(messages))])


# --- before authentication -------------------------------------------------------------------

TOKEN = new_token()
SECRET = b"fuzz-secret"


@fuzz_settings(300)
@given(message=st.one_of(any_message(words=("client", "node", "admin", "secret", "token", "tls", "alice")),
                         any_message(kinds=(ClientHello,), words=("client", "node", "admin", "secret", "token",
                                                                  "tls", "alice"))),
       certificate=st.sampled_from([None, CertIdentity("client", "alice"), CertIdentity("node", "n1")]))
def test_server_handshake_refuses_garbage_with_auth_error_only(message: Message,
                                                               certificate: CertIdentity | None) -> None:
    keys = token_keys(TOKEN)
    handshake = ServerHandshake(SECRET, "sched", tokens={"alice": keys}.get, tenant_secret_allowed=False,
                                certificate=certificate)
    try:
        peer, _auth = handshake.check(message)
    except AuthError as exc:
        assert str(exc)
    else:  # only a verified TLS certificate vouches for a peer without a MAC
        assert isinstance(message, ClientHello) and message.auth == "tls" and certificate is not None
        assert peer.role == certificate.role


async def _accept_garbage(data: bytes, chunks: int) -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    stream = MessageStream(ours)

    async def peer() -> None:
        await theirs.receive_some(65536)  # the server's hello
        step = max(len(data) // chunks, 1)
        for start in range(0, len(data), step):
            await theirs.send_all(data[start:start + step])
        await theirs.send_eof()

    refused: list[Exception] = []
    with trio.fail_after(5):  # well past the handshake timeout: it must end by itself
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer)
            try:
                await accept_handshake(stream, SECRET, timeout=1.0, tokens={"alice": token_keys(TOKEN)}.get,
                                       admit=lambda peer: None)
            except (AuthError, ProtocolError, ConnectionClosed) as exc:
                refused.append(exc)
            nursery.cancel_scope.cancel()
    assert refused, "garbage was accepted as a hello"


@st.composite
def mutated_hello(draw: st.DrawFn) -> bytes:
    hello = draw(any_message(kinds=(ClientHello,), words=("client", "node", "admin", "secret", "token", "tls")))
    body = encode(hello)
    return mutate(draw, HEADER.pack(len(body)) + body)


@fuzz_settings(60)
@given(data=st.one_of(st.binary(max_size=600), st.binary(max_size=300).map(lambda b: HEADER.pack(len(b)) + b),
                      mutated_hello()),
       chunks=st.integers(1, 4))
def test_accept_handshake_refuses_raw_garbage_within_its_timeout(data: bytes, chunks: int) -> None:
    trio.run(_accept_garbage, data, chunks)

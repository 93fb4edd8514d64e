"""The wire vocabulary: every control message that crosses a socket.

Messages are frozen msgspec structs encoded as msgpack arrays (positional,
tagged by class name). Control data is never pickled; tenant data (functions,
arguments, results) travels as opaque ``bytes`` fields that only node workers
unpickle (SPEC promise 5). Received in a large frame, such a field is a
read-only ``memoryview`` into the frame rather than ``bytes`` (see
``fairpool.largefields``): treat it as bytes-like, not as ``bytes``.

Who sends what:

* handshake (every connection): ServerHello, ClientHello, ServerAuth, Refused
* client -> scheduler: OpenCluster, Submit, AckResults, CloseCluster, Heartbeat
* scheduler -> client: ClusterOpened, Queued, JobsUpdate, ClusterClosed, Error
* scheduler -> node: Dispatch, ReleaseCluster, Heartbeat
* node -> scheduler: NodeReady, NodeProgress, Heartbeat, NodeDrain
* node <-> worker (local socketpair): WorkerReady, Dispatch, ReleaseCluster,
  NodeProgress
"""

from __future__ import annotations

from typing import Any

import msgspec

PROTOCOL_VERSION = 1


class Message(msgspec.Struct, frozen=True, tag=True, array_like=True):
    """Base of every message: frozen, positional, tagged by class name."""


# --- handshake -------------------------------------------------------------


class ServerHello(Message, frozen=True):
    version: int
    nonce: bytes
    server: str = ""


class ClientHello(Message, frozen=True):
    version: int
    role: str  # "client" | "node" | "admin"
    nonce: bytes
    mac: bytes
    tenant: str = ""
    name: str = ""
    auth: str = "secret"  # "secret" | "token" | "tls": what ``mac`` proves (see handshake.py)


class ServerAuth(Message, frozen=True):
    mac: bytes
    tenant: str = ""  # the tenant the server took this client for (from a certificate, say)


class Refused(Message, frozen=True):
    reason: str


# --- job data shared by several hops ---------------------------------------


class JobSubmit(Message, frozen=True):
    """One job of a Submit batch. ``uid`` is chosen by the client (idempotent resends)."""

    uid: str
    payload: bytes  # cloudpickled (args, kwargs): opaque to the scheduler
    options: JobOptions | None = None  # per-job options; None: the cluster's defaults


class JobOptions(Message, frozen=True):
    """Per-job options (``cluster.options(...).submit``); zero/empty means "not set"."""

    cpus: float = 0.0
    memory: int = 0  # bytes
    gpus: int = 0
    timeout: float = 0.0  # seconds of running time, then the job is killed and FAILED
    priority: int = 0
    node: str = ""  # submit_node: run only on the node of this name


class Task(Message, frozen=True):
    """A job as a node sees it."""

    uid: str
    cluster_id: str
    payload: bytes
    timeout: float = 0.0  # the node kills the job after this many seconds of running (0: never)


class JobProvisional(Message, frozen=True):
    """An intermediate result (``fairpool.provisional_result``); payload opaque to the scheduler."""

    uid: str
    payload: bytes
    at: float


class FileChunk(Message, frozen=True):
    """Part of a file a job sends to its client (``fairpool.send_file``).

    ``name`` is a relative path the client places under its ``dest_path``;
    ``offset`` orders the chunks, ``last`` marks the end of the file.
    """

    uid: str
    name: str
    offset: int
    data: bytes
    last: bool = True


class ClusterDef(Message, frozen=True):
    """A cluster's computation as nodes need it; ``spec`` is opaque to the scheduler."""

    cluster_id: str
    spec: bytes
    tenant: str = ""  # whose jobs these are: for the node's log lines
    max_payload: int = 0  # the largest result the scheduler takes (its max_payload_size; 0: no limit of its own)


class JobStarted(Message, frozen=True):
    uid: str
    node: str
    started_at: float


class JobResult(Message, frozen=True):
    uid: str
    status: str  # "FINISHED" | "FAILED" (| "CANCELLED" | "ABANDONED" set by the scheduler)
    payload: bytes = b""  # cloudpickled return value or exception: opaque to the scheduler
    stdout: str = ""
    stderr: str = ""
    traceback: str = ""
    reason: str = ""
    exit_code: int | None = None
    started_at: float = 0.0
    finished_at: float = 0.0
    node: str = ""


# --- client <-> scheduler --------------------------------------------------


class OpenCluster(Message, frozen=True):
    cluster_id: str
    name: str
    spec: bytes  # see fairpool.clusterspec: opaque to the scheduler
    reentrant: bool = False
    priority: int = 0
    nodes: list[str] | None = None  # node names or fnmatch patterns it may run on (None: any)


class ClusterOpened(Message, frozen=True):
    cluster_id: str
    max_payload: int = 0  # the largest job payload the scheduler takes (its max_payload_size; 0: no limit of its own)


class Submit(Message, frozen=True):
    cluster_id: str
    jobs: list[JobSubmit]


class Queued(Message, frozen=True):
    """Acknowledges submitted jobs: from here on they are the scheduler's to keep."""

    cluster_id: str
    uids: list[str]
    at: float


class JobsUpdate(Message, frozen=True):
    started: list[JobStarted]
    results: list[JobResult]
    provisional: list[JobProvisional] = []
    files: list[FileChunk] = []


class CancelJobs(Message, frozen=True):
    """client -> scheduler: cancel these jobs (queued: removed; running: killed)."""

    uids: list[str]


class CancelTasks(Message, frozen=True):
    """scheduler -> node (and node -> worker pool): kill these tasks' process trees."""

    uids: list[str]
    reason: str = "cancelled"


class NodeEvent(Message, frozen=True):
    """scheduler -> client: a node joined ("joined"), left ("left") or failed ("failed")."""

    event: str
    node: str
    cpus: int = 0


class AckResults(Message, frozen=True):
    """The client holds these results: the scheduler may forget them."""

    uids: list[str]


class CloseCluster(Message, frozen=True):
    cluster_id: str


class ClusterClosed(Message, frozen=True):
    cluster_id: str


class Error(Message, frozen=True):
    """A request was refused; the connection stays open."""

    reason: str
    ref: str = ""


class Heartbeat(Message, frozen=True):
    at: float


class Request(Message, frozen=True):
    """A query or command (admin verbs, ``cluster.nodes()``...); answered by a Reply with the same id.

    ``verb`` is e.g. "status", "nodes.list", "jobs.cancel"; ``args`` plain data (str keys).
    Who may ask what is decided by the connection's role and tenant.
    """

    id: int
    verb: str
    args: dict[str, Any] = {}


class Reply(Message, frozen=True):
    id: int
    ok: bool
    body: Any = None  # plain data: dicts, lists, strings, numbers
    error: str = ""


# --- scheduler <-> node (and node <-> worker) ------------------------------


class NodeReady(Message, frozen=True):
    name: str
    cpus: int
    memory: int = 0  # bytes
    gpus: int = 0
    # One run of the node daemon; a restarted node has a new session, and lost what it ran.
    session: str = ""
    # Every job the node still holds (queued, running, or with a result not yet acknowledged).
    held: list[str] = []


class Dispatch(Message, frozen=True):
    clusters: list[ClusterDef]
    tasks: list[Task]


class ReleaseCluster(Message, frozen=True):
    cluster_id: str


class NodeProgress(Message, frozen=True):
    started: list[JobStarted]
    results: list[JobResult]
    provisional: list[JobProvisional] = []
    files: list[FileChunk] = []


class WorkerReady(Message, frozen=True):
    pid: int


class NodeDrain(Message, frozen=True):
    """node -> scheduler: take no new jobs here (``draining``), or take them again.

    Sent when a node stops (SIGTERM), has served its ``--serve N`` clusters, or
    leaves its service hours (and with ``draining=False`` when they begin).
    ``handback`` names jobs the node gives back unfinished: the scheduler
    requeues those that never started (and reentrant ones), the others end
    ABANDONED. An admin's drain outlasts a node's "take them again".
    """

    draining: bool
    reason: str = ""
    handback: list[str] = []


AnyMessage = (
    ServerHello
    | ClientHello
    | ServerAuth
    | Refused
    | JobSubmit
    | JobOptions
    | JobProvisional
    | FileChunk
    | CancelJobs
    | CancelTasks
    | NodeEvent
    | Task
    | ClusterDef
    | JobStarted
    | JobResult
    | OpenCluster
    | ClusterOpened
    | Submit
    | Queued
    | JobsUpdate
    | AckResults
    | CloseCluster
    | ClusterClosed
    | Error
    | Heartbeat
    | NodeReady
    | Dispatch
    | ReleaseCluster
    | NodeProgress
    | WorkerReady
    | Request
    | Reply
    | NodeDrain
)

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[AnyMessage] = msgspec.msgpack.Decoder(AnyMessage)


class MessageError(ValueError):
    """Bytes that are not a well-formed message of this protocol version."""


def encode(message: Message) -> bytes:
    return _encoder.encode(message)


def encode_into(message: Message, buffer: bytearray, offset: int) -> None:
    """Encode ``message`` into ``buffer`` from ``offset`` on, the buffer growing (or cut) to its end."""
    _encoder.encode_into(message, buffer, offset)


def decode(data: bytes | bytearray | memoryview) -> AnyMessage:
    try:
        return _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise MessageError(f"malformed message: {exc}") from None
    except RecursionError:  # arrays nested thousands deep inside an ``Any`` field
        raise MessageError("malformed message: nested too deeply") from None

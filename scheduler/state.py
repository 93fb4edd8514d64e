"""SchedulerState: the whole scheduling logic as a pure state machine.

``handle(stimulus) -> list[Instruction]`` is the only entry point. It reads
no clock (stimuli carry ``now``), does no I/O and never looks inside tenant
payloads: functions, arguments and results are opaque bytes here (SPEC
promise 5). One trio task in ``fairpool.scheduler.daemon`` owns an instance;
the simulator and the tests drive the very same code synchronously. The
handlers live in two halves: ``ClientSide`` (clusters, submits, acks,
cancels) and ``NodeSide`` (nodes, progress, loss, dispatch), over the data
and shared bookkeeping of ``StateBase``.
"""

from __future__ import annotations

from collections.abc import Sequence

from fairpool.messages import (
    AckResults,
    AnyMessage,
    CancelJobs,
    CloseCluster,
    Error,
    Heartbeat,
    NodeDrain,
    NodeProgress,
    NodeReady,
    OpenCluster,
    Reply,
    Request,
    Submit,
)
from fairpool.scheduler.clientside import NOT_FOUND, ClientSide
from fairpool.scheduler.events import (
    Close,
    Connected,
    Disconnected,
    Instruction,
    Log,
    Persist,
    PolicyLoaded,
    Received,
    Send,
    ShellRequest,
    Stimulus,
    Tick,
)
from fairpool.scheduler.journalrecords import RTenantToken
from fairpool.scheduler.nodeside import NodeSide
from fairpool.scheduler.policyfile import PolicyConfig
from fairpool.scheduler.queries import answer
from fairpool.scheduler.records import ConnRecord
from fairpool.tokens import TokenKeys

__all__ = ["NOT_FOUND", "SchedulerState"]

SHELL_VERBS = frozenset({"policy.reload", "journal.compact"})  # they need files: the shell serves them


class SchedulerState(ClientSide, NodeSide):
    def handle(self, stimulus: Stimulus) -> list[Instruction]:
        return self.handle_many((stimulus,))

    def handle_many(self, stimuli: Sequence[Stimulus]) -> list[Instruction]:
        """Several stimuli, then one dispatch pass: what a busy shell does with a burst."""
        self._dropped = False
        for stimulus in stimuli:
            self._apply(stimulus)
        if stimuli:
            self._schedule(stimuli[-1].now)
        return self._take_output()

    def _apply(self, stimulus: Stimulus) -> None:
        match stimulus:
            case Received(conn, messages, now):
                record = self.conns.get(conn)
                if record is not None:
                    record.last_seen = now
                    if record.node is not None:
                        record.node.last_seen = now
                    for message in messages:
                        if conn not in self.conns:
                            break  # closed by an earlier message of this batch
                        self._on_message(record, message, now)
            case Connected(conn, peer, now):
                self.conns[conn] = ConnRecord(conn, peer.role, peer.tenant, peer.name, now, peer.auth)
            case Disconnected(conn, reason, now):
                self._drop_conn(conn, reason, now)
            case PolicyLoaded(conn, request_id, config, now):
                self._policy_loaded(conn, request_id, config, now)
            case Tick(now):
                self._check_heartbeats(now)
                self._purge_expired(now)

    def _on_message(self, conn: ConnRecord, message: AnyMessage, now: float) -> None:
        match conn.role, message:
            case "node", Heartbeat():
                # Echoed once durable: the node may then forget every result it sent before.
                self._out.append(Send(conn.conn, message, durable=True))
            case _, Heartbeat():
                pass
            case "client", Submit():
                self._submit(conn, message, now)
            case "client", AckResults(uids):
                self._ack(conn, uids)
            case "client", OpenCluster():
                self._open_cluster(conn, message, now)
            case "client", CloseCluster(cluster_id):
                self._close_cluster(conn, cluster_id, now)
            case "client", CancelJobs(uids):
                self._cancel(conn, uids, now)
            case "node", NodeProgress():
                self._node_progress(conn, message, now)
            case "node", NodeReady():
                self._node_ready(conn, message, now)
            case "node", NodeDrain():
                self._node_drain(conn, message, now)
            case "admin", Request(verb=verb) if verb in SHELL_VERBS:
                self._out.append(ShellRequest(conn.conn, message))
            case "client" | "admin", Request():
                before = len(self._out)
                reply = answer(self, conn, message, now)
                # What a request changed is journaled: its reply (a new token, say) waits until that is on disk.
                durable = reply.ok and any(isinstance(i, Persist) for i in self._out[before:])
                self._out.append(Send(conn.conn, reply, durable=durable))
            case role, _:
                self._violation(conn, f"{type(message).__name__} is not a {role} request")

    def _policy_loaded(self, conn: int, request_id: int, config: PolicyConfig, now: float) -> None:
        try:
            policy = config.make_policy(default=self.policy.name)
        except ValueError as exc:  # unknown name, bad options: nothing changes
            self._out.append(Send(conn, Reply(request_id, False, error=str(exc))))
            return
        self.dispatcher.configure(tenants=config.tenants)
        if policy.name != self.policy.name or config.options_for(policy.name):
            self.set_policy(policy, now)
        self._out.append(Send(conn, Reply(request_id, True, {"policy": self.policy.name,
                                                             "tenants": sorted(config.tenants)})))

    def set_token(self, tenant: str, keys: TokenKeys | None, reason: str, now: float) -> int:
        """Issue or replace (``keys``) or revoke (None) ``tenant``'s token; journaled.

        Every client connection acting as ``tenant`` that a token or the cluster
        secret let in is closed (``reason`` its last words): that credential no
        longer proves who it is. Certificate connections stay. Returns how many closed.
        """
        event = "revoked" if keys is None else "replaced" if tenant in self.tokens else "issued"
        if keys is None:
            self.tokens.pop(tenant, None)
            self._out.append(Persist(RTenantToken(tenant)))
        else:
            self.tokens[tenant] = keys
            self._out.append(Persist(RTenantToken(tenant, keys.stored_key, keys.server_key)))
        doomed = [c for c in self.conns.values() if c.role == "client" and c.tenant == tenant and c.auth != "tls"]
        for conn in doomed:
            self.hang_up(conn, reason, now)
        self._out.append(Log("info", f"tenant token {event}", (("tenant", tenant), ("connections_closed", len(doomed)))))
        return len(doomed)

    def hang_up(self, conn: ConnRecord, reason: str, now: float) -> None:
        """Tell the peer why (an Error, its last words), close its connection and forget it now."""
        last_words = Send(conn.conn, Error(reason))
        self._last_words[conn.conn] = last_words
        self._out.append(last_words)
        self._out.append(Close(conn.conn, reason))
        self._drop_conn(conn.conn, reason, now)

    def _violation(self, conn: ConnRecord, reason: str) -> None:
        self._out.append(Log("warning", "protocol violation", (("peer", conn.name), ("reason", reason))))
        last_words = Send(conn.conn, Error(f"protocol violation: {reason}"))
        self._last_words[conn.conn] = last_words
        self._out.append(last_words)
        self._out.append(Close(conn.conn, reason))
        self._drop_conn(conn.conn, reason, conn.last_seen)

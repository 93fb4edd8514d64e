"""What drives SchedulerState (stimuli) and what it asks the shell to do (instructions).

Stimuli are transport-level facts stamped with ``now`` by the shell; the pure
core reads no clock. Instructions are the only way the core acts on the world.
"""

from __future__ import annotations

from dataclasses import dataclass

from fairpool.handshake import Peer
from fairpool.messages import AnyMessage, Message, Request
from fairpool.scheduler.journalrecords import JournalRecord
from fairpool.scheduler.policyfile import PolicyConfig


@dataclass(frozen=True)
class Connected:
    conn: int
    peer: Peer
    now: float


@dataclass(frozen=True)
class Received:
    conn: int
    messages: tuple[AnyMessage, ...]
    now: float


@dataclass(frozen=True)
class Disconnected:
    conn: int
    reason: str
    now: float


@dataclass(frozen=True)
class PolicyLoaded:
    """The shell read the policy file for ``policy reload``; the state switches to it."""

    conn: int
    request_id: int
    config: PolicyConfig
    now: float


@dataclass(frozen=True)
class Tick:
    """Time passes: check heartbeats."""

    now: float


Stimulus = Connected | Received | Disconnected | PolicyLoaded | Tick


@dataclass(frozen=True)
class Send:
    """Send a message. ``durable``: only once every record persisted before it is on disk."""

    conn: int
    message: Message
    durable: bool = False


@dataclass(frozen=True)
class Persist:
    """Append a record to the journal (durable at the next group commit)."""

    record: JournalRecord


@dataclass(frozen=True)
class Close:
    conn: int
    reason: str


@dataclass(frozen=True)
class ShellRequest:
    """A request only the shell can serve (it needs files): ``policy.reload``, ``journal.compact``."""

    conn: int
    request: Request


@dataclass(frozen=True)
class Log:
    """Something an operator should see; ``level`` is a structlog method name."""

    level: str
    event: str
    fields: tuple[tuple[str, object], ...] = ()


Instruction = Send | Persist | Close | Log | ShellRequest

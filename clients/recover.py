"""The recover file: what a later process needs to find a cluster's jobs again.

``fairpool-<cluster_id>.recover`` lives in the working directory. Its first
line is a JSON header (``RecoverInfo``: where the scheduler is, as whom and
with which credential files -- the secret file if one was read, the TLS
files' paths; never a token --, the cluster's name and defaults, when it was
created), written atomically once
the scheduler has opened the cluster. ``RecoverLog`` then appends one line
per batch as the jobs progress:

    sent N                  uids up to <cluster_id>.N may have reached the scheduler
    queued AT 1-500 502     the scheduler acknowledged these job numbers (QUEUED at AT)
    ids {"7": "seven"}      the jobs' ``job.id`` when they were acknowledged (JSON values only)
    received UID UID ...    results this client took (written before it acknowledges them)

Why a log, when the scheduler lists a re-attaching client every job it holds
(``fairpool.clients.reattach``)? The file also works where that list does
not (cut short for a huge cluster, or unanswered), it keeps the jobs'
``job.id``, it tells a job whose result the dead client had taken (and the
scheduler forgotten) from one that was lost, and ``sent`` keeps a reattached
cluster's new uids clear of any job the scheduler may hold. Lines are
written with one ``write`` each and never fsynced: the file guards against
the client process dying, which leaves written data in the page cache; a
torn last line is skipped when read. The file goes when ``close()`` has
received every result.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fairpool.clients.errors import NoRecoverFile

logger = logging.getLogger("fairpool.clients")

PREFIX = "fairpool-"
SUFFIX = ".recover"
TLS_KEYS = frozenset({"ca", "cert", "key"})


@dataclass(frozen=True)
class RecoverInfo:
    cluster_id: str
    scheduler: str  # HOST:PORT
    tenant: str
    secret_file: str  # "" when the client read none (it proved itself by token or certificate)
    created: float  # time.time()
    name: str = ""
    reentrant: bool = False
    priority: int = 0
    resources: dict[str, Any] | None = None  # the cluster's default per-job resources
    tls: dict[str, str] | None = None  # the paths of tls= (ca, cert, key), if the client used TLS

    def to_json(self) -> str:
        return json.dumps(asdict(self)) + "\n"  # one line: the log follows it

    @classmethod
    def from_json(cls, text: str) -> RecoverInfo:
        data = json.loads(text)
        resources, tls = data.get("resources"), data.get("tls")
        return cls(
            cluster_id=str(data["cluster_id"]),
            scheduler=str(data["scheduler"]),
            tenant=str(data["tenant"]),
            secret_file=str(data["secret_file"]),
            created=float(data["created"]),
            name=str(data.get("name", "")),
            reentrant=bool(data.get("reentrant", False)),
            priority=int(data.get("priority", 0)),
            resources=dict(resources) if isinstance(resources, dict) else None,
            tls={key: str(tls[key]) for key in TLS_KEYS} if isinstance(tls, dict) and set(tls) >= TLS_KEYS else None,
        )


@dataclass
class RecoverState:
    """A recover file read back: its header and what its log says of the jobs."""

    info: RecoverInfo
    path: Path
    sent: int = 0
    queued: dict[int, float] = field(default_factory=dict)  # job number -> when it was queued
    ids: dict[int, Any] = field(default_factory=dict)
    received: set[str] = field(default_factory=set)

    def uid(self, number: int) -> str:
        return f"{self.info.cluster_id}.{number}"

    def pending(self) -> list[tuple[str, float, Any]]:
        """(uid, queued at, job.id) of every queued job whose result this client never took."""
        return [(self.uid(n), at, self.ids.get(n)) for n, at in sorted(self.queued.items())
                if self.uid(n) not in self.received]

    def highest(self) -> int:
        """The highest job number the file knows of: new jobs must be numbered after it."""
        received = (job_number(uid, self.info.cluster_id) for uid in self.received)
        return max(self.sent, max(self.queued, default=0), max((n for n in received if n), default=0))


def recover_path(cluster_id: str, directory: str | os.PathLike[str] = ".") -> Path:
    return Path(directory) / f"{PREFIX}{cluster_id}{SUFFIX}"


def write_recover_file(info: RecoverInfo, directory: str | os.PathLike[str] = ".") -> Path:
    """Write the header atomically (temp file + rename): a crash never leaves a half-written file."""
    path = recover_path(info.cluster_id, directory)
    _write_atomically(path, info.to_json().encode())
    return path


def read_recover_file(path: str | os.PathLike[str]) -> RecoverInfo:
    """The header alone."""
    with open(path, encoding="utf-8") as f:
        return RecoverInfo.from_json(f.readline())


def read_recover_state(path: str | os.PathLike[str]) -> RecoverState:
    """The header and the log; a line that does not parse (a torn tail) is skipped."""
    with open(path, encoding="utf-8", errors="replace") as f:
        state = RecoverState(RecoverInfo.from_json(f.readline()), Path(path))
        for line in f:
            try:
                _apply_line(state, line)
            except (ValueError, IndexError):
                logger.debug("recover file %s: skipping an unreadable line %r", path, line[:80])
    return state


def latest_recover_file(directory: str | os.PathLike[str] = ".") -> RecoverState:
    """The recover file in ``directory`` whose header was created last; NoRecoverFile if none."""
    found: list[RecoverState] = []
    for path in Path(directory).glob(f"{PREFIX}*{SUFFIX}"):
        try:
            found.append(read_recover_state(path))
        except (OSError, ValueError, KeyError) as exc:
            logger.warning("ignoring the unreadable recover file %s: %s", path, exc)
    if not found:
        raise NoRecoverFile(
            f"no recover file ({PREFIX}<cluster_id>{SUFFIX}) in {Path(directory).absolute()}: "
            "run recover_jobs from the directory the cluster's script ran in, or pass its cluster_id"
        )
    return max(found, key=lambda state: state.info.created)


def job_number(uid: str, cluster_id: str) -> int:
    """N of a uid ``<cluster_id>.N`` (0 if it is not one)."""
    head, _, tail = uid.rpartition(".")
    return int(tail) if head == cluster_id and tail.isdigit() else 0


class RecoverLog:
    """Appends a cluster's job progress to its recover file (any thread; one ``write`` per call).

    Lines logged before the file exists (results re-sent while a reattached
    cluster is opening) wait in memory and follow the header.
    """

    def __init__(self, cluster_id: str) -> None:
        self.cluster_id = cluster_id
        self.path: Path | None = None
        self._lock = threading.Lock()
        self._pending: list[bytes] = []
        self._fd: int | None = None
        self._sent = 0
        self._failed = False

    def create(self, info: RecoverInfo, directory: str | os.PathLike[str] = ".") -> Path:
        """Write a new file: the header, then what was logged so far."""
        path = recover_path(info.cluster_id, directory).absolute()
        with self._lock:
            _write_atomically(path, info.to_json().encode() + b"".join(self._pending))
            self._open(path)
        return path

    def attach(self, path: str | os.PathLike[str]) -> None:
        """Append to an existing file (a reattached cluster carries on its predecessor's log)."""
        with self._lock:
            self._open(Path(path).absolute())
            if _torn(Path(path)):
                self._write(b"\n")  # end the line a crash cut short: ours must not extend it
            if self._pending:
                self._write(b"".join(self._pending))

    def _open(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_CLOEXEC", 0))
        self.path = path
        self._pending = []

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    # --- the log (the connection's thread) -----------------------------------------

    def sent(self, number: int) -> None:
        if number > self._sent:
            self._sent = number
            self._append(b"sent %d\n" % number)

    def queued(self, uids: list[str], at: float, ids: dict[str, Any] | None = None) -> None:
        """``uids`` in increasing job order (as the client submits them)."""
        if not uids:
            return
        line = f"queued {at!r} {' '.join(_ranges(uids, self.cluster_id))}\n"
        if ids:
            line += f"ids {_json_ids(ids, self.cluster_id)}\n"
        self._append(line.encode())

    def received(self, uids: Iterable[str]) -> None:
        # Whole uids, joined: this runs once per acknowledgement batch, and parsing
        # numbers out of them would cost several times what the join does.
        text = " ".join(uids)
        if text:
            self._append(b"received " + text.encode() + b"\n")

    def _append(self, data: bytes) -> None:
        with self._lock:
            if self._fd is None:
                if self.path is None:
                    self._pending.append(data)
                return
            self._write(data)

    def _write(self, data: bytes) -> None:
        assert self._fd is not None
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            if not self._failed:
                self._failed = True
                logger.warning("cluster %s: cannot append to the recover file %s: %s; a later "
                               "recover_jobs may miss queued jobs", self.cluster_id, self.path, exc)


def _apply_line(state: RecoverState, line: str) -> None:
    if not line.endswith("\n"):
        raise ValueError("torn line")
    kind, _, rest = line.rstrip("\n").partition(" ")
    if kind == "sent":
        state.sent = max(state.sent, int(rest))
    elif kind == "queued":
        at_text, _, ranges = rest.partition(" ")
        at = float(at_text)
        numbers = [_parse_range(text) for text in ranges.split()]
        for first, last in numbers:
            for n in range(first, last + 1):
                state.queued.setdefault(n, at)
    elif kind == "ids":
        state.ids.update((int(n), value) for n, value in json.loads(rest).items())
    elif kind == "received":
        state.received.update(rest.split())
    else:
        raise ValueError(f"unknown line {kind!r}")


def _parse_range(text: str) -> tuple[int, int]:
    first, _, last = text.partition("-")
    return int(first), int(last or first)


def _ranges(uids: list[str], cluster_id: str) -> list[str]:
    """Job numbers as "a-b" runs; uids of one Submit are consecutive, so mostly one run, found in O(1)."""
    first, last = job_number(uids[0], cluster_id), job_number(uids[-1], cluster_id)
    if first and last - first + 1 == len(uids):
        return [f"{first}-{last}" if last > first else str(first)]
    numbers = sorted(n for n in (job_number(uid, cluster_id) for uid in uids) if n)
    runs: list[str] = []
    start = prev = numbers[0] if numbers else 0
    for n in numbers[1:]:
        if n != prev + 1:
            runs.append(f"{start}-{prev}" if prev > start else str(start))
            start = n
        prev = n
    if numbers:
        runs.append(f"{start}-{prev}" if prev > start else str(start))
    return runs


def _json_ids(ids: dict[str, Any], cluster_id: str) -> str:
    by_number = {str(job_number(uid, cluster_id)): value for uid, value in ids.items()}
    try:
        return json.dumps(by_number)
    except (TypeError, ValueError):
        # Only JSON values survive a crash: keep those, skip the rest.
        kept = {}
        for n, value in by_number.items():
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                continue
            kept[n] = value
        return json.dumps(kept)


def _torn(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return False
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)

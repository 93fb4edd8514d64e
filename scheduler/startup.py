"""The scheduler's state directory at start: its lock, its journal reopened, its address file.

Before a scheduler serves, ``serve_scheduler`` (``fairpool.scheduler.daemon``)
takes the state directory for itself (``lock_state_dir``: two schedulers
would interleave their journals), refuses to listen beyond loopback while
the secret file is open to others (``check_exposure``), brings the state
back from the journal (``open_journal``) and, once bound, publishes its
address for scripts and tests (``write_address_file``).

``open_journal`` cuts a torn tail (a crash mid-write) and the records whose
payloads never reached the disk (a power loss mid-commit), replays the rest
into the ``SchedulerState``, and returns the ``JournalWriter`` that appends
from there on, the journal compacted first. A corrupt journal or payload
store propagates (``JournalCorrupt``, ``PayloadCorrupt``): the daemon must
not start on it.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import IO

import structlog

from fairpool.address import Address
from fairpool.config import SchedulerConfig
from fairpool.messages import Message
from fairpool.scheduler.journal import JOURNAL_NAME, JournalFile, read_journal
from fairpool.scheduler.journalrecords import payload_refs
from fairpool.scheduler.journalwriter import JournalWriter
from fairpool.scheduler.payloadstore import PAYLOADS_DIR, PayloadStore, first_unbacked
from fairpool.scheduler.replay import replay, snapshot
from fairpool.scheduler.state import SchedulerState
from fairpool.secret import SecretError

log = structlog.get_logger("fairpool.scheduler")

ADDRESS_FILE = "scheduler.address"


def open_journal(config: SchedulerConfig, state: SchedulerState,
                 deliver: Callable[[int, Message], None]) -> JournalWriter:
    """Replay the journal into ``state``; the writer that keeps appending to it (compacted first).

    ``deliver(conn, message)`` sends what the writer held back until it was durable.
    """
    path = config.state_dir / JOURNAL_NAME
    contents = read_journal(path)  # JournalCorrupt propagates: the daemon must not start
    journal = JournalFile(path, fsync=config.journal_fsync)
    if contents.torn:
        log.warning("journal tail was torn (a crash mid-write): cut", file=str(path),
                    offset=contents.intact_end, bytes_cut=contents.size - contents.intact_end)
        journal.truncate(contents.intact_end)
    # Payloads live beside the log: tails no durable record refers to are cut, then only the
    # payloads still alive are read (PayloadCorrupt propagates, as JournalCorrupt does).
    cut = first_unbacked(config.state_dir / PAYLOADS_DIR, (payload_refs(r) for r in contents.records))
    if cut is not None:
        log.warning("journal records name payloads that never reached the disk (a power loss mid-commit): "
                    "cut", file=str(path), offset=contents.offsets[cut], records_cut=len(contents.records) - cut)
        journal.truncate(contents.offsets[cut])
        contents = replace(contents, records=contents.records[:cut], offsets=contents.offsets[:cut],
                           intact_end=contents.offsets[cut], size=contents.offsets[cut])
    store = PayloadStore(config.state_dir / PAYLOADS_DIR, fsync=config.journal_fsync)
    store.open(ref for record in contents.records for ref in payload_refs(record))
    replay(state, contents.records, time.time(), store)
    writer = JournalWriter(journal, deliver, compact_bytes=config.compact_bytes,
                           snapshot=lambda: snapshot(state), store=store)
    if contents.records:
        writer.compact()
        stats = state.statistics()
        log.info("journal replayed", records=len(contents.records), clusters=stats["clusters"],
                 queued=stats["queued"], on_nodes=len(state.orphans), finished=stats["finished"])
    return writer


class StateDirBusy(Exception):
    pass


def lock_state_dir(state_dir: Path) -> IO[bytes]:
    """One scheduler per state dir: two would interleave their journals."""
    f = open(state_dir / "scheduler.lock", "ab")  # noqa: SIM115 - held for the daemon's life
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise StateDirBusy(f"another scheduler is running on state dir {state_dir}") from None
    return f


def check_exposure(listen: Address, secret_path: Path) -> None:
    """Refuse (SecretError) to listen beyond loopback while the secret file is open to group or others.

    Off loopback the secret is the only thing between the network and the admin verbs;
    a secret other local users can read (or write) protects nothing.
    """
    if listen.is_loopback:
        return
    mode = os.stat(secret_path).st_mode & 0o777
    if mode & 0o077:
        raise SecretError(
            f"refusing to listen on {listen}, beyond loopback: the secret file {secret_path} is open to group "
            f"or others (mode {mode:04o}); make it private first: chmod 600 {secret_path}"
        )


def write_address_file(state_dir: Path, bound: Address) -> Path:
    """Publish the bound address in ``state_dir``; the file (removed when the scheduler stops)."""
    address_file = state_dir / ADDRESS_FILE
    tmp = address_file.with_suffix(".tmp")
    tmp.write_text(f"{bound}\n")
    os.replace(tmp, address_file)  # readers never see a half-written address
    return address_file

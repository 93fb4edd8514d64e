"""How long a scheduler takes to start on a big journal (replay, then compaction).

Writes a journal as a real scheduler would (a ``SchedulerState`` fed a client's
submits and, for the history case, a node's results and the client's
acknowledgements, its Persist records written by a ``JournalWriter`` with its
payload store; ``--inline``: framed by ``JournalFile`` with the payloads in
the records, as journals were before the store), then starts ``fairpool
scheduler`` on it and times how long until it listens (its address file
appears), twice: the first start replays and compacts, the second starts
from the compacted journal. Prints the figures, with the disk used by the
log and by the payload store.

    .venv/bin/python bench/restart.py [--queued 100000] [--history 200000] [--payload-bytes 42] [--inline]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fairpool.handshake import Peer
from fairpool.messages import (
    AckResults,
    JobResult,
    JobSubmit,
    NodeProgress,
    NodeReady,
    OpenCluster,
    Submit,
)
from fairpool.policies.registry import make_policy
from fairpool.scheduler.events import Connected, Disconnected, Persist, Received
from fairpool.scheduler.journal import JOURNAL_NAME, JournalFile
from fairpool.scheduler.journalwriter import JournalWriter
from fairpool.scheduler.payloadstore import PAYLOADS_DIR, PayloadStore, segment_files
from fairpool.scheduler.state import SchedulerState

BATCH = 1000
PAYLOAD = 42  # bytes: about what a small pickled (args, kwargs) weighs
RESULT = b"\x80\x05K\x01."  # a small pickled return value


def write_journal(state_dir: Path, queued: int, history: int, payload_bytes: int = PAYLOAD,
                  inline: bool = False) -> None:
    """``history`` jobs that ran and were acknowledged, then ``queued`` jobs waiting."""
    state = SchedulerState(make_policy("fifo"))
    payload = b"\x80\x05" + b"x" * max(payload_bytes - 2, 0)
    journal = JournalFile(state_dir / JOURNAL_NAME, fsync=False)
    store = None if inline else PayloadStore(state_dir / PAYLOADS_DIR, fsync=False)
    if store is not None:
        store.open(())
    writer = JournalWriter(journal, lambda _conn, _message: None, compact_bytes=1 << 62, snapshot=list, store=store)
    now = 1.0

    def feed(stimulus: object) -> None:
        for instruction in state.handle(stimulus):  # type: ignore[arg-type]
            if isinstance(instruction, Persist):
                writer.append(instruction.record)
        writer.flush()

    feed(Connected(1, Peer("client", "alice", "bench"), now))
    feed(Received(1, (OpenCluster("c1", "bench", b"spec"),), now))
    n = 0
    if history:
        feed(Connected(2, Peer("node", "", "n1"), now))
        feed(Received(2, (NodeReady("n1", 64, session="s"),), now))
        while n < history:
            uids = [f"c1.{n + i}" for i in range(BATCH)]
            n += BATCH
            feed(Received(1, (Submit("c1", [JobSubmit(u, payload) for u in uids]),), now))
            while state.nodes[2].assigned:  # the node runs the whole batch, the client takes every result
                running = list(state.nodes[2].assigned)
                results = [JobResult(u, "FINISHED", RESULT, started_at=now, finished_at=now + 0.01, node="n1")
                           for u in running]
                feed(Received(2, (NodeProgress([], results),), now))
                feed(Received(1, (AckResults(running),), now))
                now += 0.01
        feed(Disconnected(2, "bench", now))
    for start in range(n, n + queued, BATCH):
        feed(Received(1, (Submit("c1", [JobSubmit(f"c1.{start + i}", payload) for i in range(BATCH)]),), now))
    writer.close()


def disk_use(state_dir: Path) -> str:
    log = (state_dir / JOURNAL_NAME).stat().st_size
    segments = segment_files(state_dir / PAYLOADS_DIR)
    payloads = sum(path.stat().st_size for path in segments.values())
    return f"log {log / 1e6:.1f} MB + payloads {payloads / 1e6:.1f} MB in {len(segments)} segments"


def time_start(state_dir: Path, exe: str) -> tuple[float, float]:
    """Seconds until the scheduler listens, and its RSS in MB then."""
    address = state_dir / "scheduler.address"
    address.unlink(missing_ok=True)
    started = time.monotonic()
    proc = subprocess.Popen([exe, "scheduler", "--listen", "127.0.0.1:0", "--state-dir", str(state_dir),
                             "--log-level", "warning"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        while not address.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"the scheduler exited: {proc.stderr.read().decode() if proc.stderr else ''}")
            if time.monotonic() - started > 600:
                raise RuntimeError("the scheduler did not start within 600 s")
            time.sleep(0.005)
        elapsed = time.monotonic() - started
        rss = 0.0
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
        return elapsed, rss
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queued", type=int, default=100_000, help="jobs queued in the journal (100000)")
    parser.add_argument("--history", type=int, default=200_000, help="jobs that ran and were acknowledged before")
    parser.add_argument("--payload-bytes", type=int, default=PAYLOAD, help=f"bytes of each job's arguments ({PAYLOAD})")
    parser.add_argument("--inline", action="store_true", help="write the payloads in the records (the format "
                        "before the payload store): the first start converts it")
    args = parser.parse_args()
    exe = str(Path(sys.executable).parent / "fairpool")
    with tempfile.TemporaryDirectory(prefix="fairpool-restart-") as tmp:
        state_dir = Path(tmp)
        write_journal(state_dir, args.queued, args.history, args.payload_bytes, args.inline)
        print(f"journal: {args.queued:,} queued jobs of {args.payload_bytes} bytes after {args.history:,} "
              f"acknowledged ones{', payloads inline' if args.inline else ''}: {disk_use(state_dir)}")
        first, rss = time_start(state_dir, exe)
        print(f"first start (replay + compaction): {first:.2f} s, RSS {rss:.0f} MB; then {disk_use(state_dir)}")
        second, rss = time_start(state_dir, exe)
        print(f"second start (compacted journal):  {second:.2f} s, RSS {rss:.0f} MB; then {disk_use(state_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

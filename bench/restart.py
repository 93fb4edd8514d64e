"""How long a scheduler takes to start on a big journal (replay, then compaction).

Writes a journal as a real scheduler would (a ``SchedulerState`` fed a client's
submits and, for the history case, a node's results and the client's
acknowledgements, its Persist records framed by ``JournalFile``), then starts
``fairpool scheduler`` on it and times how long until it listens (its address
file appears), twice: the first start replays and compacts, the second starts
from the compacted journal. Prints the figures.

    .venv/bin/python bench/restart.py [--queued 100000] [--history 200000]
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
from fairpool.scheduler.events import Connected, Persist, Received
from fairpool.scheduler.journal import JOURNAL_NAME, JournalFile
from fairpool.scheduler.state import SchedulerState

BATCH = 1000
PAYLOAD = b"\x80\x05" + b"x" * 40  # about what a small pickled (args, kwargs) weighs


def write_journal(path: Path, queued: int, history: int) -> int:
    """``history`` jobs that ran and were acknowledged, then ``queued`` jobs waiting; the bytes written."""
    state = SchedulerState(make_policy("fifo"))
    journal = JournalFile(path, fsync=False)
    now = 1.0

    def feed(stimulus: object) -> None:
        journal.append([i.record for i in state.handle(stimulus) if isinstance(i, Persist)])  # type: ignore[arg-type]

    feed(Connected(1, Peer("client", "alice", "bench"), now))
    feed(Received(1, (OpenCluster("c1", "bench", b"spec"),), now))
    n = 0
    if history:
        feed(Connected(2, Peer("node", "", "n1"), now))
        feed(Received(2, (NodeReady("n1", 64, session="s"),), now))
        while n < history:
            uids = [f"c1.{n + i}" for i in range(BATCH)]
            n += BATCH
            feed(Received(1, (Submit("c1", [JobSubmit(u, PAYLOAD) for u in uids]),), now))
            running = list(state.nodes[2].assigned)
            results = [JobResult(u, "FINISHED", b"r", started_at=now, finished_at=now + 0.01, node="n1")
                       for u in running]
            feed(Received(2, (NodeProgress([], results),), now))
            feed(Received(1, (AckResults(running),), now))
            now += 0.01
        feed(Received(2, (NodeProgress([], [JobResult(u, "FINISHED", b"r", node="n1")
                                            for u in list(state.nodes[2].assigned)]),), now))
        from fairpool.scheduler.events import Disconnected

        feed(Disconnected(2, "bench", now))
    for start in range(n, n + queued, BATCH):
        feed(Received(1, (Submit("c1", [JobSubmit(f"c1.{start + i}", PAYLOAD) for i in range(BATCH)]),), now))
    journal.sync()
    journal.close()
    return path.stat().st_size


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
    args = parser.parse_args()
    exe = str(Path(sys.executable).parent / "fairpool")
    with tempfile.TemporaryDirectory(prefix="fairpool-restart-") as tmp:
        state_dir = Path(tmp)
        size = write_journal(state_dir / JOURNAL_NAME, args.queued, args.history)
        print(f"journal: {args.queued:,} queued jobs after {args.history:,} acknowledged ones, "
              f"{size / 1e6:.1f} MB")
        first, rss = time_start(state_dir, exe)
        compacted = (state_dir / JOURNAL_NAME).stat().st_size
        print(f"first start (replay + compaction): {first:.2f} s, RSS {rss:.0f} MB; "
              f"journal compacted to {compacted / 1e6:.1f} MB")
        second, rss = time_start(state_dir, exe)
        print(f"second start (compacted journal):  {second:.2f} s, RSS {rss:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

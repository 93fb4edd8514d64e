"""The torture harness: clients work while the scheduler, a node and a client are SIGKILLed.

Shared by the short form (``tests/e2e/test_torture.py``, in CI) and the long
form (``bench/torture.py``). One *round* (``run_round``) starts a client
process per slot (``tortureclient``), each in a directory of its own; while
they work, a ``Chaos`` says when to kill what:

- ``scheduler``: SIGKILL and restart on the same address (the ``Pool``);
- ``node``: SIGKILL a random live node (its workers too) and start it again
  after a seeded downtime, as a new run of the node;
- ``client``: SIGKILL a random live client process -- the slot's first client
  or a recoverer -- and start a recoverer in its directory, which takes the
  cluster over by ``recover_jobs`` or ``SharedJobCluster.reattach`` (in turn).

The round ends when every slot's last process has exited 0; then
``tortureverify.check_slot`` judges each slot from its files. Everything
random comes from the ``random.Random`` passed in, so a seed replays the
same plan (the moments shift with the machine's speed, the choices do not).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tortureverify import SlotVerdict, check_slot, count_runs

CLIENT_SCRIPT = Path(__file__).resolve().parent / "tortureclient.py"
POLL = 0.05
MAX_FAILURES = 3  # a slot whose processes keep failing on their own is given up (and reported)
RECOVER_MODES = ("recover_jobs", "reattach")
KINDS = ("scheduler", "node", "client")


class Chaos(Protocol):
    def due(self, runs: int) -> list[str]:
        """The kinds to kill now, given how many job runs the round has seen."""
        ...


class ProgressChaos:
    """Kills after given numbers of job runs in the round: the same plan on a fast or slow machine."""

    def __init__(self, plan: Sequence[tuple[str, int]]) -> None:
        self.pending = sorted(plan, key=lambda step: step[1])

    def due(self, runs: int) -> list[str]:
        fired = [kind for kind, after in self.pending if runs >= after]
        self.pending = [step for step in self.pending if runs < step[1]]
        return fired


class RateChaos:
    """Kills at seeded random moments, ``per_minute`` on average (exponential gaps), until ``until``
    (``time.monotonic()``); the kinds take turns in a freshly shuffled order each time round."""

    def __init__(self, rng: random.Random, per_minute: float, until: float) -> None:
        self.rng, self.rate, self.until = rng, per_minute / 60.0, until
        self.turns: list[str] = []
        self.next_at = time.monotonic() + self.rng.expovariate(self.rate)

    def due(self, runs: int) -> list[str]:
        now = time.monotonic()
        if now < self.next_at or now > self.until:
            return []
        self.next_at = now + self.rng.expovariate(self.rate)
        if not self.turns:
            self.turns = self.rng.sample(KINDS, len(KINDS))
        return [self.turns.pop()]


class Pool:
    """The daemons chaos kills: ``scheduler`` (restarted at once) and ``nodes`` (after a downtime).

    ``scheduler`` and the nodes are ``conftest.SchedulerProcess`` / ``conftest.Daemon`` objects.
    """

    def __init__(self, scheduler: Any, nodes: list[Any], rng: random.Random,
                 node_downtime: tuple[float, float] = (0.0, 2.0)) -> None:
        self.scheduler, self.nodes, self.rng, self.node_downtime = scheduler, nodes, rng, node_downtime
        self._down: list[tuple[float, Any]] = []

    def kill_scheduler(self) -> None:
        self.scheduler.restart(kill=True)

    def kill_node(self) -> bool:
        alive = [node for node in self.nodes if node.alive()]
        if not alive:
            return False
        node = self.rng.choice(alive)
        node.kill()
        self._down.append((time.monotonic() + self.rng.uniform(*self.node_downtime), node))
        return True

    def tick(self, *, all_now: bool = False) -> None:
        """Start again the nodes whose downtime is over (all of them, with ``all_now``)."""
        now, down = time.monotonic(), self._down
        self._down = [(at, node) for at, node in down if at > now and not all_now]
        for at, node in down:
            if at <= now or all_now:
                node.start()


@dataclass
class Slot:
    """One client's directory and the process working in it now (the client, then recoverers)."""

    home: Path
    tag: str
    tenant: str
    reentrant: bool
    process: subprocess.Popen[bytes] | None = None
    label: str = ""
    processes: int = 0
    kills: int = 0
    failures: list[str] = field(default_factory=list)
    done: bool = False

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, mode: str, args: Sequence[str]) -> None:
        self.processes += 1
        self.label = "client" if mode == "client" else f"{mode}{self.processes - 1}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FAIRPOOL_")}
        with open(self.home / f"{self.label}.out", "wb") as out, open(self.home / f"{self.label}.err", "wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, str(CLIENT_SCRIPT), mode, "--home", str(self.home), "--label", self.label, *args],
                cwd=self.home, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)

    def kill(self) -> None:
        assert self.process is not None
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        self.kills += 1

    def stderr_tail(self, lines: int = 15) -> str:
        path = self.home / f"{self.label}.err"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


@dataclass
class RoundResult:
    number: int
    seconds: float
    kills: Counter[str]
    verdict: SlotVerdict
    skipped_kills: int = 0  # a client kill with no client process alive


def run_round(pool: Pool, chaos: Chaos, rng: random.Random, *, root: Path, number: int, clients: int,
              jobs: int, timeout: float, pause: tuple[float, float] = (0.0, 0.03),
              recover_mode: str | None = None, reentrant: str = "mixed") -> RoundResult:
    """One round: ``clients`` slots of ``jobs`` jobs each, killed as ``chaos`` says; then judged.

    ``reentrant``: "all", "none", or "mixed" (every other slot, the other way round each round).
    """
    began = time.monotonic()
    modes = [recover_mode] if recover_mode else list(rng.sample(RECOVER_MODES, 2))
    kills: Counter[str] = Counter()
    slots: list[Slot] = []
    for k in range(clients):
        home = root / f"round{number:03d}" / f"c{k}"
        home.mkdir(parents=True)
        rerun = reentrant == "all" or (reentrant == "mixed" and (k + number) % 2 == 0)
        slot = Slot(home, tag=f"r{number}c{k}", tenant=f"tenant{k}", reentrant=rerun)
        slot.start("client", [
            "--scheduler", pool.scheduler.address, "--secret-file", str(pool.scheduler.secret_file),
            "--tenant", slot.tenant, "--tag", slot.tag, "--jobs", str(jobs), "--seed", str(rng.randrange(1 << 30)),
            "--pause-min", str(pause[0]), "--pause-max", str(pause[1]), "--timeout", str(timeout),
            *(["--reentrant"] if slot.reentrant else [])])
        slots.append(slot)

    def take_over(slot: Slot) -> None:
        mode = modes[(sum(s.processes for s in slots) - clients) % len(modes)]  # the modes take turns
        slot.start(mode, ["--timeout", str(timeout)])

    faults: list[str] = []
    try:
        _drive(pool, chaos, rng, slots, take_over, kills, faults, number, began, timeout)
    finally:
        for slot in slots:  # (on Ctrl-C too: they run in sessions of their own)
            if slot.alive():
                slot.kill()
    pool.tick(all_now=True)  # the next round starts with every node
    verdict = SlotVerdict(slots=0)
    for slot in slots:
        killed = slot.kills > 0 or bool(slot.failures)  # its last records may be cut short
        verdict.add(check_slot(slot.home, tag=slot.tag, reentrant=slot.reentrant, killed=killed))
        verdict.violations.extend(slot.failures)
    verdict.violations.extend(faults)
    skipped = kills.pop("skipped", 0)
    return RoundResult(number, time.monotonic() - began, kills, verdict, skipped)


def _drive(pool: Pool, chaos: Chaos, rng: random.Random, slots: list[Slot], take_over: Callable[[Slot], None],
           kills: Counter[str], faults: list[str], number: int, began: float, timeout: float) -> None:
    """Poll until every slot is done: fire what ``chaos`` says, restart nodes, take over failed clients."""
    while not all(slot.done for slot in slots):
        if time.monotonic() - began > timeout:
            running = [slot.tag for slot in slots if not slot.done]
            faults.append(f"round {number}: slots {running} did not finish within {timeout:g}s")
            break
        for kind in chaos.due(sum(count_runs(slot.home) for slot in slots)):
            if kind == "scheduler":
                pool.kill_scheduler()
            elif kind == "node":
                if not pool.kill_node():
                    kills["skipped"] += 1
                    continue
            else:
                live = [slot for slot in slots if slot.alive()]
                if not live:
                    kills["skipped"] += 1
                    continue
                victim = rng.choice(live)
                victim.kill()
                take_over(victim)
            kills[kind] += 1
        pool.tick()
        for slot in slots:
            if slot.done or slot.process is None or slot.process.poll() is None:
                continue
            if slot.process.returncode == 0:
                slot.done = True
                continue
            slot.failures.append(f"{slot.tag}: process {slot.label} exited {slot.process.returncode}:\n"
                                 f"{slot.stderr_tail()}")
            if len(slot.failures) >= MAX_FAILURES:
                slot.done = True
            else:
                take_over(slot)
        time.sleep(POLL)


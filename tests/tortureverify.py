"""The torture harness's judge: what a client slot's processes left on disk, checked against promise 1-4.

A *slot* is one client's directory: the client process, and the recoverers
that took over each time it (or an earlier recoverer) was killed. Its files
are written by ``tortureclient`` (see there). ``check_slot`` reads them and
says, job by job:

- which jobs were *promised*: acknowledged QUEUED in a recover file, or
  given a result, or -- for a client that was never killed -- every job it
  submitted (it waited for each one itself);
- that each promised job has exactly one final result (one outcome, however
  many times a crash made it be delivered), or that the killed client took
  its result before dying (the recover file's ``received``);
- that a FINISHED result is the job's own (its tag, its index, its value),
  and that it was run (a ledger line);
- that a non-reentrant job ran at most once and ended FINISHED or ABANDONED
  (a lost node), and that a reentrant job never ended ABANDONED; reruns of
  reentrant jobs are counted, not faulted;
- that no job ended FAILED or CANCELLED (nothing here fails or cancels) and
  no process saw a second final result for a job.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tortureclient import LEDGER, RESULTS, SNAPSHOTS

#: How the client library words a job the scheduler no longer holds (clients/reattach.py).
MISSING = "the scheduler no longer holds this job"


@dataclass
class SlotVerdict:
    """The figures and faults of one client slot (sums over slots with ``add``)."""

    slots: int = 1
    submitted: int = 0  # jobs the slot's first client submitted, as far as anyone knows
    promised: int = 0
    finished: int = 0
    abandoned: int = 0  # non-reentrant jobs of a lost node: a final result, not a fault
    taken_by_killed_client: int = 0  # its result reached a client that died before logging it
    redelivered: int = 0  # the same final result seen again by a later process after a kill
    runs: int = 0
    reruns: int = 0  # extra runs of reentrant jobs (their node was lost)
    unpromised_runs: int = 0  # runs of jobs no record promised (sent, then the client died)
    recoveries: int = 0  # recoverer processes that ran to the end
    abandon_reasons: dict[str, int] = field(default_factory=dict)  # ABANDONED jobs by reason (node named N)
    violations: list[str] = field(default_factory=list)

    def add(self, other: SlotVerdict) -> None:
        for name, value in vars(other).items():
            if name == "violations":
                self.violations.extend(value)
            elif name == "abandon_reasons":
                for reason, count in value.items():
                    self.abandon_reasons[reason] = self.abandon_reasons.get(reason, 0) + count
            else:
                setattr(self, name, getattr(self, name) + value)


def read_lines(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON lines of ``path``; a torn last line (a kill mid-write) is skipped."""
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                yield json.loads(line)
            except ValueError:
                continue


def ledger_runs(path: Path) -> Counter[int]:
    """Runs per job index, from the jobs' own ledger."""
    runs: Counter[int] = Counter()
    if path.exists():
        for line in path.read_text().splitlines():
            fields = line.split()
            if len(fields) == 2:  # (a torn line would have fewer)
                runs[int(fields[0])] += 1
    return runs


def count_runs(home: Path) -> int:
    """How many job runs a slot has seen so far (cheap: the harness polls it)."""
    path = home / LEDGER
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _number(uid: str) -> int:
    return int(uid.rsplit(".", 1)[1])


def check_slot(home: Path, *, tag: str, reentrant: bool, killed: bool) -> SlotVerdict:
    """Judge one slot from its files; ``killed``: whether any of its processes was SIGKILLed."""
    verdict = SlotVerdict()
    fault = verdict.violations.append
    reports = [dict(json.loads(p.read_text()), label=p.stem.removeprefix("report-"))
               for p in sorted(home.glob("report-*.json"))]
    snapshots = list(read_lines(home / SNAPSHOTS))
    clusters = {r["cluster_id"] for r in reports + snapshots if r.get("cluster_id")}
    if len(clusters) > 1:
        fault(f"{tag}: several clusters {sorted(clusters)}")
    verdict.recoveries = sum(1 for r in reports if r["role"] != "client")

    # Every final result anyone in this slot saw, by job number, with who saw it.
    outcomes: dict[int, list[tuple[str, tuple[Any, ...]]]] = {}
    for record in list(read_lines(home / RESULTS)) + [dict(v, by=r["label"]) for r in reports
                                                    for v in r.get("results", {}).values()]:
        key = (record["status"], tuple(record.get("value") or ()), record.get("reason", ""))
        outcomes.setdefault(_number(record["uid"]), []).append((record.get("by", "?"), key))
    for report in reports:
        for uid in report.get("doubles", []):
            fault(f"{tag}: {uid} got two final results in process {report['label']}")
        if not report.get("ended", True):
            fault(f"{tag}: process {report['label']} gave up waiting with jobs unfinished")

    client = next((r for r in reports if r["role"] == "client"), None)
    submitted = {_number(uid) for uid in client["submitted"]} if client else set()
    queued = {n for record in reports + snapshots for n in record.get("queued", [])}
    received = {_number(uid) for s in snapshots for uid in s["received"]} if killed else set()
    sent = max((s.get("sent", 0) for s in snapshots), default=0)
    promised = queued | set(outcomes) | (submitted if not killed else set())
    verdict.submitted = max(len(submitted), sent, max(promised, default=0))
    verdict.promised = len(promised)

    runs = ledger_runs(home / LEDGER)
    verdict.runs = sum(runs.values())
    verdict.unpromised_runs = sum(count for i, count in runs.items() if i + 1 not in promised)
    for n in sorted(promised):
        i, ran = n - 1, runs.get(n - 1, 0)
        seen = outcomes.get(n, [])
        distinct = {key for _, key in seen}
        if len(distinct) > 1:
            fault(f"{tag}: job {n} has {len(distinct)} different final results: {seen}")
            continue
        if not distinct:
            if n in received:
                verdict.taken_by_killed_client += 1  # the dead client acknowledged it: delivered
            else:
                fault(f"{tag}: job {n} was acknowledged QUEUED but has no final result")
            continue
        verdict.redelivered += len({by for by, _ in seen}) - 1
        status, value, reason = distinct.pop()
        if status == "FINISHED":
            verdict.finished += 1
            if list(value) != [tag, i * 3]:
                fault(f"{tag}: job {n} finished with {list(value)}, not {[tag, i * 3]}")
            if ran == 0:
                fault(f"{tag}: job {n} finished but its ledger shows no run")
        elif status == "ABANDONED" and not reentrant and MISSING not in reason:
            verdict.abandoned += 1  # its node was lost: it may have run unheard of, or not at all
            why = re.sub(r"\d+(\.\d+)?", "#", re.sub(r"^node \S+ ", "node N ", reason))
            verdict.abandon_reasons[why] = verdict.abandon_reasons.get(why, 0) + 1
        else:
            fault(f"{tag}: job {n} ({'reentrant' if reentrant else 'non-reentrant'}) ended {status}: {reason}")
        if not reentrant and ran > 1:
            fault(f"{tag}: non-reentrant job {n} ran {ran} times")
        if reentrant and ran > 1:
            verdict.reruns += ran - 1
    return verdict

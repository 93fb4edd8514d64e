"""Torture, short form: clients keep working while the scheduler, a node and a client are killed
(SIGKILL) at seeded random moments; at the end every acknowledged job has exactly one final
result, checked against the clients' own records and the jobs' own ledger of runs.

The harness is ``tests/torturelib.py`` (shared with the long form, ``bench/torture.py``): three
client slots of 120 jobs, two nodes, one kill of each kind at a seeded number of job runs; the
killed client's jobs are taken over by ``recover_jobs`` (seed 1) or ``SharedJobCluster.reattach``
(seed 2) in a new process. Reentrant and non-reentrant clusters are mixed: a non-reentrant job
must run at most once, scheduler SIGKILL included (its assignment is written before its node is
told: JournalWriter.write_through).
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
from torturelib import Pool, ProgressChaos, run_round

pytestmark = pytest.mark.timeout(240)

JOBS = 120


@pytest.mark.scheduler_config(heartbeat_timeout=3.0)
@pytest.mark.parametrize(("seed", "recover_mode"), [(1, "recover_jobs"), (2, "reattach")])
def test_every_acknowledged_job_ends_once_while_daemons_and_a_client_are_killed(
    seed, recover_mode, scheduler, start_node, tmp_path
):
    rng = random.Random(seed)
    nodes = [start_node(cpus=2, name="n1"), start_node(cpus=2, name="n2")]
    pool = Pool(scheduler, nodes, rng, node_downtime=(0.0, 0.0))  # a node comes back at once, as a new run
    # Seeded chaos: the moments (measured in job runs so far) at which things die.
    plan = [("scheduler", rng.randint(20, 120)), ("node", rng.randint(20, 160)), ("client", rng.randint(10, 100))]

    result = run_round(pool, ProgressChaos(plan), rng, root=tmp_path, number=1, clients=3, jobs=JOBS,
                       timeout=150, pause=(0.02, 0.06), recover_mode=recover_mode, reentrant="mixed")

    verdict = result.verdict
    print(f"seed {seed}: plan {plan}; {verdict}")  # (in the captured output of a failing run)
    assert verdict.violations == []
    assert result.kills == Counter(scheduler=1, node=1, client=1)
    assert verdict.recoveries >= 1  # the killed client's jobs were taken over by a new process
    assert verdict.promised >= 2 * JOBS and verdict.finished > 0

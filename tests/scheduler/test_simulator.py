"""The policy simulator: POLICIES.md's scenarios on the real SchedulerState, with a virtual clock.

Every scenario runs the scheduler's own state machine through stimuli (fake
nodes and clients); the figures are the simulator's. The memoryless policy
below exists only here: it shows that the simulator tells a fair policy from
an unfair one (POLICIES.md: "running slots / weight" locks onto whole slots).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from fairpool.policies.core import PolicyBase
from fairpool.policies.heap import Key
from fairpool.scheduler.policyfile import load_policy_file, parse_policy_text
from fairpool.scheduler.simreport import SimulationReport
from fairpool.scheduler.simulator import Simulator, run_simulation, simulate
from fairpool.scheduler.workload import WorkloadError, load_workload, parse_workload

CONFIG = Path(__file__).resolve().parents[2] / "config"


class MemorylessPolicy(PolicyBase):
    """Smallest "running share / weight" first, with no memory of the past: not fair-share."""

    name = "memoryless"

    def _key(self, tenant: str) -> Key:
        return (self.running_rate(tenant) / self.tree.weight(tenant), *self.head_order(tenant))


def run(policy_file: str, workload_file: str, policy: PolicyBase | None = None) -> SimulationReport:
    """Simulate a policy file and a workload file given as TOML text."""
    return simulate(parse_policy_text(policy_file), parse_workload(tomllib.loads(workload_file)), policy=policy)


WEIGHTS_123 = """
[tenants.a]
weight = 1
[tenants.b]
weight = 2
[tenants.c]
weight = 3
"""

BACKLOGGED_123 = """
duration = "40s"
[measure]
warmup = "10s"
window = "10s"
[[node]]
cpus = 8
[[stream]]
tenant = "a"
jobs = 400
runtime = "1s"
[[stream]]
tenant = "b"
jobs = 400
runtime = "1s"
[[stream]]
tenant = "c"
jobs = 400
runtime = "1s"
"""


# --- (1) weights 1:2:3 on 8 slots -----------------------------------------------------


def test_fair_share_gives_weights_1_2_3_their_shares_on_8_slots() -> None:
    report = run('policy = "fair-share"' + WEIGHTS_123, BACKLOGGED_123)
    assert report.policy == "fair-share"
    assert report.shares() == pytest.approx({"a": 1 / 6, "b": 2 / 6, "c": 3 / 6}, abs=0.03)
    assert report.d_abs is not None and report.d_abs < 0.05
    assert report.worst_d_abs is not None and report.worst_d_abs < 0.05
    assert report.jain is not None and report.jain > 0.99
    assert report.problems == ()


def test_memoryless_running_slots_over_weight_fails_the_bar() -> None:
    report = run(WEIGHTS_123, BACKLOGGED_123, policy=MemorylessPolicy())
    assert report.policy == "memoryless"
    assert report.shares() == pytest.approx({"a": 0.25, "b": 0.375, "c": 0.375}, abs=0.02)
    assert report.d_abs is not None and report.d_abs > 0.1
    assert report.jain is not None and report.jain < 0.95


# --- (2) round-robin by slot-time ---------------------------------------------------


def test_round_robin_gives_a_tenant_of_10ms_jobs_half_the_slot_time_beside_1s_jobs() -> None:
    report = run('policy = "round-robin"', """
duration = "20s"
[measure]
warmup = "5s"
window = "5s"
[[node]]
cpus = 4
[[stream]]
tenant = "tiny"
jobs = 10000
runtime = "10ms"
[[stream]]
tenant = "long"
jobs = 200
runtime = "1s"
""")
    tiny = report.tenant("tiny")
    assert tiny.entitlement == pytest.approx(0.5, abs=0.01)
    assert tiny.share == pytest.approx(0.5, abs=0.1)  # plain one-job-per-turn round robin: ~1%
    assert tiny.started > 2000


# --- (3) decayed-usage newcomers ------------------------------------------------------


@pytest.mark.parametrize(("others", "w_new"), [(1, 1), (3, 1), (1, 3)])
def test_decayed_usage_newcomer_takes_the_pool_for_about_h_over_ln2_ln_1_plus_w_ratio(
        others: int, w_new: int) -> None:
    half_life = 10.0
    report = run(f"""
policy = "decayed-usage"
[decayed-usage]
half_life = "{half_life}s"
[tenants.new]
weight = {w_new}
""", f"""
duration = "95s"
[measure]
warmup = "60s"
sliding = "5s"
[[node]]
cpus = 8
[[stream]]
tenant = "old"
copies = {others}
jobs = 3000
runtime = "uniform(150ms, 350ms)"
[[stream]]
tenant = "new"
start = "60s"
jobs = 2000
runtime = "uniform(150ms, 350ms)"
""")
    expected = half_life / math.log(2) * math.log(1 + w_new / others)
    new = report.tenant("new")
    assert new.newcomer
    assert new.reach is not None and new.reach < 1.0  # it takes every freed slot at once
    assert new.settle is not None
    assert expected / 1.5 < new.settle < expected * 1.5


# --- (4) fifo is not fair: the simulator tells policies apart ---------------------------

LATECOMER = """
duration = "30s"
[measure]
warmup = "10s"
[[node]]
cpus = 8
[[stream]]
tenant = "early"
jobs = 400
runtime = "uniform(500ms, 1.5s)"
[[stream]]
tenant = "late"
start = "10s"
jobs = 200
runtime = "uniform(500ms, 1.5s)"
"""


def test_fifo_makes_a_tenant_arriving_later_wait_behind_the_backlog() -> None:
    report = run('policy = "fifo"', LATECOMER)
    late = report.tenant("late")
    assert late.newcomer
    assert late.started == 0 and late.share == 0.0
    assert late.reach is None and late.settle is None
    assert report.d_abs == pytest.approx(0.5, abs=0.01)


def test_fair_share_serves_a_tenant_arriving_later_within_seconds() -> None:
    report = run('policy = "fair-share"', LATECOMER)
    late = report.tenant("late")
    assert late.reach is not None and late.reach < 2.0
    assert late.share == pytest.approx(0.5, abs=0.05)
    assert late.wait_p50 is not None and late.wait_p50 < 15.0
    assert report.d_abs is not None and report.d_abs < 0.05


# --- (5) determinism -----------------------------------------------------------------

RANDOM = """
duration = "20s"
seed = {seed}
[measure]
warmup = "5s"
window = "5s"
[[node]]
count = 2
cpus = 4
[[stream]]
tenant = "poisson"
arrive = "poisson"
rate = 6
runtime = "exponential(500ms)"
[[stream]]
tenant = "backlog"
jobs = 300
runtime = "uniform(100ms, 900ms)"
[[stream]]
tenant = "ticker"
arrive = "periodic"
rate = 2
start = "3s"
runtime = "2s"
"""


def test_two_runs_of_the_same_files_give_the_same_report() -> None:
    first = run('policy = "fair-share"', RANDOM.format(seed=7))
    second = run('policy = "fair-share"', RANDOM.format(seed=7))
    assert first.to_dict(timing=False) == second.to_dict(timing=False)
    assert str(first).split("\nscheduler:")[0] == str(second).split("\nscheduler:")[0]


def test_the_report_does_not_depend_on_the_interpreter_hash_seed(tmp_path: Path) -> None:
    workload = tmp_path / "workload.toml"
    workload.write_text(RANDOM.format(seed=3))
    config = tmp_path / "policy.toml"
    config.write_text('policy = "decayed-usage"\n[decayed-usage]\nhalf_life = "5s"\n')
    script = ("import json, sys; from fairpool.scheduler.simulator import run_simulation; "
              "print(json.dumps(run_simulation(sys.argv[1], sys.argv[2]).to_dict(timing=False)))")
    outputs = {subprocess.run([sys.executable, "-c", script, str(config), str(workload)], check=True,
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout
               for seed in ("1", "2")}
    assert len(outputs) == 1


def test_another_seed_draws_another_workload() -> None:
    first = run('policy = "fair-share"', RANDOM.format(seed=7))
    other = run('policy = "fair-share"', RANDOM.format(seed=8))
    assert first.tenant("poisson").submitted != other.tenant("poisson").submitted or \
        first.tenant("poisson").wait_p90 != other.tenant("poisson").wait_p90


# --- the simulator's own promises ---------------------------------------------------------


def test_the_example_files_load_and_simulate(tmp_path: Path) -> None:
    config = load_policy_file(CONFIG / "policy.toml")
    assert config.policy == "fair-share"
    assert config.make_policy().name == "fair-share"
    assert {"alice", "bob", "carol", "ci"} <= set(config.tenants)
    report = run_simulation(CONFIG / "policy.toml", CONFIG / "workload.toml")
    assert [t.tenant for t in report.tenants] == ["alice", "bob", "carol", "ci", "dave"]
    assert report.tenant("dave").newcomer and report.tenant("dave").reach is not None
    assert report.performance.decisions > 1000
    assert report.performance.decisions_per_second is not None
    assert report.problems == ()
    text = str(report)
    assert "D_abs" in text and "Jain" in text and "dave" in text
    json.dumps(report.to_dict())


def test_acknowledged_results_leave_the_state() -> None:
    sim = Simulator(parse_policy_text('policy = "fair-share"'), parse_workload(tomllib.loads("""
duration = "10s"
[[node]]
cpus = 4
[[stream]]
tenant = "a"
arrive = "periodic"
rate = 20
runtime = "100ms"
""")))
    report = sim.run()
    assert report.tenant("a").finished > 150
    assert len(sim.state.jobs) < 10  # only what is unfinished, or finished this very instant


def test_jobs_refused_by_max_queued_are_counted_and_never_run() -> None:
    report = run("""
policy = "fair-share"
[tenants.a]
max_queued = 50
""", """
duration = "6s"
[[node]]
cpus = 2
join = "2s"
[[stream]]
tenant = "a"
arrive = "periodic"
rate = 100
jobs = 80
runtime = "1s"
""")
    a = report.tenant("a")
    assert a.submitted == 80
    assert a.refused == 30
    assert a.started <= 50


def test_max_queued_holds_within_one_submit_of_many_jobs() -> None:
    report = run("""
policy = "fair-share"
[tenants.a]
max_queued = 50
""", """
duration = "5s"
[[node]]
cpus = 2
[[stream]]
tenant = "a"
jobs = 80
runtime = "1s"
""")
    assert report.tenant("a").refused == 30


def test_nodes_never_run_more_than_their_cpus_and_a_backlog_keeps_them_full() -> None:
    sim = Simulator(parse_policy_text('policy = "fair-share"'), parse_workload(tomllib.loads("""
duration = "10s"
[measure]
resolution = "50ms"
[[node]]
count = 2
cpus = 3
[[stream]]
tenant = "a"
jobs = 400
runtime = "uniform(10ms, 300ms)"
[[stream]]
tenant = "b"
jobs = 400
runtime = "uniform(10ms, 300ms)"
""")))
    sim.run()
    ledger = sim.ledger
    # per bin, the pool's charged seconds: a whole pool busy is one pool-second per second
    busy = [sum(row[i] for row in ledger.received.values()) / ledger.resolution for i in range(ledger.bins)]
    assert max(busy) <= 1.0 + 1e-9
    assert min(busy[2:]) > 0.99  # after the first jobs end, nothing idles while jobs wait


def test_entitlement_follows_the_tenants_limits() -> None:
    report = run("""
policy = "fair-share"
[tenants.capped]
weight = 3
max_running = 2
""", """
duration = "20s"
[measure]
warmup = "5s"
[[node]]
cpus = 8
[[stream]]
tenant = "capped"
jobs = 200
runtime = "1s"
[[stream]]
tenant = "free"
jobs = 200
runtime = "1s"
""")
    capped = report.tenant("capped")
    assert capped.entitlement == pytest.approx(0.25, abs=0.01)  # 2 of 8 slots, not 3/4
    assert capped.share == pytest.approx(0.25, abs=0.02)
    assert report.d_abs is not None and report.d_abs < 0.03


def test_a_bad_workload_key_is_named() -> None:
    with pytest.raises(WorkloadError, match=r"stream\[0\]\] runtme.*did you mean 'runtime'"):
        parse_workload(tomllib.loads('duration = 10\n[[node]]\n[[stream]]\ntenant = "a"\njobs = 1\nruntme = 1'))


@pytest.mark.parametrize(("text", "message"), [
    ("duration = 0", "duration: expected a duration > 0"),
    ("[[node]]\ncpus = 0", r"\[node\[0\]\] cpus: expected an integer >= 1"),
    ('[[node]]\n[[stream]]\ntenant = "a"\narrive = "poisson"\nruntime = 1', "rate: expected jobs per second"),
    ('[[node]]\n[[stream]]\ntenant = "a"\njobs = 1\nruntime = "gauss(1s)"', "runtime: expected a duration like"),
    ('[[node]]\n[[stream]]\ntenant = "a"\nruntime = 1', "jobs: missing"),
    ("[measure]\nwarmup = 30\n[[node]]", "warmup: expected less than the duration"),
])
def test_workload_mistakes_are_refused_with_the_key(text: str, message: str) -> None:
    document = text if text.startswith("duration") else "duration = 10\n" + text
    with pytest.raises(WorkloadError, match=message):
        parse_workload(tomllib.loads(document))


def test_workload_copies_and_runtimes_parse() -> None:
    workload = parse_workload(tomllib.loads("""
duration = "1m"
[[node]]
name = "n"
count = 2
cpus = 4
memory = "8G"
[[stream]]
tenant = "u"
copies = 10
arrive = "poisson"
rate = 0.5
runtime = "uniform(500ms, 2s)"
"""))
    assert workload.duration == 60.0
    assert [n.name for n in workload.nodes] == ["n-1", "n-2"]
    assert workload.nodes[0].memory == 8 << 30
    assert [s.tenant for s in workload.streams][:2] == ["u01", "u02"]
    assert str(workload.streams[0].runtime) == "uniform(0.5s, 2s)"


def test_the_example_workload_file_loads() -> None:
    workload = load_workload(CONFIG / "workload.toml")
    assert workload.duration == 120.0
    assert workload.measure.warmup == 20.0
    assert {s.arrive for s in workload.streams} == {"backlog", "poisson"}

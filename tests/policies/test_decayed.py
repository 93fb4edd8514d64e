"""decayed-usage: usage with a half-life, ranked by U/S, Slurm's factor, trees, restarts."""

from __future__ import annotations

import math

from policysim import Sim, job, weights

from fairpool.policies.decayed import DecayedUsagePolicy, fairshare_factor
from fairpool.policies.resources import Resources
from fairpool.policies.tenants import TenantConfig, TenantTree

H = 100.0


def used_whole_pool(seconds: float, half_life: float = H) -> DecayedUsagePolicy:
    """One tenant ran one job on the whole (1-cpu) pool for ``seconds`` from t=0."""
    policy = DecayedUsagePolicy(half_life=half_life)
    policy.configure(capacity=Resources(1.0))
    ran = job("alice", 1)
    policy.enqueue(ran)
    policy.begin_round(0.0)
    policy.on_start(ran, 0.0)
    policy.on_finish(ran, seconds, seconds)
    policy.begin_round(seconds)
    return policy


def test_usage_halves_after_one_half_life() -> None:
    policy = used_whole_pool(10.0)
    before = policy.usage("alice", 10.0)
    assert math.isclose(policy.usage("alice", 10.0 + H), before / 2, rel_tol=1e-9)
    assert math.isclose(policy.usage("alice", 10.0 + 3 * H), before / 8, rel_tol=1e-9)


def test_usage_is_the_decayed_integral_of_the_charge() -> None:
    # U(T) = integral_0^T 2^(-(T-s)/H) ds = (H/ln2)(1 - 2^(-T/H)) for a whole pool
    policy = used_whole_pool(50.0)
    assert math.isclose(policy.usage("alice"), H / math.log(2) * (1 - 2 ** (-50.0 / H)), rel_tol=1e-9)


def test_a_running_job_accrues_usage_before_it_ends() -> None:
    policy = DecayedUsagePolicy(half_life=H)
    policy.configure(capacity=Resources(4.0))
    ran = job("alice", 1)
    policy.enqueue(ran)
    policy.on_start(ran, 0.0)
    expected = 0.25 * H / math.log(2) * (1 - 2 ** (-20.0 / H))  # a quarter of the pool for 20 s
    assert math.isclose(policy.usage("alice", 20.0), expected, rel_tol=1e-9)


def test_slurm_fair_share_factor_is_two_to_the_minus_usage_over_share() -> None:
    assert fairshare_factor(0.0, 0.25) == 1.0  # no usage
    assert fairshare_factor(0.25, 0.25) == 0.5  # used exactly its share
    assert fairshare_factor(0.5, 0.25) == 0.25  # twice its share
    assert math.isclose(fairshare_factor(0.125, 0.25), 2 ** -0.5)


def test_the_policy_shows_slurms_factor_for_its_tenants() -> None:
    policy = used_whole_pool(10.0)  # alice did all the work; bob, same share, none
    policy.enqueue(job("bob", 2))
    assert math.isclose(policy.factor("alice"), 0.25)  # U = 1 of S = 0.5
    assert policy.factor("bob") == 1.0
    assert "fair-share factor 1.000" in policy.explain(job("bob", 2)).reason


def test_normalized_shares_multiply_along_the_tree_as_in_slurms_example() -> None:
    # Accounts A..D hold 40/30/20/10 of the machine, A splits evenly into A1..A4 and
    # 10 users share A3 evenly: each user gets 1% of the machine.
    tenants = {n: TenantConfig(n, w) for n, w in {"A": 40, "B": 30, "C": 20, "D": 10}.items()}
    tenants.update({f"A{i}": TenantConfig(f"A{i}", 1, parent="A") for i in range(1, 5)})
    tenants.update({f"u{i}": TenantConfig(f"u{i}", 1, parent="A3") for i in range(10)})
    tree = TenantTree(tenants)
    assert math.isclose(tree.share("A3"), 0.10)
    assert all(math.isclose(tree.share(f"u{i}"), 0.01) for i in range(10))
    assert math.isclose(tree.share("B"), 0.30)


def test_the_tenant_with_less_usage_per_share_goes_first() -> None:
    policy = DecayedUsagePolicy(half_life=H)
    policy.configure(weights(heavy=4, light=1), Resources(1.0))
    policy.restore({"policy": "decayed-usage", "version": 1, "at": 0.0,
                    "usage": {"heavy": 30.0, "light": 10.0}}, 0.0)
    for j in (job("light", 1), job("heavy", 2)):
        policy.enqueue(j)
    policy.begin_round(0.0)
    assert policy.next_tenant(set()) == "heavy"  # 30 / 0.8 < 10 / 0.2


def test_usage_survives_a_restart_and_decays_across_the_downtime() -> None:
    policy = used_whole_pool(10.0)
    state = policy.snapshot()
    restarted = DecayedUsagePolicy(half_life=H)
    assert restarted.restore(state, 10.0 + H)
    assert math.isclose(restarted.usage("alice", 10.0 + H), policy.usage("alice", 10.0) / 2, rel_tol=1e-9)


def test_a_newcomer_takes_every_freed_slot_for_about_h_ln2_ln_1_plus_w_ratio() -> None:
    # Alone for 10 half-lives, "old" has usage ~ H/ln2; the newcomer (same weight) then takes
    # every freed slot for (H/ln2) ln(1 + 1/1) = H.
    sim = Sim(DecayedUsagePolicy(half_life=H), slots=4)
    sim.jobs("old", 1.0, 8000)
    sim.jobs("new", 1.0, 2000, at=1000.0)
    sim.run(1300)
    assert sim.shares(1002, 1000 + 0.9 * H)["new"] == 1.0
    assert sim.shares(1000 + 1.1 * H, 1000 + 1.3 * H).get("new", 0) < 0.9
    assert abs(sim.shares(1000 + 2 * H, 1300)["new"] - 0.5) <= 0.1


def test_credit_cap_shortens_the_newcomers_run() -> None:
    sim = Sim(DecayedUsagePolicy(half_life=H, credit_cap=10.0), slots=4)
    sim.jobs("old", 1.0, 8000)
    sim.jobs("new", 1.0, 2000, at=1000.0)
    sim.run(1300)
    assert sim.shares(1000 + 0.3 * H, 1000 + 0.9 * H)["new"] < 0.7


def _org_tree() -> dict[str, TenantConfig]:
    return {"org1": TenantConfig("org1"), "org2": TenantConfig("org2"),
            "u1": TenantConfig("u1", parent="org1"), "u2": TenantConfig("u2", parent="org1"),
            "u3": TenantConfig("u3", parent="org2")}


def test_a_tree_divides_a_groups_share_among_its_members() -> None:
    for ranking in ("classic", "fair-tree"):
        sim = Sim(DecayedUsagePolicy(half_life=1000.0, ranking=ranking), slots=8, tenants=_org_tree())
        for tenant in ("u1", "u2", "u3"):
            sim.jobs(tenant, 1.0, 1000)
        sim.run(100)
        shares = sim.shares(10, 100)
        assert abs(shares["u3"] - 0.5) <= 0.02, ranking
        assert abs(shares["u1"] - 0.25) <= 0.02, ranking


def test_fair_tree_puts_every_member_of_the_thriftier_group_first() -> None:
    usage = {"u1": 0.0, "u2": 100.0, "u3": 40.0}  # org1 used 100 of its half, org2 40 of its half
    order = {}
    for ranking in ("classic", "fair-tree"):
        policy = DecayedUsagePolicy(half_life=H, ranking=ranking)
        policy.configure(_org_tree(), Resources(1.0))
        policy.restore({"policy": "decayed-usage", "version": 1, "at": 0.0, "usage": usage}, 0.0)
        for seq, tenant in enumerate(("u1", "u2", "u3")):
            policy.enqueue(job(tenant, seq))
        order[ranking] = policy.ranking()
    assert order["classic"] == ["u1", "u3", "u2"]  # u1's own usage is nil
    assert order["fair-tree"] == ["u3", "u1", "u2"]  # org2 used less of its share than org1


def test_a_tenant_with_heavy_past_usage_still_gets_slots_as_it_decays() -> None:
    sim = Sim(DecayedUsagePolicy(half_life=H), slots=2)
    sim.dispatcher.restore({"policy": "decayed-usage", "version": 1, "at": 0.0,
                            "usage": {"hog": 1000.0}}, 0.0)
    sim.jobs("hog", 1.0, 2000)
    sim.jobs("fresh", 1.0, 2000)
    sim.run(1000)
    first = min(t for t, uid in sim.starts if uid.startswith("hog"))
    assert first < 6 * H
    assert abs(sim.shares(800, 1000)["hog"] - 0.5) <= 0.05


def test_reloading_the_policy_file_keeps_every_tenants_usage() -> None:
    policy = used_whole_pool(10.0)
    before = policy.usage("alice")
    policy.configure({"lab": TenantConfig("lab", 3), "alice": TenantConfig("alice", parent="lab")})
    assert math.isclose(policy.usage("alice"), before, rel_tol=1e-12)
    assert math.isclose(policy.usage("lab"), before, rel_tol=1e-12)  # a group holds its members' sum
    assert policy.tree.path("alice") == ("lab", "alice")


def test_the_ranking_reads_usage_in_steps_of_a_millionth_of_the_half_life() -> None:
    # H = 2^20 s: a one-second step. alice used the pool for 0.3 s; bob runs from 0.3 s on, and
    # his usage passes hers at 0.6 s, but the ranking sees it only from the next step on.
    policy = DecayedUsagePolicy(half_life=2.0**20)
    policy.configure(capacity=Resources(1.0))
    used, waiting = job("alice", 1), job("alice", 2)
    running, queued = job("bob", 3), job("bob", 4)
    for queued_job in (used, waiting, running, queued):
        policy.enqueue(queued_job)
    policy.on_start(used, 0.0)
    policy.on_finish(used, 0.3, 0.3)
    policy.on_start(running, 0.3)
    policy.begin_round(0.9)
    assert policy.usage("bob") > policy.usage("alice")  # usage itself is exact
    assert policy.ranking() == ["bob", "alice"]  # ranked as of 0.0 s
    policy.begin_round(1.0)
    assert policy.ranking() == ["alice", "bob"]


def test_a_job_is_charged_the_runtime_its_node_measured() -> None:
    policy = DecayedUsagePolicy(half_life=1e9)
    policy.configure(weights(a=1), Resources(1.0))
    first, second = job("a", 1), job("a", 2)
    policy.enqueue(first)
    policy.enqueue(second)
    policy.on_start(first, 0.0)
    policy.on_finish(first, 5.0, 5.0)
    policy.begin_round(5.0)
    # a start the policy learns of after later events (a job replayed after a restart): its
    # node says it ran 1.5 s, of which the policy saw 1 s
    policy.on_start(second, 2.0, resumed=True)
    policy.on_finish(second, 6.0, 1.5)
    policy.begin_round(6.0)
    assert math.isclose(policy.usage("a"), 5.0 + 1.5, rel_tol=1e-6)

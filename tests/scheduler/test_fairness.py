"""The fairness figures on hand-made numbers: Jain's index, D_abs, water-filling, percentiles, the ledger."""

from __future__ import annotations

import math

import pytest

from fairpool.policies.resources import Resources
from fairpool.policies.tenants import TenantConfig
from fairpool.scheduler.fairness import (
    Claim,
    ShareLedger,
    d_abs,
    fairness_ratios,
    jain_index,
    limit_cap,
    percentile,
    water_fill,
)

# --- Jain's index and D_abs ---------------------------------------------------------


def test_jain_index_is_one_when_every_tenant_gets_its_entitlement() -> None:
    assert jain_index([1.0, 1.0, 1.0]) == pytest.approx(1.0)


def test_jain_index_is_one_over_n_when_one_tenant_gets_everything() -> None:
    assert jain_index([4.0, 0.0, 0.0, 0.0]) == pytest.approx(0.25)


def test_jain_index_on_hand_made_ratios() -> None:
    # (1 + 0.5)^2 / (2 * (1 + 0.25)) = 2.25 / 2.5
    assert jain_index([1.0, 0.5]) == pytest.approx(0.9)
    # the memoryless split of 1:2:3 on 8 slots: x = (0.25/(1/6), 0.375/(2/6), 0.375/(3/6)) = (1.5, 1.125, 0.75)
    assert jain_index([1.5, 1.125, 0.75]) == pytest.approx(3.375**2 / (3 * (2.25 + 1.265625 + 0.5625)))


def test_jain_index_of_nothing_is_none() -> None:
    assert jain_index([]) is None
    assert jain_index([0.0, 0.0]) is None


def test_d_abs_is_the_largest_absolute_gap() -> None:
    actual = {"a": 0.25, "b": 0.375, "c": 0.375}
    entitled = {"a": 1 / 6, "b": 2 / 6, "c": 3 / 6}
    assert d_abs(actual, entitled) == pytest.approx(0.125)


def test_d_abs_counts_a_tenant_missing_from_either_side_as_zero() -> None:
    assert d_abs({"a": 1.0}, {"a": 0.6, "b": 0.4}) == pytest.approx(0.4)
    assert d_abs({"a": 0.7, "x": 0.3}, {"a": 0.7}) == pytest.approx(0.3)


def test_d_abs_of_nothing_is_none() -> None:
    assert d_abs({}, {}) is None


def test_fairness_ratios_leave_out_tenants_entitled_to_nothing() -> None:
    ratios = fairness_ratios({"a": 0.5, "b": 0.5}, {"a": 1.0, "b": 0.0})
    assert ratios == {"a": 0.5}


# --- water-filling --------------------------------------------------------------------


def test_water_fill_splits_by_weight_among_backlogged_tenants() -> None:
    given = water_fill({"a": Claim(1), "b": Claim(2), "c": Claim(3)}, 1.0)
    assert given == pytest.approx({"a": 1 / 6, "b": 2 / 6, "c": 3 / 6})


def test_water_fill_gives_what_a_tenant_does_not_need_to_the_others_by_weight() -> None:
    given = water_fill({"small": Claim(1, demand=0.1), "a": Claim(1), "b": Claim(3)}, 1.0)
    assert given == pytest.approx({"small": 0.1, "a": 0.225, "b": 0.675})


def test_water_fill_respects_caps() -> None:
    given = water_fill({"capped": Claim(3, cap=0.2), "free": Claim(1)}, 1.0)
    assert given == pytest.approx({"capped": 0.2, "free": 0.8})


def test_water_fill_serves_higher_tiers_first() -> None:
    given = water_fill({"high": Claim(1, cap=0.6, tier=1), "low1": Claim(1), "low2": Claim(3)}, 1.0)
    assert given == pytest.approx({"high": 0.6, "low1": 0.1, "low2": 0.3})


def test_water_fill_leaves_what_nobody_wants() -> None:
    given = water_fill({"a": Claim(1, demand=0.2), "b": Claim(1, demand=0.3)}, 1.0)
    assert given == pytest.approx({"a": 0.2, "b": 0.3})


def test_water_fill_of_nothing_gives_nothing() -> None:
    assert water_fill({"a": Claim(1), "b": Claim(1)}, 0.0) == {"a": 0.0, "b": 0.0}


def test_limit_cap_turns_max_running_and_max_into_a_pool_fraction() -> None:
    pool = Resources(16.0)
    assert limit_cap(TenantConfig("a", max_running=4), Resources(1.0), pool) == pytest.approx(0.25)
    # 2-cpu jobs under max cpus = 7: 3 of them fit
    assert limit_cap(TenantConfig("a", max=Resources(7.0)), Resources(2.0), pool) == pytest.approx(6 / 16)
    assert limit_cap(TenantConfig("a", max_running=2, max=Resources(8.0)), Resources(1.0), pool) == pytest.approx(2 / 16)


def test_limit_cap_of_an_unlimited_tenant_is_infinite() -> None:
    assert limit_cap(None, Resources(1.0), Resources(8.0)) == math.inf
    assert limit_cap(TenantConfig("a", weight=3), Resources(1.0), Resources(8.0)) == math.inf
    # a limit on a kind its jobs do not use holds nothing back
    assert limit_cap(TenantConfig("a", max=Resources(0.0, 0, 1)), Resources(1.0), Resources(8.0)) == math.inf


# --- percentiles ----------------------------------------------------------------------


def test_percentile_interpolates_between_closest_ranks() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert percentile(values, 50) == pytest.approx(3.0)
    assert percentile(values, 90) == pytest.approx(4.6)
    assert percentile(values, 100) == pytest.approx(5.0)
    assert percentile(values, 0) == pytest.approx(1.0)


def test_percentile_of_one_value_and_of_none() -> None:
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None


# --- the ledger ---------------------------------------------------------------------


def test_ledger_splits_a_run_across_the_bins_it_spans() -> None:
    ledger = ShareLedger(duration=1.0, resolution=0.25)
    ledger.add_usage("a", 0.1, 0.6, 0.5)
    assert ledger.received["a"] == pytest.approx([0.075, 0.125, 0.05, 0.0])


def test_ledger_shares_each_sum_to_one() -> None:
    ledger = ShareLedger(duration=2.0, resolution=0.5)
    ledger.add_usage("a", 0.0, 2.0, 0.25)
    ledger.add_usage("b", 0.0, 2.0, 0.75)
    for index in range(ledger.bins):
        ledger.add_entitlement(index, {"a": 0.5, "b": 0.5})
    got, due = ledger.shares(0, ledger.bins)
    assert got == pytest.approx({"a": 0.25, "b": 0.75})
    assert due == pytest.approx({"a": 0.5, "b": 0.5})
    assert sum(got.values()) == pytest.approx(1.0)


def test_a_run_past_the_end_is_counted_up_to_the_end_only() -> None:
    ledger = ShareLedger(duration=1.0, resolution=0.5)
    ledger.add_usage("a", 0.5, 3.0, 1.0)
    assert sum(ledger.received["a"]) == pytest.approx(0.5)


def _newcomer_ledger(late_share: list[float]) -> ShareLedger:
    """One bin per second: 'old' alone before second 2, then 'new' entitled to half."""
    ledger = ShareLedger(duration=len(late_share), resolution=1.0)
    for second, share in enumerate(late_share):
        ledger.add_usage("new", second, second + 1, share)
        ledger.add_usage("old", second, second + 1, 1.0 - share)
        ledger.add_entitlement(second, {"old": 1.0} if second < 2 else {"old": 0.5, "new": 0.5})
    return ledger


def test_newcomer_reach_is_when_it_first_gets_threshold_of_its_entitlement() -> None:
    ledger = _newcomer_ledger([0, 0, 0.1, 0.3, 0.46, 0.5, 0.5, 0.5, 0.5, 0.5])
    late = ledger.newcomer("new", 2.0, sliding=2.0, threshold=0.9, tolerance=0.1)
    assert late.reach == pytest.approx(3.0)  # the end of second 4, where 0.46 >= 0.9 * 0.5


def test_newcomer_settle_is_when_every_later_window_stays_within_tolerance() -> None:
    ledger = _newcomer_ledger([0, 0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.52, 0.48, 0.5])
    late = ledger.newcomer("new", 2.0, sliding=2.0, threshold=0.9, tolerance=0.1)
    assert late.reach == pytest.approx(1.0)
    # windows start at 2, 3, 4 (shares 1.0, 1.0, 0.75: off), then 5.. within 10%
    assert late.settle == pytest.approx(3.0)


def test_a_newcomer_that_never_gets_its_share_neither_reaches_nor_settles() -> None:
    ledger = _newcomer_ledger([0.0] * 10)
    late = ledger.newcomer("new", 2.0, sliding=2.0, threshold=0.9, tolerance=0.1)
    assert late.reach is None
    assert late.settle is None


def test_claim_defaults_to_a_backlogged_tenant() -> None:
    claim = Claim(2.0)
    assert claim.demand == math.inf
    assert claim.cap == math.inf
    assert claim.tier == 0

"""The tenant heap (fairpool.policies.heap, .nodeheap): both builds order tenants the same way."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fairpool.policies.heap import Key, TenantHeap, TupleHeap
from fairpool.policies.nodeheap import NodeHeap

HeapClass = Callable[[Callable[[str], Key]], TenantHeap]
BOTH = pytest.mark.parametrize("make", [TupleHeap, NodeHeap], ids=["tuples", "nodes"])


@BOTH
@settings(max_examples=200, deadline=None)
@given(start=st.lists(st.integers(0, 20), min_size=1, max_size=8),
       steps=st.lists(st.tuples(st.integers(0, 7), st.integers(-5, 10)), max_size=40))
def test_the_heap_always_returns_the_smallest_current_key(make: HeapClass, start: list[int],
                                                          steps: list[tuple[int, int]]) -> None:
    keys = {f"t{i}": float(k) for i, k in enumerate(start)}
    heap = make(lambda t: (keys[t], 0))
    heap.reset(sorted(keys))
    for index, change in steps:
        tenant = f"t{index % len(keys)}"
        keys[tenant] += change
        if change < 0:
            heap.push(tenant)  # the rule: a key that drops is pushed again
        best = heap.pop_best(set())
        assert best is not None and keys[best] == min(keys.values())
        heap.push(best)


@BOTH
@settings(max_examples=300, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["grow", "change", "join", "leave", "pop"]),
                              st.integers(0, 4), st.integers(-5, 5)), max_size=60))
def test_the_heap_returns_the_smallest_as_tenants_come_and_go(make: HeapClass,
                                                              ops: list[tuple[str, int, int]]) -> None:
    keys: dict[str, float] = {}
    present: set[str] = set()
    heap = make(lambda t: (keys[t],))
    for op, index, delta in ops:
        tenant = f"t{index}"
        keys.setdefault(tenant, float(index))
        if op == "grow":
            keys[tenant] += abs(delta)  # a key that grows needs no word to the heap
        elif op == "change":
            keys[tenant] += delta
            if tenant in present:
                heap.lower(tenant)
        elif op == "join" and tenant not in present:
            heap.push(tenant)
            present.add(tenant)
        elif op == "leave":
            heap.discard(tenant)
            present.discard(tenant)
        elif op == "pop":
            best = heap.pop_best(set())
            if not present:
                assert best is None
                continue
            assert best is not None and keys[best] == min(keys[t] for t in present)
            heap.push(best)
    assert len(heap) == len(present)


# Keys as the policies make them (one length per policy, above the lone tenant's (-inf,)), and
# the awkward ones: ties, ints beyond a float's precision (equal as floats, different as ints),
# keys longer than the five parts kept as floats, infinities after the first part.
PART = st.one_of(st.sampled_from([0.0, 1.0, -1.0, 0.5, float("-inf"), float("inf")]),
                 st.integers(-3, 3), st.sampled_from([2**60, 2**60 + 1]))
FIRST = st.one_of(st.sampled_from([0.0, 1.0, -1.0, 0.5]), st.integers(-3, 3))
# a few keys per example, so that equal keys and keys equal in their first five parts are common
OPS = st.integers(1, 7).flatmap(lambda n: st.lists(st.tuples(FIRST, *[PART] * (n - 1)), min_size=1, max_size=4)).flatmap(
    lambda pool: st.lists(st.tuples(st.sampled_from(["key", "push", "lower", "leave", "pop", "first", "aside"]),
                                    st.integers(0, 5), st.sampled_from(pool)), max_size=80))


@settings(max_examples=500, deadline=None)
@given(ops=OPS)
def test_both_builds_pick_the_same_tenants_in_the_same_order(ops: list[tuple[str, int, Key]]) -> None:
    """The compiled build uses NodeHeap, pure Python TupleHeap: decisions must not depend on the build."""
    keys: dict[str, Key] = {}
    heaps = [TupleHeap(lambda t: keys[t]), NodeHeap(lambda t: keys[t])]
    trace: list[list[object]] = [[], []]
    for op, index, key in ops:
        tenant = f"t{index}"
        if op == "key":  # a key that grows needs no word to the heap; one that drops does
            dropped = tenant in keys and key < keys[tenant]
            keys[tenant] = key
            if dropped:
                for heap in heaps:
                    if tenant in heap:
                        heap.push(tenant)
            continue
        keys.setdefault(tenant, key)
        for heap, seen in zip(heaps, trace, strict=True):
            if op == "push":
                heap.push(tenant)
            elif op == "lower" and tenant in heap:
                heap.lower(tenant)
            elif op == "leave":
                heap.discard(tenant)
            elif op == "pop":
                seen.append(heap.pop_best(set()))
            elif op == "first":
                seen.append(heap.goes_first(key))
            elif op == "aside":
                seen.append(heap.pop_best({tenant}))
                heap.restore_aside(lambda t: True)
            seen.append(len(heap))
    assert trace[0] == trace[1]


@BOTH
def test_a_lone_tenant_costs_no_key_computation(make: HeapClass) -> None:
    computed: list[str] = []

    def key(tenant: str) -> tuple[float, ...]:
        computed.append(tenant)
        return (1.0,) if tenant == "a" else (0.5,)

    heap = make(key)
    heap.push("a")
    heap.lower("a")
    assert heap.pop_best(set()) == "a"
    heap.push("a")
    assert computed == []
    heap.push("b")  # a competitor: now keys decide
    assert heap.pop_best(set()) == "b"
    assert computed


@BOTH
def test_tenants_skipped_this_round_come_back_with_restore_aside(make: HeapClass) -> None:
    keys = {"a": 1.0, "b": 2.0}
    heap = make(lambda t: (keys[t],))
    heap.reset(["a", "b"])
    assert heap.pop_best({"a"}) == "b"
    assert heap.aside == ["a"]
    heap.restore_aside(lambda t: True)
    assert heap.pop_best(set()) == "a"


@BOTH
def test_equal_keys_go_in_the_order_the_tenants_were_keyed(make: HeapClass) -> None:
    heap = make(lambda t: (1.0, 0))
    for tenant in ["c", "a", "b"]:
        heap.push(tenant)
    heap.push("c")  # keyed again: now last among equals
    assert [heap.pop_best(set()) for _ in range(3)] == ["a", "b", "c"]


@BOTH
def test_a_key_equal_to_the_smallest_goes_first(make: HeapClass) -> None:
    heap = make(lambda t: (1.0, 5))
    assert heap.goes_first((9.0,))  # nobody waits
    heap.reset(["a", "b"])
    assert heap.goes_first((1.0, 5))
    assert heap.goes_first((1.0, 4))
    assert not heap.goes_first((1.0, 6))


@BOTH
@pytest.mark.parametrize("bigger, smaller", [
    ((1.0, 2**60 + 1), (1.0, 2**60)),  # equal as floats
    ((0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0), (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)),  # past the fifth part
])
def test_keys_equal_in_their_float_parts_are_told_apart_by_their_exact_ones(
        make: HeapClass, bigger: Key, smaller: Key) -> None:
    keys = {"a": bigger, "b": smaller}
    heap = make(lambda t: keys[t])
    heap.reset(["a", "b"])  # "a" keyed first: by order alone it would go first
    assert not heap.goes_first(bigger)
    assert heap.pop_best(set()) == "b"

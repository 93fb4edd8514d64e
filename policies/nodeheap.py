"""``NodeHeap``: the tenant heap of the compiled build (``heap`` says what a tenant heap is).

Each tenant has one node, updated in place (no stale entries), holding the
first five parts of its key as plain floats besides the key itself (enough for
every built-in policy's: priority's rank, tier, tag, head priority and sequence):
compiled, the sift loops compare two nodes with a few machine instructions
instead of comparing tuples element by element through the object protocol.
Ties go by the order in which the tenants were last keyed, as in ``TupleHeap``.
Interpreted, it is slower than ``TupleHeap`` on ``heapq``: pure Python keeps that.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Set
from typing import Final

from mypy_extensions import i64

from .heap import LOWEST, Key, TenantHeap

_NEG: Final = LOWEST[0]  # pads a short key: a key that is a prefix of another is smaller


class _Node:
    """One tenant in the heap: its key (parts as floats too), when it was keyed, where it sits."""

    __slots__ = ("tenant", "key", "k0", "k1", "k2", "k3", "k4", "counter", "pos")

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        self.key: Key = LOWEST
        self.k0 = self.k1 = self.k2 = self.k3 = self.k4 = _NEG
        self.counter: i64 = 0
        self.pos: i64 = 0

    def set_key(self, key: Key, counter: i64) -> None:
        n = len(key)
        self.key = key
        # float(): a part may be an int (a head job's priority and sequence)
        self.k0 = float(key[0]) if n > 0 else _NEG
        self.k1 = float(key[1]) if n > 1 else _NEG
        self.k2 = float(key[2]) if n > 2 else _NEG
        self.k3 = float(key[3]) if n > 3 else _NEG
        self.k4 = float(key[4]) if n > 4 else _NEG
        self.counter = counter

    def take_key(self, other: _Node, counter: i64) -> None:
        """The key ``other`` holds (already converted: no second pass over the tuple)."""
        self.key = other.key
        self.k0, self.k1, self.k2, self.k3, self.k4 = other.k0, other.k1, other.k2, other.k3, other.k4
        self.counter = counter


def _before(a: _Node, b: _Node) -> bool:
    """``(*a.key, a.counter) < (*b.key, b.counter)``, mostly without touching the tuples."""
    if a.k0 != b.k0:
        return a.k0 < b.k0
    if a.k1 != b.k1:
        return a.k1 < b.k1
    if a.k2 != b.k2:
        return a.k2 < b.k2
    if a.k3 != b.k3:
        return a.k3 < b.k3
    if a.k4 != b.k4:
        return a.k4 < b.k4
    # Equal as floats: the tuples decide (a longer key, ints beyond a float's precision) and, when
    # they are equal too, the counter does. Only equal keys get here, which are rare.
    if a.key != b.key:
        return a.key < b.key
    return a.counter < b.counter


class NodeHeap(TenantHeap):
    __slots__ = ("_heap", "_live", "_counter", "_probe")

    def __init__(self, key: Callable[[str], Key]) -> None:
        super().__init__(key)
        self._heap: list[_Node] = []
        self._live: dict[str, _Node] = {}  # tenant -> its node (in the heap)
        self._counter: i64 = 0
        self._probe = _Node("")  # a scratch node: compares a fresh key with a node's

    def __contains__(self, tenant: object) -> bool:
        return tenant in self._live

    def __len__(self) -> int:
        return len(self._live)

    def push(self, tenant: str, key: Key | None = None) -> None:
        self._counter += 1
        if key is None:
            key = self._first_key(tenant, alone=not self._live)
        node = self._live.get(tenant)
        probe = self._probe
        if node is None:
            node = self._live[tenant] = _Node(tenant)
            node.pos = len(self._heap)
            self._heap.append(node)
        # a key just weighed by _grew (goes_first, lower) is in the probe already, converted
        if probe.key is key:
            node.take_key(probe, self._counter)
        else:
            node.set_key(key, self._counter)
        self._fix(node.pos)

    def lower(self, tenant: str) -> None:
        node = self._live.get(tenant)
        if node is None:
            self.push(tenant)
        elif node.k0 != _NEG:  # (a node at the lowest bound cannot be lowered)
            key = self._key(tenant)
            if not self._grew(key, node):
                self.push(tenant, key)

    def discard(self, tenant: str) -> None:
        node = self._live.pop(tenant, None)
        if node is not None:
            self._remove_at(node.pos)

    def reset(self, tenants: Iterable[str]) -> None:
        self._heap.clear()
        self._live.clear()
        self.aside.clear()
        for tenant in tenants:
            self._counter += 1
            node = self._live[tenant] = _Node(tenant)
            node.set_key(self._key(tenant), self._counter)
            node.pos = len(self._heap)
            self._heap.append(node)
        for i in reversed(range(len(self._heap) // 2)):
            self._sift_down(i)

    def pop_best(self, skip: Set[str]) -> str | None:
        heap = self._heap
        while heap:
            node = heap[0]
            tenant = node.tenant
            if len(heap) > 1:  # (alone, it is the smallest whatever its key)
                fresh = self._key(tenant)
                if self._grew(fresh, node):  # not known to be the smallest yet
                    self._counter += 1
                    node.take_key(self._probe, self._counter)
                    self._sift_down(0)
                    continue
            del self._live[tenant]
            self._remove_at(0)
            if tenant in skip:
                self.aside.append(tenant)
                continue
            return tenant
        return None

    def goes_first(self, key: Key) -> bool:
        return not self._heap or not self._grew(key, self._heap[0])

    # --- the heap itself ------------------------------------------------------

    def _grew(self, key: Key, node: _Node) -> bool:
        """Whether ``key`` is bigger than the node's key (equal is not). The probe keeps ``key``."""
        probe = self._probe
        probe.set_key(key, node.counter)  # (the same counter: equal keys are not "bigger")
        return _before(node, probe)

    def _remove_at(self, pos: i64) -> None:
        heap = self._heap
        last = heap.pop()
        if pos < len(heap):
            heap[pos] = last
            last.pos = pos
            self._fix(pos)

    def _fix(self, pos: i64) -> None:
        if pos > 0 and _before(self._heap[pos], self._heap[(pos - 1) >> 1]):
            self._sift_up(pos)
        else:
            self._sift_down(pos)

    def _sift_up(self, pos: i64) -> None:
        heap = self._heap
        node = heap[pos]
        while pos > 0:
            parent_pos = (pos - 1) >> 1
            parent = heap[parent_pos]
            if not _before(node, parent):
                break
            heap[pos] = parent
            parent.pos = pos
            pos = parent_pos
        heap[pos] = node
        node.pos = pos

    def _sift_down(self, pos: i64) -> None:
        heap = self._heap
        size: i64 = len(heap)
        node = heap[pos]
        while True:
            child_pos = 2 * pos + 1
            if child_pos >= size:
                break
            child = heap[child_pos]
            right_pos = child_pos + 1
            if right_pos < size:
                right = heap[right_pos]
                if _before(right, child):
                    child, child_pos = right, right_pos
            if not _before(child, node):
                break
            heap[pos] = child
            child.pos = pos
            pos = child_pos
        heap[pos] = node
        node.pos = pos

"""Policies by name: the built-in ones, and third parties' through entry points."""

from __future__ import annotations

from collections.abc import Callable

from fairpool.policies.base import Policy, UnknownPolicy
from fairpool.policies.fifo import FifoPolicy

BUILTIN: dict[str, Callable[[], Policy]] = {
    "fifo": FifoPolicy,
}


def make_policy(name: str) -> Policy:
    factory = BUILTIN.get(name)
    if factory is None:
        known = ", ".join(sorted(BUILTIN))
        raise UnknownPolicy(f"unknown policy {name!r} (known: {known})")
    return factory()

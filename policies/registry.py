"""Policies by name: the built-in ones, and third parties' through entry points.

A third-party policy is a class (or factory) registered in the
``fairpool.policies`` entry-point group::

    [project.entry-points."fairpool.policies"]
    lottery = "mypkg.lottery:LotteryPolicy"

It implements ``fairpool.policies.base.Policy`` (most simply by subclassing
``fairpool.policies.core.PolicyBase`` and writing ``_key``); its options, if
any, are listed in ``OPTIONS`` (``fairpool.policies.options.Option``) and come
from the policy file's section named after it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any

from .base import Policy, UnknownPolicy
from .decayed import DecayedUsagePolicy
from .drf import DrfPolicy
from .fairshare import FairSharePolicy
from .fifo import FifoPolicy
from .options import Option, OptionError, parse_options
from .priority import PriorityPolicy
from .roundrobin import RoundRobinPolicy

GROUP = "fairpool.policies"
PolicyFactory = Callable[..., Policy]

BUILTIN: dict[str, PolicyFactory] = {
    "fifo": FifoPolicy,
    "round-robin": RoundRobinPolicy,
    "fair-share": FairSharePolicy,
    "decayed-usage": DecayedUsagePolicy,
    "drf": DrfPolicy,
    "priority": PriorityPolicy,
}


class PolicyLoadError(UnknownPolicy):
    """An entry point names a policy that fails to import."""


def _plugins() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=GROUP) if ep.name not in BUILTIN}


def known_policies() -> list[str]:
    """Every name ``make_policy`` accepts: built-ins first, then installed plugins."""
    return list(BUILTIN) + sorted(_plugins())


def policy_factory(name: str) -> PolicyFactory:
    factory = BUILTIN.get(name)
    if factory is not None:
        return factory
    plugin = _plugins().get(name)
    if plugin is None:
        raise UnknownPolicy(f"unknown policy {name!r} (known: {', '.join(known_policies())})")
    try:
        loaded: PolicyFactory = plugin.load()
    except Exception as exc:  # a broken plugin must not take the scheduler down unexplained
        raise PolicyLoadError(f"policy {name!r} from entry point {plugin.value!r} "
                              f"failed to load: {type(exc).__name__}: {exc}") from exc
    return loaded


def policy_options(name: str) -> tuple[Option, ...]:
    options = getattr(policy_factory(name), "OPTIONS", ())
    return tuple(options)


def make_policy(name: str, options: Mapping[str, Any] | None = None) -> Policy:
    """A fresh policy; ``options`` raw (as in the policy file) or already converted.

    UnknownPolicy for a name nobody provides; OptionError for a bad option.
    """
    factory = policy_factory(name)
    spec = policy_options(name)
    values = parse_options(name, spec, options or {}) if spec or options else {}
    try:
        return factory(**values)
    except (TypeError, ValueError) as exc:
        raise OptionError("", f"policy {name!r}: {exc}") from exc

"""Per-job options: what ``cluster.options(...)`` and the cluster's defaults ask of the scheduler.

``JobOptions`` is the user's view, recorded on each job (``job.options``):
``resources`` (``{"cpus": 2, "memory": "4G", "gpus": 1}``), ``timeout``
(seconds of running time, after which the node kills the job and it ends
FAILED), ``priority`` and ``node`` (run only on the node of that name:
``submit_node``). ``make_options`` checks every value at once, in the
caller's thread, so a typo fails at the call that made it.

``wire_options`` merges a job's options over the cluster's defaults (field by
field: a job asking for 4 cpus keeps the cluster's memory) into the wire's
``fairpool.messages.JobOptions``, or None when nothing is set.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fairpool.clients.errors import ClientConfigError
from fairpool.config import parse_size
from fairpool.messages import JobOptions as WireOptions

RESOURCE_KEYS = ("cpus", "memory", "gpus")


@dataclass(frozen=True)
class JobOptions:
    """Options of a job (``job.options``); None means "the cluster's default"."""

    resources: Mapping[str, Any] | None = None
    timeout: float | None = None
    priority: int | None = None
    node: str | None = None


def make_options(
    resources: Mapping[str, Any] | None = None,
    timeout: float | None = None,
    priority: int | None = None,
    node: str | None = None,
) -> JobOptions:
    """Checked options; ClientConfigError says which value is wrong."""
    if resources is not None:
        if not isinstance(resources, Mapping):
            raise ClientConfigError(f"resources must be a mapping like {{'cpus': 2, 'memory': '4G'}}, not {resources!r}")
        resources = dict(resources)
        parse_resources(resources)
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout < math.inf
    ):
        raise ClientConfigError(f"timeout must be a positive number of seconds (or None), not {timeout!r}")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise ClientConfigError(f"priority must be an integer, not {priority!r}")
    if node is not None and (not isinstance(node, str) or not node):
        raise ClientConfigError(f"node must be a node's name, not {node!r}")
    return JobOptions(resources, None if timeout is None else float(timeout), priority, node)


def parse_resources(resources: Mapping[str, Any]) -> tuple[float, int, int]:
    """(cpus, memory in bytes, gpus) from a resources mapping; 0 where not given."""
    unknown = sorted(set(resources) - set(RESOURCE_KEYS))
    if unknown:
        raise ClientConfigError(f"unknown resource {unknown[0]!r}: expected some of {', '.join(RESOURCE_KEYS)}")
    cpus = resources.get("cpus", 0)
    if isinstance(cpus, bool) or not isinstance(cpus, int | float) or not 0 <= cpus < math.inf:
        raise ClientConfigError(f"resources['cpus'] must be a number of CPUs, not {cpus!r}")
    gpus = resources.get("gpus", 0)
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
        raise ClientConfigError(f"resources['gpus'] must be a whole number of GPUs, not {gpus!r}")
    memory = resources.get("memory", 0)
    try:
        size = parse_size(memory)
    except Exception as exc:  # the config module's own error type is private to it
        raise ClientConfigError(f"resources['memory']: {exc}") from None
    return float(cpus), size, gpus


def wire_options(options: JobOptions | None, defaults: JobOptions | None) -> WireOptions | None:
    """The options a job's JobSubmit carries: its own over the cluster's defaults; None if none is set."""
    if options is None and defaults is None:
        return None
    own = options or JobOptions()
    base = defaults or JobOptions()
    resources = {**(base.resources or {}), **(own.resources or {})}
    cpus, memory, gpus = parse_resources(resources)
    timeout = own.timeout if own.timeout is not None else base.timeout
    priority = own.priority if own.priority is not None else base.priority
    node = own.node if own.node is not None else base.node
    wire = WireOptions(cpus, memory, gpus, timeout or 0.0, priority or 0, node or "")
    return None if wire == _NOTHING else wire


_NOTHING = WireOptions()

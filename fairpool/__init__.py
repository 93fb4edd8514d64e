"""fairpool: a shared, multi-tenant compute pool for Python.

The public API is re-exported here lazily, so that a daemon importing the
trunk (``fairpool.protocol``...) does not drag in the client library.
"""

from __future__ import annotations

import os as _os
from typing import TYPE_CHECKING, Any

from fairpool.jobstatus import JobStatus

__version__ = "0.1.0"

# In a source checkout the scheduler/nodes/clients/policies folders sit beside
# this one; an installed package maps them under ``fairpool.`` (pyproject's
# package-dir). When the checkout itself is on sys.path (python -m from the repo
# root), let the import system find them the same way.
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_root, "pyproject.toml")) and _os.path.isdir(_os.path.join(_root, "scheduler")):
    __path__.append(_root)  # noqa: F821  (module __path__)

_LAZY = {
    "SharedJobCluster": "fairpool.clients.cluster",
    "AsyncSharedJobCluster": "fairpool.clients.asynccluster",
    "JobCluster": "fairpool.clients.localcluster",
    "Job": "fairpool.clients.job",
    "recover_jobs": "fairpool.clients.cluster",
    "provisional_result": "fairpool.nodes.runtime",
    "send_file": "fairpool.nodes.runtime",
}

if TYPE_CHECKING:
    from fairpool.clients.cluster import SharedJobCluster, recover_jobs
    from fairpool.clients.job import Job


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fairpool' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = ["JobStatus", "SharedJobCluster", "Job", "recover_jobs", "__version__", *_LAZY]

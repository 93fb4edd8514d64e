"""fairpool.policies: fair-share policies, pure and deterministic.

- ``base``: the interface (``Policy``, ``QueuedJob``, ``Explanation``, ``UnknownPolicy``);
- ``core``: ``PolicyBase``, the bookkeeping every built-in shares;
- one module per policy: ``fifo``, ``roundrobin``, ``fairshare``, ``decayed``, ``drf``, ``priority``;
- ``limits``: quotas shared by all policies; ``dispatcher``: what the scheduler calls;
- ``registry``: policies by name, built-in or from the ``fairpool.policies`` entry points;
- ``resources``, ``tenants``, ``queues``, ``heap``, ``running``, ``estimates``, ``options``: the pieces.

A regular install compiles these modules with mypyc (setup.py); ``compiled()``
says whether the ones imported are.
"""

from __future__ import annotations

import importlib.machinery


def compiled() -> bool:
    """True when the policy modules in use are mypyc-compiled, False when pure Python."""
    from . import core

    return str(core.__file__).endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))

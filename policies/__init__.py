"""fairpool.policies: fair-share policies, pure and deterministic.

- ``base``: the interface (``Policy``, ``QueuedJob``, ``Explanation``, ``UnknownPolicy``);
- ``core``: ``PolicyBase``, the bookkeeping every built-in shares;
- one module per policy: ``fifo``, ``roundrobin``, ``fairshare``, ``decayed``, ``drf``, ``priority``;
- ``limits``: quotas shared by all policies; ``dispatcher``: what the scheduler calls;
- ``registry``: policies by name, built-in or from the ``fairpool.policies`` entry points;
- ``resources``, ``tenants``, ``queues``, ``heap``, ``estimates``, ``options``: the pieces.
"""

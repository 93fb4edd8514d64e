"""fairpool.clients: SharedJobCluster and friends, speaking the protocol to a scheduler.

How the pieces fit (each module's docstring says more):

* ``cluster``    -- ``SharedJobCluster``, the synchronous public API
* ``job``        -- ``Job``, a Future carrying the job's record; ``JobOptions``
* ``leanfuture`` -- the Future base that keeps per-job overhead low
* ``spec``       -- packing the computation, depends and each job's arguments
* ``settings``   -- scheduler address, tenant, secret: arguments, FAIRPOOL_* variables, defaults
* ``recover``    -- the ``fairpool-<cluster_id>.recover`` file
* ``session``    -- the cluster's state without I/O: unsent, unqueued, unacknowledged jobs
* ``connection`` -- the trio side: open, batched submits, updates, heartbeats, reconnection
* ``loopthread`` -- the background thread that runs a connection for the synchronous API
* ``errors``     -- the exceptions, by family
"""

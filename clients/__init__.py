"""fairpool.clients: SharedJobCluster and friends, speaking the protocol to a scheduler.

How the pieces fit (each module's docstring says more):

* ``cluster``      -- ``SharedJobCluster`` (``reattach`` too), the synchronous public API, ``recover_jobs``
* ``asynccluster`` -- ``AsyncSharedJobCluster``, the same for trio code (``await job``)
* ``localcluster`` -- ``JobCluster``: the same API on a private pool started on demand
* ``executor``     -- ``cluster.executor()``, a concurrent.futures Executor (with ``calls``, its node side)
* ``core``         -- what the clusters share: construction, default options, submitting, cancelling
* ``job``          -- ``Job``, a Future carrying the job's record
* ``options``      -- per-job options (``cluster.options(...)``) and the cluster's defaults
* ``leanfuture``   -- the Future base that keeps per-job overhead low
* ``spec``         -- packing the computation, depends and each job's arguments
* ``settings``     -- scheduler address, tenant, secret: arguments, FAIRPOOL_* variables, defaults
* ``recover``      -- the ``fairpool-<cluster_id>.recover`` file: header, job log, reading it back
* ``reattach``     -- re-attaching to an earlier client's cluster: settings, the scheduler's job list
* ``session``      -- the cluster's state without I/O: unsent, unqueued, unacknowledged jobs, cancels
* ``statuses``     -- how status changes reach users: at once, or through the callback thread
* ``notify``       -- the one thread that runs users' callbacks, in order
* ``files``        -- files sent by jobs, written under ``dest_path``
* ``connection``   -- the trio side: open, batched submits, updates, heartbeats, reconnection
* ``loopthread``   -- the background thread that runs a connection for the synchronous API
* ``errors``       -- the exceptions, by family
"""

"""In-memory processing: setup loads data once per worker process; every job reads it.

    python examples/setup_globals.py
"""

from fairpool import JobCluster


def setup():
    # Runs once in each worker process before the cluster's first job there.
    global table
    table = {n: n * n for n in range(1000)}


def lookup(n):
    return table[n]


if __name__ == "__main__":
    with JobCluster(lookup, setup=setup, cpus=2) as cluster:
        jobs = [cluster.submit(n) for n in (3, 7, 12)]
        print("squares:", [job.result(timeout=60) for job in jobs])

"""A concurrent.futures Executor over the pool: any function, map with chunks.

    python examples/executor.py
"""

import math

from fairpool import JobCluster


def noop():
    return None


if __name__ == "__main__":
    with JobCluster(noop, cpus=2) as cluster:
        with cluster.executor() as pool:
            print("sqrt:", pool.submit(math.sqrt, 144).result(timeout=60))
            print("squares:", list(pool.map(pow, range(6), [2] * 6, chunksize=3)))

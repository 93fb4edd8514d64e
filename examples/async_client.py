"""The trio-native client: submit and await jobs from trio code.

    python examples/async_client.py
"""

import trio

from fairpool import AsyncSharedJobCluster, JobCluster


def double(x):
    return 2 * x


async def main(scheduler, secret_file):
    async with AsyncSharedJobCluster(double, scheduler=scheduler, secret_file=secret_file) as cluster:
        jobs = [await cluster.submit(n) for n in range(5)]
        async for job in cluster.as_completed(jobs):
            print("done:", await job)


if __name__ == "__main__":
    # A private pool to talk to (with a shared scheduler, give its address and secret file instead).
    with JobCluster(double, cpus=2) as pool:
        trio.run(main, pool.pool.address, str(pool.pool.secret_file))

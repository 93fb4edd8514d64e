"""Provisional results: a long job reports progress; the client sees each value as it comes.

    python examples/provisional.py
"""

import time

import fairpool
from fairpool import JobCluster


def train(epochs):
    loss = 1.0
    for epoch in range(epochs):
        time.sleep(0.1)
        loss /= 2
        fairpool.provisional_result({"epoch": epoch, "loss": loss})
    return loss


def show(job):
    if job.status == fairpool.JobStatus.PROVISIONAL:
        print("progress:", job.provisional)


if __name__ == "__main__":
    with JobCluster(train, job_status=show, cpus=1) as cluster:
        print("final loss:", cluster.submit(4).result(timeout=60))

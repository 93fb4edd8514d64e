"""A standalone program as the computation: its arguments, output and exit code come back.

    python examples/program.py
"""

import sys

from fairpool import JobCluster

if __name__ == "__main__":
    # Any executable path works; here, the Python interpreter itself.
    with JobCluster(sys.executable, cpus=2) as cluster:
        job = cluster.submit("-c", "import sys; print('hello from a program'); sys.exit(3)")
        exit_code = job.result(timeout=60)
        print(f"exit code {exit_code}, output {job.stdout.strip()!r}")

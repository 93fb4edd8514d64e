"""A job writes a file on its node and sends it back; it lands in the client's dest_path.

    python examples/send_file.py
"""

import tempfile
from pathlib import Path

import fairpool
from fairpool import JobCluster


def report(name):
    path = Path(f"{name}.txt")  # in the job's working directory on the node
    path.write_text(f"report {name}\n")
    fairpool.send_file(str(path))
    return path.name


if __name__ == "__main__":
    dest = Path(tempfile.mkdtemp(prefix="fairpool-example-"))
    with JobCluster(report, dest_path=str(dest), cpus=1) as cluster:
        name = cluster.submit("weekly").result(timeout=60)
    print("received:", (dest / name).read_text().strip())

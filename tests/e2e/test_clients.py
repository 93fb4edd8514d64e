"""End to end: several client processes share the pool, each gets only its own results."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.timeout(120)

CLIENT = textwrap.dedent("""
    import json, sys
    from fairpool import SharedJobCluster

    me = sys.argv[1]

    def tag(i):
        return (me, i)

    with SharedJobCluster(tag, scheduler=sys.argv[2], secret_file=sys.argv[3], tenant=me) as cluster:
        jobs = [cluster.submit(i) for i in range(200)]
        print(json.dumps([job.result(timeout=90) for job in jobs]))
""")


def test_concurrent_client_processes_each_get_only_their_own_results(scheduler, start_node, cluster_kwargs, tmp_path):
    start_node(cpus=2, name="n1")
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    names = ["alice", "bob", "carol"]
    procs = [
        subprocess.Popen([sys.executable, str(script), name, cluster_kwargs["scheduler"],
                          str(cluster_kwargs["secret_file"])], cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name in names
    ]
    for name, proc in zip(names, procs, strict=True):
        out, err = proc.communicate(timeout=110)
        assert proc.returncode == 0, err
        results = json.loads(out.strip().splitlines()[-1])
        assert results == [[name, i] for i in range(200)]

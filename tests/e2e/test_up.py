"""`fairpool up`: scheduler + local node in the foreground, stopped cleanly by a signal."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from fairpool import SharedJobCluster

pytestmark = pytest.mark.timeout(120)

FAIRPOOL = str(Path(sys.executable).parent / "fairpool")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_up_serves_jobs_and_stops_cleanly_on_signal(tmp_path, sig):
    from conftest import wait_for

    proc = subprocess.Popen([FAIRPOOL, "up", "--listen", "127.0.0.1:0", "--cpus", "2"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        address_file = tmp_path / ".fairpool" / "scheduler.address"
        wait_for(lambda: address_file.exists() or proc.poll() is not None, timeout=30,
                 message="fairpool up wrote its address")
        assert proc.poll() is None, proc.stderr.read()
        address = address_file.read_text().strip()
        secret = tmp_path / ".fairpool" / "secret"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600

        with SharedJobCluster(lambda x: x * 2, scheduler=address, secret_file=str(secret)) as cluster:
            assert cluster.submit(5).result(timeout=60) == 10

        proc.send_signal(sig)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "Traceback" not in out
    assert address in out + err  # the banner told the user where to connect
    assert str(secret.name) in out + err

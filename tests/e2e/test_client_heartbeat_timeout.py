"""End to end: a client's ``heartbeat_timeout=`` notices a frozen scheduler that soon, and reconnects."""

from __future__ import annotations

import logging
import signal
import time

import pytest
from conftest import wait_for

from fairpool import SharedJobCluster

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("in_tmp_dir")]


def test_short_heartbeat_timeout_notices_a_frozen_scheduler_and_reconnects(one_node_pool, scheduler, caplog):
    caplog.set_level(logging.WARNING, logger="fairpool.clients")
    with SharedJobCluster(abs, heartbeat_timeout=2, **one_node_pool) as cluster:
        assert cluster._connection.timing.heartbeat_timeout == 2.0
        assert cluster.submit(-1).result(timeout=60) == 1
        frozen = time.monotonic()
        scheduler.send_signal(signal.SIGSTOP)  # the connection stays open; nothing answers
        try:
            wait_for(lambda: "nothing heard from the scheduler in 2s" in caplog.text, timeout=15)
            noticed = time.monotonic() - frozen
        finally:
            scheduler.send_signal(signal.SIGCONT)
        # the default (10s) would not have noticed yet; 2s plus a heartbeat tick and slack on a busy host
        assert noticed < 8, f"noticed after {noticed:.1f}s"
        wait_for(lambda: "reconnected to the scheduler" in caplog.text, timeout=30)
        assert cluster.submit(-2).result(timeout=60) == 2

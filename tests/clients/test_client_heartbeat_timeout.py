"""``heartbeat_timeout=``: how long a client hears nothing before it counts its connection dead."""

from __future__ import annotations

import math

import pytest

from fairpool import SharedJobCluster
from fairpool.clients.connection import DEFAULT_TIMING
from fairpool.clients.errors import ClientConfigError
from fairpool.clients.settings import connection_timing


def test_no_heartbeat_timeout_keeps_the_default_timing():
    assert connection_timing(None) is DEFAULT_TIMING
    assert DEFAULT_TIMING.heartbeat_timeout == 10.0


@pytest.mark.parametrize("seconds", [1.5, 3, 120.0])
def test_a_heartbeat_timeout_above_the_interval_is_taken(seconds):
    timing = connection_timing(seconds)
    assert timing.heartbeat_timeout == float(seconds)
    assert timing.heartbeat_interval == DEFAULT_TIMING.heartbeat_interval  # the rest stays


@pytest.mark.parametrize("bad", [0, -1, 0.5, 1, math.nan, math.inf, True, "5", [3]])
def test_a_bad_heartbeat_timeout_is_refused_with_what_is_expected(bad):
    with pytest.raises(ClientConfigError, match="heartbeat_timeout must be a number of seconds greater than"):
        connection_timing(bad)


def test_shared_job_cluster_refuses_a_bad_heartbeat_timeout_before_connecting(tmp_path):
    # no scheduler listens there and no secret exists: the bad value is reported first
    with pytest.raises(ClientConfigError, match="heartbeat_timeout"):
        SharedJobCluster(abs, scheduler="127.0.0.1:9", secret_file=tmp_path / "none", heartbeat_timeout=math.nan)


def test_reattach_refuses_a_bad_heartbeat_timeout():
    with pytest.raises(ClientConfigError, match="heartbeat_timeout"):
        SharedJobCluster.reattach("0" * 32, scheduler="127.0.0.1:9", heartbeat_timeout=0)

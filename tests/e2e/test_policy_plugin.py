"""A third party's policy, installed as a distribution with a `fairpool.policies` entry point,
is selected by name by a real scheduler; an unknown name is refused and changes nothing."""

from __future__ import annotations

import json
import textwrap

import pytest
from conftest import run_admin

from fairpool import SharedJobCluster

pytestmark = pytest.mark.timeout(90)

@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    """A tiny distribution on the daemons' path: a module and its .dist-info with the entry point."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "tinypolicy.py").write_text(textwrap.dedent("""
        from fairpool.policies.fifo import FifoPolicy

        class TinyPolicy(FifoPolicy):
            name = "tiny"
    """))
    info = site / "tinypolicy-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tinypolicy\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[fairpool.policies]\ntiny = tinypolicy:TinyPolicy\n")
    monkeypatch.setenv("PYTHONPATH", str(site))  # the scheduler subprocess inherits it
    return site


@pytest.mark.scheduler_config(policy="tiny")
def test_a_policy_installed_through_the_entry_point_group_is_selected_by_name(
    installed_plugin, scheduler, start_node, cluster_kwargs
):
    shown = run_admin(scheduler, "--json", "policy", "show")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["policy"] == "tiny"
    start_node(cpus=1, name="n1")
    with SharedJobCluster(lambda x: x + 1, **cluster_kwargs) as cluster:
        assert cluster.submit(41).result(timeout=60) == 42


def test_switching_live_to_the_plugin_and_to_an_unknown_name(installed_plugin, scheduler):
    assert run_admin(scheduler, "policy", "set", "tiny").returncode == 0
    refused = run_admin(scheduler, "policy", "set", "no-such-policy")
    assert refused.returncode == 1
    assert "unknown policy 'no-such-policy'" in refused.stderr and "tiny" in refused.stderr
    assert json.loads(run_admin(scheduler, "--json", "policy", "show").stdout)["policy"] == "tiny"

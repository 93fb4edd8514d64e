"""Fixtures for multi-host tests: a scheduler, nodes and clients on separate network namespaces.

- ``lab``: a private network (``multihost.netns.Lab``: a bridge and one
  namespace per host, 10.213.0.0/24), unmade when the test ends, passed or
  failed; stale namespaces of crashed runs are swept once per session.
- ``mh``: a ``MultiHost`` on that lab: ``mh.scheduler`` (a real
  ``fairpool scheduler`` in host "sched", listening on its 10.213.0.x
  address), ``mh.start_node(name, cpus)`` (a ``fairpool node`` in a host of
  its own), ``mh.client(label)`` (a ``RemotePython`` in a host of its own)
  and ``mh.admin(verb)`` (an admin request, from a host of its own).

Every module here is skipped, with the reason, where namespaces cannot be
made (not root, no iproute2). Daemons log JSON (``logged()`` counts events)
and their logs are attached to a failed test's report.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from multihost.hosts import DAEMONS, MultiHost
from multihost.netns import Lab, sweep_stale, unavailable_reason

_REASON = unavailable_reason()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _REASON is None:
        return
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.skip(reason=f"multi-host tests need network namespaces: {_REASON}"))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport,
                                                                                              pytest.TestReport]:
    report = yield
    if report.failed and report.when in ("setup", "call"):
        for daemon in item.stash.get(DAEMONS, []):
            report.sections.append((f"{daemon.label} log ({daemon.status()})", daemon.log_tail()))
    return report


@pytest.fixture(scope="session")
def _swept() -> None:
    sweep_stale()


@pytest.fixture
def lab(_swept: None) -> Iterator[Lab]:
    """A private network of namespaces, deleted (with whatever still runs in it) after the test."""
    network = Lab()
    try:
        network.open()
        yield network
    finally:
        network.close()


@pytest.fixture
def mh(lab: Lab, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[MultiHost]:
    """A started scheduler on host "sched"; nodes and clients are added by the test."""
    hosts = MultiHost(lab, tmp_path, request)
    try:
        hosts.start_scheduler()
        yield hosts
    finally:
        hosts.close()

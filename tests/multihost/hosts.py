"""The hosts of a multi-host test: daemons started inside namespaces, clients, the admin, logs.

``MultiHost`` puts a real ``fairpool scheduler`` on host "sched" of a
``Lab`` (listening on its 10.213.0.x address), a ``fairpool node`` on a host
of its own per ``start_node``, and a ``RemotePython`` per ``client``; the
daemons log JSON, which ``logged()`` searches. Daemons are registered in the
test item's stash under ``DAEMONS`` so that the conftest attaches their logs
to a failed test's report.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, SchedulerProcess, fairpool_command
from multihost.netns import Host, Lab
from multihost.remote import RemotePython

SCHEDULER_CONFIG = {"heartbeat_interval": 0.5, "heartbeat_timeout": 3.0, "handshake_timeout": 3.0,
                    "log_format": "json", "log_level": "debug"}
# A node that hears nothing for its heartbeat timeout gives the connection up and reconnects.
NODE_CONFIG = {"heartbeat_interval": 0.3, "heartbeat_timeout": 3.0, "handshake_timeout": 3.0,
               "reconnect_max_delay": 1.0, "log_format": "json", "log_level": "debug"}

DAEMONS = pytest.StashKey[list[Daemon]]()


def _write_toml(path: Path, settings: dict[str, Any]) -> Path:
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items()))  # JSON scalars are TOML
    return path


def _spawn_in(host: Host, daemon: Daemon, args: Sequence[str]) -> None:
    """``Daemon._spawn``, inside ``host``'s namespace (``ip netns exec`` execs: the pid is the daemon's)."""
    assert not daemon.alive(), f"{daemon.label} is already running"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(daemon.stdout_path, "ab") as out, open(daemon.stderr_path, "ab") as err:
        daemon.process = subprocess.Popen(host.command([*fairpool_command(), daemon.kind, *args]),
                                          stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                                          start_new_session=True)


class NsScheduler(SchedulerProcess):
    def __init__(self, host: Host, state_dir: Path, log_dir: Path, extra_args: Sequence[str] = ()) -> None:
        super().__init__(state_dir, log_dir, extra_args)
        self.host = host

    def _spawn(self, args: Sequence[str]) -> None:
        _spawn_in(self.host, self, args)


class NsNode(Daemon):
    def __init__(self, host: Host, label: str, args: Sequence[str], log_dir: Path, name: str) -> None:
        super().__init__("node", label, args, log_dir, name)
        self.host = host

    def _spawn(self, args: Sequence[str]) -> None:
        _spawn_in(self.host, self, args)


class MultiHost:
    """A scheduler, nodes and clients of one test, each on a host of the lab."""

    def __init__(self, lab: Lab, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.lab = lab
        self.tmp_path = tmp_path
        self._request = request
        self.nodes: dict[str, NsNode] = {}
        self.clients: list[RemotePython] = []
        self._admin: RemotePython | None = None
        sched_host = lab.add_host("sched")
        config = _write_toml(tmp_path / "scheduler.toml", SCHEDULER_CONFIG)
        self.scheduler = NsScheduler(sched_host, tmp_path / "sched", tmp_path, ["--config", str(config)])
        self._node_config = _write_toml(tmp_path / "node.toml", NODE_CONFIG)
        self._register(self.scheduler)

    def _register(self, daemon: Daemon) -> None:
        self._request.node.stash.setdefault(DAEMONS, []).append(daemon)

    def start_scheduler(self) -> str:
        return self.scheduler.start(f"{self.scheduler.host.address}:0")

    def start_node(self, name: str, cpus: int = 2) -> NsNode:
        """A ``fairpool node`` named ``name`` on a new host ``name``; returns at once."""
        host = self.lab.add_host(name)
        node = NsNode(host, f"node-{name}", [
            "--scheduler", self.scheduler.address, "--secret-file", str(self.scheduler.secret_file),
            "--cpus", str(cpus), "--name", name, "--state-dir", str(self.tmp_path / f"node-{name}"),
            "--config", str(self._node_config),
        ], self.tmp_path, name)
        self._register(node)
        self.nodes[name] = node
        node.start()
        return node

    def client(self, label: str) -> RemotePython:
        """A Python process on a new host ``label``, with ``SCHEDULER`` and ``SECRET`` defined."""
        remote = RemotePython(self.lab.add_host(label), self.tmp_path, label)
        self.clients.append(remote)
        remote.exec(f"SCHEDULER = {self.scheduler.address!r}\nSECRET = {str(self.scheduler.secret_file)!r}\n"
                    "import fairpool\nfrom fairpool import SharedJobCluster, JobStatus\n", timeout=60)
        return remote

    def admin(self, verb: str, args: dict[str, Any] | None = None) -> Any:
        """One admin request (the cluster secret), asked from a host of its own."""
        if self._admin is None:
            self._admin = RemotePython(self.lab.add_host("admin"), self.tmp_path, "admin")
            self.clients.append(self._admin)
            self._admin.exec("from fairpool.admin import call, resolve_credentials\n"
                             f"creds = resolve_credentials(scheduler={self.scheduler.address!r}, "
                             f"secret_file={str(self.scheduler.secret_file)!r})\n", timeout=60)
        return self._admin.eval(f"call(creds, {verb!r}, {args or {}!r}, timeout=10)", timeout=30)

    def close(self) -> None:
        for remote in self.clients:
            remote.close(grace=2.0)
        for node in self.nodes.values():
            node.send_signal(signal.SIGTERM)  # all at once: their stops overlap
        for node in self.nodes.values():
            node.stop()
        self.scheduler.stop()

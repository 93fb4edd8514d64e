"""Private networks for multi-host tests: network namespaces joined by a bridge, made and unmade.

A ``Lab`` is one test's network: a hub namespace holding a bridge, and one
namespace per "host" (scheduler, nodes, clients), each joined to the bridge by
a veth pair whose outer end lives in the hub and whose inner end is the
host's ``eth0`` with an address in ``SUBNET`` (10.213.0.0/24). Everything is
created *inside* namespaces this module made: no interface, route or
firewall rule of the machine itself is touched, and the labs of concurrent
tests never meet (each lab is its own set of namespaces; the addresses repeat
from lab to lab, harmlessly).

Names are ``fp-<pid>-<lab>-<host>``, so that ``sweep_stale()`` can remove the
namespaces of a crashed run (its pid is gone) without touching a live run's.
``Lab.close()`` kills what still runs inside its namespaces (by pid, from
``ip netns pids``) and deletes them; deleting a namespace removes its veths.

``link_down(host)`` / ``link_up(host)`` set the hub end of a host's cable
down and up: the host's ``eth0`` loses carrier, packets both ways are
dropped, and neither kernel says a word -- a pulled cable, which only
heartbeats can notice.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

PREFIX = "fp-"
SUBNET = "10.213.0"  # /24, assigned only inside a lab's namespaces
BRIDGE = "br0"
IP_TIMEOUT = 10.0
_NAME = re.compile(rf"^{re.escape(PREFIX)}(\d+)-")
_labs = itertools.count(1)


class NetnsError(RuntimeError):
    """An ``ip`` command failed; the message has its stderr."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS`` (raise NetnsError with its stderr if it fails and ``check``)."""
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT,
                          stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


def unavailable_reason() -> str | None:
    """Why network namespaces cannot be made here (None: they can)."""
    if shutil.which("ip") is None:
        return "the 'ip' command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    probe = f"{PREFIX}{os.getpid()}-probe"
    try:
        ip("netns", "add", probe)
    except (NetnsError, OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot create a network namespace: {exc}"
    ip("netns", "del", probe, check=False)
    return None


def list_namespaces() -> list[str]:
    """Every named network namespace (``ip netns list``; ids and annotations left out)."""
    out = ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def kill_inside(name: str) -> None:
    """SIGKILL every process running in namespace ``name`` (all of them are a test's own)."""
    out = ip("netns", "pids", name, check=False).stdout
    for pid in (int(p) for p in out.split() if p.isdigit()):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def delete_namespace(name: str) -> None:
    kill_inside(name)
    ip("netns", "del", name, check=False)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale() -> list[str]:
    """Delete the ``fp-<pid>-*`` namespaces whose pid is gone (a crashed run's); return their names."""
    stale = []
    for name in list_namespaces():
        match = _NAME.match(name)
        if match and int(match.group(1)) != os.getpid() and not _pid_alive(int(match.group(1))):
            delete_namespace(name)
            stale.append(name)
    return stale


@dataclass
class Host:
    """One namespace of a lab: a "machine" with an ``eth0`` on the lab's bridge."""

    name: str  # the namespace
    role: str  # e.g. "sched", "node1"
    address: str  # its IPv4 address, no prefix length
    cable: str  # the hub-side veth: down = this host is cut off

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside this namespace (``ip netns exec``, which execs: same pid)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: Sequence[str], *, timeout: float = 30.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self.command(argv), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise NetnsError(f"{' '.join(argv)} in {self.name}: exit {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside this namespace (kwargs go to ``subprocess.Popen``)."""
        return subprocess.Popen(self.command(argv), **kwargs)


@dataclass
class Lab:
    """A bridge in a hub namespace and the hosts plugged into it; ``close()`` unmakes it all."""

    tag: str = field(default_factory=lambda: f"l{next(_labs)}")
    hosts: dict[str, Host] = field(default_factory=dict)
    _hub: str = ""
    _created: list[str] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return f"{PREFIX}{os.getpid()}-{self.tag}-"

    def open(self) -> Lab:
        self._hub = self._new_namespace("hub")
        ip("-n", self._hub, "link", "add", BRIDGE, "type", "bridge")
        ip("-n", self._hub, "link", "set", BRIDGE, "up")
        return self

    def _new_namespace(self, role: str) -> str:
        name = self.prefix + role
        delete_namespace(name)  # a leftover of this very pid (a test that crashed half-way)
        ip("netns", "add", name)
        self._created.append(name)
        ip("-n", name, "link", "set", "lo", "up")
        return name

    def add_host(self, role: str) -> Host:
        """A new namespace ``role`` with ``eth0`` = ``SUBNET.<n>/24`` on the bridge."""
        if not self._hub:
            raise NetnsError("Lab.open() first")
        if role in self.hosts:
            raise NetnsError(f"there is a host {role!r} already")
        if not re.fullmatch(r"[a-z0-9]{1,10}", role):
            raise NetnsError(f"host role {role!r}: 1-10 lowercase letters and digits (it names a veth)")
        name = self._new_namespace(role)
        number = len(self.hosts) + 1
        cable = f"v-{role}"
        # Made inside the hub, its peer born inside the host: nothing appears in the root namespace.
        ip("-n", self._hub, "link", "add", cable, "type", "veth", "peer", "name", "eth0", "netns", name)
        ip("-n", self._hub, "link", "set", cable, "master", BRIDGE)
        ip("-n", self._hub, "link", "set", cable, "up")
        address = f"{SUBNET}.{number}"
        ip("-n", name, "addr", "add", f"{address}/24", "dev", "eth0")
        ip("-n", name, "link", "set", "eth0", "up")
        host = Host(name, role, address, cable)
        self.hosts[role] = host
        return host

    def link_down(self, host: Host) -> None:
        """Pull the host's cable: it and the rest of the lab stop hearing each other, silently."""
        ip("-n", self._hub, "link", "set", host.cable, "down")

    def link_up(self, host: Host) -> None:
        ip("-n", self._hub, "link", "set", host.cable, "up")

    def close(self) -> None:
        """Kill what runs in the lab's namespaces and delete them (each attempted, whatever fails)."""
        for name in reversed(self._created):
            delete_namespace(name)
        self._created.clear()
        self.hosts.clear()
        self._hub = ""

    def __enter__(self) -> Lab:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

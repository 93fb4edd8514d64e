"""``fairpool node --discover``: find the scheduler by the announcements it sends on the LAN.

The node listens on ``announce_address`` (joining the multicast group on
``announce_interface`` when it is one) and reads each datagram with
``fairpool.announcement``: one not signed with the node's cluster secret, of
another version, or from a scheduler not named ``discover_name`` (when set)
is ignored. The first good one tells the node where to connect; later ones
keep that current, so a scheduler that comes back on another address is
followed. Several nodes on one host can listen at once (SO_REUSEADDR).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import structlog
import trio

from fairpool.address import Address
from fairpool.announcement import MAX_DATAGRAM, Announcement, AnnouncementError, decode_announcement

log = structlog.get_logger("fairpool.node")


def _is_multicast(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_multicast
    except ValueError:
        return False


def _is_broadcast(host: str) -> bool:
    # a subnet's broadcast address cannot be told from a host's without the netmask: bind to
    # any address unless this is a plain unicast address of this host
    return host == "255.255.255.255" or host.endswith(".255")


async def open_listen_socket(address: Address, interface: str) -> trio.socket.SocketType:
    """A UDP socket receiving what is sent to ``address`` (a group, broadcast or unicast address)."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if _is_multicast(address.host) or _is_broadcast(address.host):
            await sock.bind(("", address.port))
        else:
            await sock.bind((address.host, address.port))
        if _is_multicast(address.host):
            membership = struct.pack("4s4s", socket.inet_aton(address.host), socket.inet_aton(interface or "0.0.0.0"))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
    except OSError:
        sock.close()
        raise
    return sock


class Listener:
    """Reads announcements from a listening socket, skipping whatever is not a good one for us."""

    def __init__(self, sock: trio.socket.SocketType, secret: bytes | None, name: str = "") -> None:
        self._sock = sock
        self._secret = secret
        self._name = name

    async def receive(self) -> Announcement:
        """The next valid announcement (from the scheduler named ``name``, if one was given)."""
        while True:
            data, sender = await self._sock.recvfrom(MAX_DATAGRAM + 1)
            try:
                announcement = decode_announcement(data, self._secret, sender[0])
            except AnnouncementError as exc:
                log.debug("ignored a datagram", sender=sender[0], reason=str(exc))
                continue
            if self._name and announcement.name != self._name:
                log.debug("ignored another scheduler's announcement", scheduler=announcement.name,
                          wanted=self._name)
                continue
            return announcement


@asynccontextmanager
async def listening(address: Address, interface: str, secret: bytes | None,
                    name: str = "") -> AsyncIterator[Listener]:
    """A ``Listener`` on ``address`` for as long as the block runs."""
    sock = await open_listen_socket(address, interface)
    with sock:
        yield Listener(sock, secret, name)


async def follow_announcements(address: Address, interface: str, secret: bytes | None, name: str,
                               found: Callable[[Address], None]) -> None:
    """Call ``found(address)`` with the first scheduler heard and again whenever its address changes."""
    log.info("looking for a scheduler", listening=str(address), interface=interface or "any",
             name=name or "any")
    current: Address | None = None
    async with listening(address, interface, secret, name) as listener:
        while True:
            announcement = await listener.receive()
            if announcement.address != current:
                event = "scheduler discovered" if current is None else "scheduler moved"
                log.info(event, scheduler=announcement.name, address=str(announcement.address))
                current = announcement.address
                found(current)


async def discover_scheduler(address: Address, interface: str, secret: bytes | None,
                             name: str = "") -> Announcement:
    """The first valid announcement heard (from the scheduler ``name``, if given)."""
    async with listening(address, interface, secret, name) as listener:
        return await listener.receive()

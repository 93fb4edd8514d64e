"""The scheduler's LAN announcements, so that ``fairpool node --discover`` finds it (``announce = true``).

Every ``announce_interval`` the scheduler sends one signed datagram
(``fairpool.announcement``) with its name and the address nodes should dial
to ``announce_address``: a multicast group (sent with TTL 1, so it never
leaves the LAN, and looped back so a node on this host hears it too), a
broadcast address, or a single host. ``announce_interface`` picks the
interface the datagrams leave by (tests use 127.0.0.1: nothing leaves the
host). Off by default: a scheduler on a public network should not shout.

The advertised address is ``advertise`` when set (behind NAT or in the
cloud, the listen address is not what nodes reach); otherwise the bound
listen address, or, when that is a wildcard, no host at all, which tells the
node to use the address the datagram came from.
"""

from __future__ import annotations

import ipaddress
import socket
import time

import structlog
import trio

from fairpool.address import Address
from fairpool.announcement import Announcement, encode_announcement
from fairpool.config import SchedulerConfig

log = structlog.get_logger("fairpool.scheduler")

_WILDCARDS = ("", "0.0.0.0", "::")


def advertised_address(config: SchedulerConfig, bound: Address) -> Address:
    """What nodes are told to dial (an empty host: "where this announcement came from")."""
    if config.advertise is not None:
        return config.advertise
    if bound.host in _WILDCARDS:
        return Address("", bound.port)
    return bound


def _is_multicast(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_multicast
    except ValueError:
        return False


def open_announce_socket(target: Address, interface: str) -> trio.socket.SocketType:
    """A UDP socket ready to send announcements to ``target`` out of ``interface`` ("" : any)."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        if _is_multicast(target.host):
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)  # this LAN only
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)  # nodes on this host too
            if interface:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
    except OSError:
        sock.close()
        raise
    return sock


async def run_announcer(config: SchedulerConfig, secret: bytes, bound: Address) -> None:
    """Announce the scheduler until cancelled; a failing send is logged, never fatal."""
    advertised = advertised_address(config, bound)
    target = config.announce_address
    sock = open_announce_socket(target, config.announce_interface)
    if config.announce_interface and not _is_multicast(target.host):
        await sock.bind((config.announce_interface, 0))  # broadcast or unicast out of that interface
    log.info("announcing the scheduler", to=str(target), interface=config.announce_interface or "any",
             address=str(advertised) if advertised.host else f"(sender's address):{advertised.port}",
             name=config.name)
    failing = False
    with sock:
        while True:
            datagram = encode_announcement(Announcement(config.name, advertised, time.time()), secret)
            try:
                await sock.sendto(datagram, (target.host, target.port))
            except OSError as exc:
                if not failing:  # once per outage, not every few seconds
                    log.warning("cannot send the announcement", to=str(target), reason=exc.strerror or str(exc))
                failing = True
            else:
                if failing:
                    log.info("announcements sent again", to=str(target))
                failing = False
            await trio.sleep(config.announce_interval)

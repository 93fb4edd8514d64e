"""LAN discovery: the announcement datagram, and a scheduler's announcer found by a node's listener.

Loopback only: multicast is sent with IP_MULTICAST_IF 127.0.0.1 (and TTL 1),
broadcast to 127.255.255.255; nothing leaves the host.
"""

from __future__ import annotations

import socket
from functools import partial

import pytest
import trio

from fairpool.address import Address
from fairpool.announcement import (
    MAGIC,
    Announcement,
    AnnouncementError,
    decode_announcement,
    encode_announcement,
)
from fairpool.config import SchedulerConfig
from fairpool.nodes.discover import discover_scheduler, follow_announcements
from fairpool.scheduler.announce import advertised_address, run_announcer

pytestmark = pytest.mark.timeout(60)

SECRET = b"cluster-secret"
GROUP = "239.255.51.35"
FOUND_WITHIN = 10.0


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def announcer_config(port: int, *, name: str = "pool", host: str = GROUP,
                     advertise: Address | None = None) -> SchedulerConfig:
    return SchedulerConfig(name=name, announce=True, announce_address=Address(host, port),
                           announce_interface="127.0.0.1", announce_interval=0.05, advertise=advertise)


# --- the datagram ---------------------------------------------------------------------------


def test_a_signed_announcement_reads_back() -> None:
    sent = Announcement("pool", Address("10.1.2.3", 51350), 1234.5)
    assert decode_announcement(encode_announcement(sent, SECRET), SECRET, "10.9.9.9") == sent


def test_an_announcement_signed_with_another_secret_is_refused() -> None:
    data = encode_announcement(Announcement("pool", Address("10.1.2.3", 51350), 1.0), b"other")
    with pytest.raises(AnnouncementError, match="not signed with our cluster secret"):
        decode_announcement(data, SECRET, "10.1.2.3")


def test_a_tampered_announcement_is_refused() -> None:
    data = encode_announcement(Announcement("pool", Address("10.1.2.3", 51350), 1.0), SECRET)
    forged = data.replace(b"10.1.2.3", b"10.6.6.6")
    with pytest.raises(AnnouncementError, match="not signed"):
        decode_announcement(forged, SECRET, "10.1.2.3")


def test_an_unsigned_announcement_is_refused_by_a_node_with_a_secret() -> None:
    data = encode_announcement(Announcement("pool", Address("10.1.2.3", 51350), 1.0), None)
    with pytest.raises(AnnouncementError, match="unsigned"):
        decode_announcement(data, SECRET, "10.1.2.3")


def test_without_a_secret_the_magic_and_version_are_checked() -> None:
    sent = Announcement("pool", Address("10.1.2.3", 51350), 1.0)
    assert decode_announcement(encode_announcement(sent, None), None, "10.1.2.3") == sent
    future = bytearray(encode_announcement(sent, None))
    future[len(MAGIC)] = 99
    with pytest.raises(AnnouncementError, match="version 99"):
        decode_announcement(bytes(future), None, "10.1.2.3")


@pytest.mark.parametrize("junk", [b"", b"hello", MAGIC, MAGIC + b"\x01\x01" + b"{}" + bytes(32), b"x" * 5000])
def test_junk_is_not_an_announcement(junk: bytes) -> None:
    with pytest.raises(AnnouncementError):
        decode_announcement(junk, SECRET, "10.1.2.3")


def test_an_announcement_without_a_host_points_at_its_sender() -> None:
    data = encode_announcement(Announcement("pool", Address("", 51350), 1.0), SECRET)
    assert decode_announcement(data, SECRET, "192.168.7.7").address == Address("192.168.7.7", 51350)


def test_the_advertised_address_is_the_configured_one_else_the_listen_address() -> None:
    bound = Address("127.0.0.1", 4000)
    assert advertised_address(SchedulerConfig(), bound) == bound
    assert advertised_address(SchedulerConfig(), Address("0.0.0.0", 4000)) == Address("", 4000)
    public = Address("pool.example.org", 443)
    assert advertised_address(SchedulerConfig(advertise=public), Address("0.0.0.0", 4000)) == public


# --- announcer and listener over loopback ----------------------------------------------------------


async def test_a_node_finds_a_scheduler_announcing_on_loopback_multicast() -> None:
    port = free_udp_port()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_announcer, announcer_config(port), SECRET, Address("127.0.0.1", 4321))
        with trio.fail_after(FOUND_WITHIN):
            found = await discover_scheduler(Address(GROUP, port), "127.0.0.1", SECRET)
        nursery.cancel_scope.cancel()
    assert found.name == "pool" and found.address == Address("127.0.0.1", 4321)


async def test_a_node_finds_a_scheduler_announcing_by_loopback_broadcast() -> None:
    port = free_udp_port()
    config = announcer_config(port, host="127.255.255.255")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_announcer, config, SECRET, Address("0.0.0.0", 4321))
        with trio.fail_after(FOUND_WITHIN):
            found = await discover_scheduler(Address("127.255.255.255", port), "127.0.0.1", SECRET)
        nursery.cancel_scope.cancel()
    assert found.address == Address("127.0.0.1", 4321)  # a wildcard listener: the sender's address


async def test_a_node_picks_the_scheduler_it_was_told_to_by_name() -> None:
    port = free_udp_port()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_announcer, announcer_config(port, name="other"), SECRET, Address("127.0.0.1", 1111))
        nursery.start_soon(run_announcer, announcer_config(port, name="mine"), SECRET, Address("127.0.0.1", 2222))
        with trio.fail_after(FOUND_WITHIN):
            found = await discover_scheduler(Address(GROUP, port), "127.0.0.1", SECRET, name="mine")
        nursery.cancel_scope.cancel()
    assert (found.name, found.address) == ("mine", Address("127.0.0.1", 2222))


async def test_a_scheduler_with_another_secret_is_not_found() -> None:
    port = free_udp_port()
    found: list[Address] = []
    heard = trio.Event()

    def record(address: Address) -> None:
        found.append(address)
        heard.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_announcer, announcer_config(port, name="stranger"), b"not ours",
                           Address("127.0.0.1", 1111))
        nursery.start_soon(run_announcer, announcer_config(port, name="ours"), SECRET, Address("127.0.0.1", 2222))
        nursery.start_soon(partial(follow_announcements, Address(GROUP, port), "127.0.0.1", SECRET, "",
                                   record))
        with trio.fail_after(FOUND_WITHIN):
            await heard.wait()
        await trio.sleep(0.3)  # several rounds of both announcers: the stranger's are never taken
        nursery.cancel_scope.cancel()
    assert found == [Address("127.0.0.1", 2222)]

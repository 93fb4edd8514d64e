"""The LAN announcement datagram: how a scheduler says "I am here" and how a node reads it.

A scheduler with ``announce = true`` (``fairpool.scheduler.announce``) sends
one small UDP datagram every few seconds; ``fairpool node --discover``
(``fairpool.nodes.discover``) listens for them. Both ends share this codec,
which is why it lives in the trunk.

Layout, version 1::

    MAGIC (8 bytes) | version (1 byte) | flags (1 byte) | JSON body | HMAC-SHA256 (32 bytes, if signed)

The body is ``{"name": NAME, "address": "HOST:PORT", "at": TIME}``; an empty
host means "the address this datagram came from" (a scheduler listening on a
wildcard address does not know which of its addresses a node can reach). The
MAC, keyed with the cluster secret, covers everything before it: a node that
has the secret ignores announcements that do not prove it. Whoever can send
datagrams on the LAN can still replay an old, genuine announcement; it only
points at a real scheduler, which the connection's own handshake proves.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass

from fairpool.address import Address, AddressError

MAGIC = b"FAIRPOOL"
VERSION = 1
_SIGNED = 0x01
_MAC_SIZE = 32
_HEADER = len(MAGIC) + 2
#: No real announcement comes close; anything bigger is not ours.
MAX_DATAGRAM = 2048


class AnnouncementError(ValueError):
    """A datagram that is not a valid announcement for us (the reason says why)."""


@dataclass(frozen=True)
class Announcement:
    name: str  # the scheduler's name
    address: Address  # where nodes connect
    at: float  # when it was sent (the scheduler's clock)


def _mac(secret: bytes, data: bytes) -> bytes:
    return hmac.new(secret, data, hashlib.sha256).digest()


def encode_announcement(announcement: Announcement, secret: bytes | None) -> bytes:
    """The datagram; signed with ``secret`` unless it is None."""
    address = announcement.address
    host = f"[{address.host}]" if ":" in address.host else address.host
    body = json.dumps({"name": announcement.name, "address": f"{host}:{address.port}", "at": announcement.at},
                      separators=(",", ":")).encode()
    head = MAGIC + bytes([VERSION, _SIGNED if secret is not None else 0])
    data = head + body
    return data + _mac(secret, data) if secret is not None else data


def decode_announcement(data: bytes, secret: bytes | None, sender: str) -> Announcement:
    """The announcement in ``data``, sent from host ``sender``; AnnouncementError if it is not one.

    With a ``secret``, only an announcement signed with it is accepted;
    without one (a node that proves itself otherwise), the magic and version
    are all that is checked.
    """
    if len(data) > MAX_DATAGRAM or not data.startswith(MAGIC):
        raise AnnouncementError("not a fairpool announcement")
    if len(data) < _HEADER:
        raise AnnouncementError("truncated announcement")
    version, flags = data[len(MAGIC)], data[len(MAGIC) + 1]
    if version != VERSION:
        raise AnnouncementError(f"announcement version {version}, this node reads version {VERSION}")
    body = data[_HEADER:]
    if flags & _SIGNED:
        if len(body) < _MAC_SIZE:
            raise AnnouncementError("truncated announcement")
        body, mac = body[:-_MAC_SIZE], body[-_MAC_SIZE:]
        if secret is not None and not hmac.compare_digest(mac, _mac(secret, data[:-_MAC_SIZE])):
            raise AnnouncementError("announcement not signed with our cluster secret")
    elif secret is not None:
        raise AnnouncementError("unsigned announcement")
    try:
        fields = json.loads(body)
        name, text, at = fields["name"], fields["address"], fields["at"]
        if not isinstance(name, str) or not isinstance(text, str) or not isinstance(at, int | float):
            raise TypeError("bad field types")
        address = Address.parse(text, default_port=-1)
    except (ValueError, KeyError, TypeError, AddressError) as exc:
        raise AnnouncementError(f"malformed announcement: {exc}") from None
    if not 0 < address.port < 65536:
        raise AnnouncementError(f"malformed announcement: bad address {text!r}")
    if text.startswith(":") or text.startswith("[]"):  # no host: where it came from
        address = Address(sender, address.port)
    return Announcement(name, address, float(at))

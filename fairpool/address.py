"""HOST:PORT addresses as users write them (``127.0.0.1:51350``, ``[::1]:51350``, ``:0``)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

DEFAULT_PORT = 51350
DEFAULT_HOST = "127.0.0.1"


class AddressError(ValueError):
    pass


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str, default_port: int = DEFAULT_PORT) -> Address:
        text = text.strip()
        if not text:
            raise AddressError("empty address: expected HOST:PORT")
        if text.startswith("["):
            host, sep, rest = text[1:].partition("]")
            if not sep:
                raise AddressError(f"bad address {text!r}: missing ']'")
            port_text = rest[1:] if rest.startswith(":") else ""
            if rest and not rest.startswith(":"):
                raise AddressError(f"bad address {text!r}: expected [HOST]:PORT")
        elif text.count(":") == 1:
            host, _, port_text = text.partition(":")
        elif ":" in text:
            host, port_text = text, ""  # a bare IPv6 address
        else:
            host, port_text = text, ""
        host = host or DEFAULT_HOST
        if not port_text:
            return cls(host, default_port)
        try:
            port = int(port_text)
        except ValueError:
            raise AddressError(f"bad address {text!r}: port {port_text!r} is not a number") from None
        if not 0 <= port <= 65535:
            raise AddressError(f"bad address {text!r}: port {port} out of range")
        return cls(host, port)

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False  # a DNS name: not provably loopback

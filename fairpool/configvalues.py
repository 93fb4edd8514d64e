"""Configuration values: from a TOML value or a flag string to a typed setting.

Each converter is ``(value, from_text) -> typed value`` and raises
``BadValue("what was expected")``; the loader (``fairpool.configload``) adds
where the value came from and turns it into a ``ConfigError``. ``from_text``
is true for flags and environment variables, whose values are always
strings, so "4" is a fine --cpus but ``cpus = "4"`` in TOML is a type error
(TOML has real integers).

Here are the converters every daemon's keys use: paths, names, choices,
booleans, counts, durations, sizes, addresses (to listen on, to connect to,
to announce on), users and shell commands; and the defaults the two daemon
configs share (log format, host name, the announcement group). The keys of
each daemon are in ``fairpool.config`` (scheduler) and
``fairpool.nodeconfig`` (node).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fairpool.address import DEFAULT_PORT, Address, AddressError

#: Where schedulers announce themselves and ``fairpool node --discover`` listens (organization-local multicast).
DEFAULT_ANNOUNCE_ADDRESS = Address("239.255.51.35", 51352)
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("console", "json")
_MIN_FRAME = 64 * 1024
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_NO_PORT = -1


class ConfigError(ValueError):
    pass


class BadValue(Exception):
    """A value is wrong; the message says what was expected."""


Converter = Callable[[Any, bool], Any]


def hostname() -> str:
    return socket.gethostname() or "localhost"


def default_log_format() -> str:
    """Readable lines for a person at a terminal; JSON lines for journald, files and pipes."""
    stderr = sys.stderr
    return "console" if stderr is not None and stderr.isatty() else "json"



def parse_address(value: Any, *, allow_port_zero: bool) -> Address:
    if isinstance(value, Address):
        return value
    if not isinstance(value, str):
        raise BadValue(f'expected a "HOST:PORT" string, got {show(value)}')
    try:
        address = Address.parse(value, default_port=_NO_PORT)
    except AddressError as exc:
        raise BadValue(f"{exc} (expected HOST:PORT, e.g. 127.0.0.1:{DEFAULT_PORT})") from None
    if address.port == _NO_PORT:
        raise BadValue(f"bad address {value!r}: no port (expected HOST:PORT, e.g. 127.0.0.1:{DEFAULT_PORT})")
    if not valid_host(address.host):
        raise BadValue(f"bad address {value!r}: {address.host!r} is neither an IP address nor a host name")
    if address.port == 0 and not allow_port_zero:
        raise BadValue(f"bad address {value!r}: port 0 cannot be connected to")
    return address


def valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return bool(_HOSTNAME.match(host))
    return True


def listen(value: Any, from_text: bool) -> Address:
    return parse_address(value, allow_port_zero=True)


def connect(value: Any, from_text: bool) -> Address:
    return parse_address(value, allow_port_zero=False)


def optional_listen(value: Any, from_text: bool) -> Address | None:
    if value == "" or value is False:  # http = "" switches the dashboard off
        return None
    return listen(value, from_text)


def file_path(value: Any, from_text: bool) -> Path:
    if isinstance(value, Path):
        return value
    if not isinstance(value, str) or not value.strip():
        raise BadValue(f"expected a non-empty path string, got {show(value)}")
    return Path(value).expanduser()


def choice(*choices: str) -> Converter:
    def convert(value: Any, from_text: bool) -> str:
        text = value.lower() if isinstance(value, str) else value
        if text not in choices:
            raise BadValue(f"expected one of {', '.join(choices)}, got {show(value)}")
        return str(text)

    return convert


def boolean(value: Any, from_text: bool) -> bool:
    if isinstance(value, bool):
        return value
    if from_text and isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off"):
        return value.lower() in ("true", "yes", "on")
    raise BadValue(f"expected true or false, got {show(value)}")


def word(value: Any, from_text: bool) -> str:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise BadValue(f"expected a non-empty name without spaces, got {show(value)}")
    return value


def count(minimum: int) -> Converter:
    def convert(value: Any, from_text: bool) -> int:
        if from_text and isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise BadValue(f"expected an integer >= {minimum}, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise BadValue(f"expected an integer >= {minimum}, got {show(value)}")
        return value

    return convert


def duration(value: Any, from_text: bool) -> float:
    """Seconds: a number, or a string with a unit ("500ms", "10s", "2m", "1h")."""
    expected = 'expected a positive number of seconds or a duration like "500ms", "10s", "2m"'
    if isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h)?\s*", value)
        if match is None:
            raise BadValue(f"{expected}, got {value!r}")
        value = float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise BadValue(f"{expected}, got {show(value)}")
    if not 0 < value < float("inf"):
        raise BadValue(f"{expected}, got {show(value)}")
    return float(value)


def parse_size(value: Any) -> int:
    """Bytes from an int or a string like "4G", "512M", "1.5G", "64KiB", "1024" (binary units)."""
    if isinstance(value, bool):
        raise BadValue(f'expected a size in bytes or like "4G", "512M", got {show(value)}')
    if isinstance(value, int):
        if value < 0:
            raise BadValue(f"expected a size >= 0, got {value}")
        return value
    if isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(i?B)?\s*", value, re.IGNORECASE)
        if match is not None:
            return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).upper()])
    raise BadValue(f'expected a size in bytes or like "4G", "512M", "1.5G", got {show(value)}')


def size(value: Any, from_text: bool) -> int:
    return parse_size(value)


def frame_size(value: Any, from_text: bool) -> int:
    nbytes = parse_size(value)
    if nbytes < _MIN_FRAME:
        raise BadValue(f"expected at least {_MIN_FRAME} bytes (64K), got {nbytes}")
    return nbytes


def run_as(value: Any, from_text: bool) -> str:
    """A user, or a user and a group: "USER" or "USER:GROUP" (names or numeric ids).

    Whether they exist is checked when the node starts, on the node's host.
    """
    expected = 'expected "USER" or "USER:GROUP"'
    if not isinstance(value, str):
        raise BadValue(f"{expected}, got {show(value)}")
    parts = value.split(":")
    if len(parts) > 2 or not all(part and not any(c.isspace() for c in part) for part in parts):
        raise BadValue(f"{expected}, got {value!r}")
    return value



def optional_connect(value: Any, from_text: bool) -> Address | None:
    return None if value == "" else connect(value, from_text)


def is_ipv4(text: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(text), ipaddress.IPv4Address)
    except ValueError:
        return False


def announce_address(value: Any, from_text: bool) -> Address:
    address = connect(value, from_text)
    if not is_ipv4(address.host):
        raise BadValue(f"bad address {value!r}: expected an IPv4 multicast, broadcast or unicast HOST:PORT")
    return address


def interface(value: Any, from_text: bool) -> str:
    if value == "":
        return ""
    if not isinstance(value, str) or not is_ipv4(value.strip()):
        raise BadValue(f'expected the IPv4 address of a local interface (e.g. "192.168.1.5") or "", got {show(value)}')
    return value.strip()


def optional_word(value: Any, from_text: bool) -> str:
    return "" if value == "" else word(value, from_text)


def command(value: Any, from_text: bool) -> str:
    if not isinstance(value, str):
        raise BadValue(f'expected a shell command string ("" for none), got {show(value)}')
    return value.strip()



def show(value: Any) -> str:
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            dict: "a table", list: "an array"}.get(type(value))
    return f"{value!r}" if kind in ("an integer", "a number", "a string") else (kind or repr(value))

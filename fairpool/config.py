"""Daemon configuration: typed, validated, from TOML files and command-line flags.

``SchedulerConfig`` and ``NodeConfig`` are what the daemons run on. The
loaders (``load_scheduler_config`` / ``load_node_config``) merge, in order of
precedence: command-line flags, the ``--config`` TOML file, defaults. Any bad
key or value raises ``ConfigError`` naming the file, key and what was expected.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import re
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from fairpool.address import DEFAULT_PORT, Address, AddressError
from fairpool.protocol import DEFAULT_MAX_FRAME
from fairpool.tls import TlsFiles

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python < 3.11: the declared dependency
    import tomli as tomllib  # type: ignore[no-redef]


#: What the client library lets one job's payload be (clients.session.MAX_JOB_PAYLOAD): room for the frame's rest.
DEFAULT_MAX_PAYLOAD = DEFAULT_MAX_FRAME - 64 * 1024
#: Where schedulers announce themselves and ``fairpool node --discover`` listens (organization-local multicast).
DEFAULT_ANNOUNCE_ADDRESS = Address("239.255.51.35", 51352)


class ConfigError(ValueError):
    pass


def _hostname() -> str:
    return socket.gethostname() or "localhost"


def default_log_format() -> str:
    """Readable lines for a person at a terminal; JSON lines for journald, files and pipes."""
    stderr = sys.stderr
    return "console" if stderr is not None and stderr.isatty() else "json"


@dataclass(frozen=True)
class SchedulerConfig:
    listen: Address = Address("127.0.0.1", DEFAULT_PORT)
    http: Address | None = None
    metrics_tenants: int = 20  # /metrics: tenants with a label of their own; the rest count as "other"
    state_dir: Path = Path(".fairpool")
    secret_file: Path | None = None  # default: <state_dir>/secret
    tls: TlsFiles | None = None  # mutual TLS: our CA, our certificate and key (fairpool.tls)
    log_format: str = field(default_factory=default_log_format)  # console | json
    log_level: str = "info"
    policy: str = "fifo"
    policy_file: Path | None = None
    name: str = field(default_factory=_hostname)
    heartbeat_interval: float = 1.0
    heartbeat_timeout: float = 10.0
    handshake_timeout: float = 10.0
    max_frame_size: int = DEFAULT_MAX_FRAME
    # the largest job payload, cluster spec or result accepted (0: only max_frame_size bounds them)
    max_payload_size: int = DEFAULT_MAX_PAYLOAD
    max_connections_per_peer: int = 1024  # open connections from one IP address (0: no limit)
    max_connections_per_tenant: int = 256  # authenticated client connections of one tenant (0: no limit)
    journal: bool = True  # off: nothing survives a scheduler restart (for benchmarks only)
    journal_fsync: bool = True
    compact_bytes: int = 64 * 1024 * 1024  # compact the journal when it grows past this
    result_retention: float = 7 * 24 * 3600.0  # seconds a finished job's result waits for its client
    # LAN discovery (fairpool.scheduler.announce): a signed UDP announcement every announce_interval
    announce: bool = False
    announce_address: Address = DEFAULT_ANNOUNCE_ADDRESS  # multicast group, broadcast or unicast HOST:PORT
    announce_interface: str = ""  # IPv4 address of the interface announcements leave by ("": the OS's choice)
    announce_interval: float = 2.0
    advertise: Address | None = None  # the address nodes are told to dial (None: the listen address)

    @property
    def secret_path(self) -> Path:
        return self.secret_file if self.secret_file is not None else self.state_dir / "secret"


@dataclass(frozen=True)
class NodeConfig:
    scheduler: Address = Address("127.0.0.1", DEFAULT_PORT)
    name: str = field(default_factory=_hostname)
    cpus: int = field(default_factory=lambda: os.cpu_count() or 1)
    memory: int = 0  # bytes; 0: detect
    gpus: int = 0
    state_dir: Path = Path(".fairpool/node")
    secret_file: Path | None = None  # default: <state_dir>/secret
    tls: TlsFiles | None = None  # mutual TLS: our CA, our node certificate and key (fairpool.tls)
    log_format: str = field(default_factory=default_log_format)
    log_level: str = "info"
    heartbeat_interval: float = 1.0
    handshake_timeout: float = 10.0
    max_frame_size: int = DEFAULT_MAX_FRAME
    reconnect_max_delay: float = 5.0
    run_as: str | None = None  # "USER" or "USER:GROUP": jobs run as this user when the node runs as root
    # Joining and leaving (fairpool.nodes.lifecycle, failover, discover, hooks, statedir)
    failover: tuple[Address, ...] = ()  # tried in order after `scheduler` (also: scheduler = "A,B")
    heartbeat_timeout: float = 10.0  # no word from the scheduler this long: the connection is dead
    discover: bool = False  # find the scheduler by its LAN announcements instead of `scheduler`
    discover_name: str = ""  # only the scheduler of this name ("": the first heard)
    announce_address: Address = DEFAULT_ANNOUNCE_ADDRESS
    announce_interface: str = ""  # IPv4 address of the interface to listen on ("": any)
    serve_hours: tuple[tuple[int, int], ...] = ()  # (start, end) minutes of the day; (): always
    serve: int = 0  # exit after serving this many clusters (0: never)
    stop: str = "finish"  # on SIGTERM: "finish" running jobs (until stop_timeout) or "handback" at once
    stop_timeout: float = 60.0
    init_hook: str = ""  # shell command run before the node starts; failing, the node does not
    close_hook: str = ""  # shell command run when the node exits
    hook_timeout: float = 60.0
    clean: bool = False  # remove working directories a crashed node left, on start

    @property
    def secret_path(self) -> Path:
        return self.secret_file if self.secret_file is not None else self.state_dir / "secret"

    @property
    def schedulers(self) -> tuple[Address, ...]:
        """Every configured scheduler address, first preference first."""
        return (self.scheduler, *self.failover)


# --- loading: TOML file + flags -> config ----------------------------------
#
# Each field has a converter ``(value, from_text) -> typed value`` that raises
# ``_Bad("what was expected")``; the loader adds where the value came from.
# ``from_text`` is true for flags and environment variables, whose values are
# always strings, so "4" is a fine --cpus but ``cpus = "4"`` in TOML is a type
# error (TOML has real integers).

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("console", "json")
_MIN_FRAME = 64 * 1024
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_NO_PORT = -1


class _Bad(Exception):
    """A value is wrong; the message says what was expected."""


Converter = Callable[[Any, bool], Any]
_C = TypeVar("_C", "SchedulerConfig", "NodeConfig")


def _parse_address(value: Any, *, allow_port_zero: bool) -> Address:
    if isinstance(value, Address):
        return value
    if not isinstance(value, str):
        raise _Bad(f'expected a "HOST:PORT" string, got {_show(value)}')
    try:
        address = Address.parse(value, default_port=_NO_PORT)
    except AddressError as exc:
        raise _Bad(f"{exc} (expected HOST:PORT, e.g. 127.0.0.1:{DEFAULT_PORT})") from None
    if address.port == _NO_PORT:
        raise _Bad(f"bad address {value!r}: no port (expected HOST:PORT, e.g. 127.0.0.1:{DEFAULT_PORT})")
    if not _valid_host(address.host):
        raise _Bad(f"bad address {value!r}: {address.host!r} is neither an IP address nor a host name")
    if address.port == 0 and not allow_port_zero:
        raise _Bad(f"bad address {value!r}: port 0 cannot be connected to")
    return address


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return bool(_HOSTNAME.match(host))
    return True


def _listen(value: Any, from_text: bool) -> Address:
    return _parse_address(value, allow_port_zero=True)


def _connect(value: Any, from_text: bool) -> Address:
    return _parse_address(value, allow_port_zero=False)


def _optional_listen(value: Any, from_text: bool) -> Address | None:
    if value == "" or value is False:  # http = "" switches the dashboard off
        return None
    return _listen(value, from_text)


def _path(value: Any, from_text: bool) -> Path:
    if isinstance(value, Path):
        return value
    if not isinstance(value, str) or not value.strip():
        raise _Bad(f"expected a non-empty path string, got {_show(value)}")
    return Path(value).expanduser()


def _choice(*choices: str) -> Converter:
    def convert(value: Any, from_text: bool) -> str:
        text = value.lower() if isinstance(value, str) else value
        if text not in choices:
            raise _Bad(f"expected one of {', '.join(choices)}, got {_show(value)}")
        return str(text)

    return convert


def _bool(value: Any, from_text: bool) -> bool:
    if isinstance(value, bool):
        return value
    if from_text and isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off"):
        return value.lower() in ("true", "yes", "on")
    raise _Bad(f"expected true or false, got {_show(value)}")


def _word(value: Any, from_text: bool) -> str:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise _Bad(f"expected a non-empty name without spaces, got {_show(value)}")
    return value


def _count(minimum: int) -> Converter:
    def convert(value: Any, from_text: bool) -> int:
        if from_text and isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise _Bad(f"expected an integer >= {minimum}, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise _Bad(f"expected an integer >= {minimum}, got {_show(value)}")
        return value

    return convert


def _duration(value: Any, from_text: bool) -> float:
    """Seconds: a number, or a string with a unit ("500ms", "10s", "2m", "1h")."""
    expected = 'expected a positive number of seconds or a duration like "500ms", "10s", "2m"'
    if isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h)?\s*", value)
        if match is None:
            raise _Bad(f"{expected}, got {value!r}")
        value = float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise _Bad(f"{expected}, got {_show(value)}")
    if not 0 < value < float("inf"):
        raise _Bad(f"{expected}, got {_show(value)}")
    return float(value)


def parse_size(value: Any) -> int:
    """Bytes from an int or a string like "4G", "512M", "1.5G", "64KiB", "1024" (binary units)."""
    if isinstance(value, bool):
        raise _Bad(f'expected a size in bytes or like "4G", "512M", got {_show(value)}')
    if isinstance(value, int):
        if value < 0:
            raise _Bad(f"expected a size >= 0, got {value}")
        return value
    if isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(i?B)?\s*", value, re.IGNORECASE)
        if match is not None:
            return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).upper()])
    raise _Bad(f'expected a size in bytes or like "4G", "512M", "1.5G", got {_show(value)}')


def _size(value: Any, from_text: bool) -> int:
    return parse_size(value)


def _frame_size(value: Any, from_text: bool) -> int:
    size = parse_size(value)
    if size < _MIN_FRAME:
        raise _Bad(f"expected at least {_MIN_FRAME} bytes (64K), got {size}")
    return size


def _run_as(value: Any, from_text: bool) -> str:
    """A user, or a user and a group: "USER" or "USER:GROUP" (names or numeric ids).

    Whether they exist is checked when the node starts, on the node's host.
    """
    expected = 'expected "USER" or "USER:GROUP"'
    if not isinstance(value, str):
        raise _Bad(f"{expected}, got {_show(value)}")
    parts = value.split(":")
    if len(parts) > 2 or not all(part and not any(c.isspace() for c in part) for part in parts):
        raise _Bad(f"{expected}, got {value!r}")
    return value


_TLS_KEYS = ("ca", "cert", "key")


def _tls(value: Any, from_text: bool) -> TlsFiles:
    """``{ ca = "...", cert = "...", key = "..." }``: paths made absolute at load time, like the others."""
    if isinstance(value, TlsFiles):
        return value
    expected = 'expected a table { ca = "CA.crt", cert = "NAME.crt", key = "NAME.key" }'
    if not isinstance(value, dict):
        raise _Bad(f"{expected}, got {_show(value)}")
    missing = [key for key in _TLS_KEYS if key not in value]
    unknown = sorted(set(value) - set(_TLS_KEYS))
    if missing:
        raise _Bad(f"{expected}: {', '.join(missing)} missing")
    if unknown:
        raise _Bad(f"{expected}: unknown key {', '.join(unknown)}")
    paths: dict[str, Path] = {}
    for key in _TLS_KEYS:
        try:
            paths[key] = _path(value[key], from_text).absolute()
        except _Bad as exc:
            raise _Bad(f"{key}: {exc}") from None
    return TlsFiles(**paths)


def tls_flags(ca: str | None, cert: str | None, key: str | None) -> TlsFiles | None:
    """``--tls-ca/--tls-cert/--tls-key``: all three or none; ConfigError otherwise."""
    given = {"--tls-ca": ca, "--tls-cert": cert, "--tls-key": key}
    if all(v is None for v in given.values()):
        return None
    missing = [flag for flag, v in given.items() if not v]
    if missing:
        raise ConfigError(f"--tls-ca, --tls-cert and --tls-key go together: {', '.join(missing)} missing or empty")
    assert ca and cert and key
    return TlsFiles(*(Path(v).expanduser().absolute() for v in (ca, cert, key)))


def _check_tls(config: SchedulerConfig | NodeConfig, role: str, config_file: Path | None) -> None:
    """A daemon with unusable TLS files stops at start, saying why (not at each connection)."""
    if config.tls is None:
        return
    from fairpool.certs import check_files  # cryptography: only for daemons configured with TLS
    from fairpool.tls import TlsError

    try:
        check_files(config.tls, role)
    except TlsError as exc:
        raise ConfigError(f"bad value for 'tls'{_where(config_file)}: {exc}") from None


def _show(value: Any) -> str:
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            dict: "a table", list: "an array"}.get(type(value))
    return f"{value!r}" if kind in ("an integer", "a number", "a string") else (kind or repr(value))


# --- joining and leaving: failover lists, LAN announcements, service windows, hooks ----------


def _schedulers(value: Any, from_text: bool) -> tuple[Address, ...]:
    """One or more HOST:PORT, first preference first: a TOML array, repeated flags, or "A,B"."""
    items = value if isinstance(value, list | tuple) else [value]
    addresses: list[Address] = []
    for item in items:
        if isinstance(item, Address):
            addresses.append(item)
            continue
        if not isinstance(item, str):
            raise _Bad(f'expected "HOST:PORT" or a list of them, got {_show(item)}')
        parts = [part.strip() for part in item.split(",")]
        if not all(parts):
            raise _Bad(f"empty address in {item!r} (expected HOST:PORT or HOST:PORT,HOST:PORT,...)")
        addresses.extend(_connect(part, True) for part in parts)
    if not addresses:
        raise _Bad("expected at least one HOST:PORT")
    return tuple(addresses)


def _failover(value: Any, from_text: bool) -> tuple[Address, ...]:
    return () if value in ("", []) else _schedulers(value, from_text)


def _optional_connect(value: Any, from_text: bool) -> Address | None:
    return None if value == "" else _connect(value, from_text)


def _is_ipv4(text: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(text), ipaddress.IPv4Address)
    except ValueError:
        return False


def _announce_address(value: Any, from_text: bool) -> Address:
    address = _connect(value, from_text)
    if not _is_ipv4(address.host):
        raise _Bad(f"bad address {value!r}: expected an IPv4 multicast, broadcast or unicast HOST:PORT")
    return address


def _interface(value: Any, from_text: bool) -> str:
    if value == "":
        return ""
    if not isinstance(value, str) or not _is_ipv4(value.strip()):
        raise _Bad(f'expected the IPv4 address of a local interface (e.g. "192.168.1.5") or "", got {_show(value)}')
    return value.strip()


def _optional_word(value: Any, from_text: bool) -> str:
    return "" if value == "" else _word(value, from_text)


def _command(value: Any, from_text: bool) -> str:
    if not isinstance(value, str):
        raise _Bad(f'expected a shell command string ("" for none), got {_show(value)}')
    return value.strip()


_CLOCK = r"\s*([0-9]{1,2}):([0-9]{2})\s*"


def _serve_hours(value: Any, from_text: bool) -> tuple[tuple[int, int], ...]:
    """Service windows: "18:00-08:00", "08:00-12:00,13:00-17:00" or an array; "" means always.

    Parsed to (start, end) minutes of the day; "24:00" may end a window.
    """
    expected = 'expected windows like "18:00-08:00" or "08:00-12:00,13:00-17:00" ("" for always)'
    if value == "" or value == []:
        return ()
    if isinstance(value, str):
        parts = value.split(",")
    elif isinstance(value, list) and all(isinstance(part, str) for part in value):
        parts = value
    else:
        raise _Bad(f"{expected}, got {_show(value)}")
    windows: list[tuple[int, int]] = []
    for part in parts:
        match = re.fullmatch(f"{_CLOCK}-{_CLOCK}", part)
        if match is None:
            raise _Bad(f"{expected}, got {part.strip()!r}")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if m1 > 59 or m2 > 59 or start >= 24 * 60 or end > 24 * 60:
            raise _Bad(f"{expected}: {part.strip()!r} is not a time of day (00:00 to 24:00)")
        if start == end:
            raise _Bad(f"{part.strip()!r} is an empty window; 00:00-24:00 is the whole day")
        windows.append((start, end))
    return tuple(windows)


_COMMON: dict[str, Converter] = {
    "state_dir": _path,
    "secret_file": _path,
    "tls": _tls,
    "log_format": _choice(*LOG_FORMATS),
    "log_level": _choice(*LOG_LEVELS),
    "name": _word,
    "heartbeat_interval": _duration,
    "handshake_timeout": _duration,
    "max_frame_size": _frame_size,
}

SCHEDULER_KEYS: dict[str, Converter] = {
    **_COMMON,
    "listen": _listen,
    "http": _optional_listen,
    "metrics_tenants": _count(0),
    "policy": _word,
    "policy_file": _path,
    "heartbeat_timeout": _duration,
    "journal": _bool,
    "journal_fsync": _bool,
    "compact_bytes": _size,
    "result_retention": _duration,
    "max_payload_size": _size,
    "max_connections_per_peer": _count(0),
    "max_connections_per_tenant": _count(0),
    "announce": _bool,
    "announce_address": _announce_address,
    "announce_interface": _interface,
    "announce_interval": _duration,
    "advertise": _optional_connect,
}

NODE_KEYS: dict[str, Converter] = {
    **_COMMON,
    "scheduler": _schedulers,  # several: failover order (load_node_config keeps the first in `scheduler`)
    "cpus": _count(1),
    "memory": _size,
    "gpus": _count(0),
    "reconnect_max_delay": _duration,
    "run_as": _run_as,
    "failover": _failover,
    "heartbeat_timeout": _duration,
    "discover": _bool,
    "discover_name": _optional_word,
    "announce_address": _announce_address,
    "announce_interface": _interface,
    "serve_hours": _serve_hours,
    "serve": _count(0),
    "stop": _choice("finish", "handback"),
    "stop_timeout": _duration,
    "init_hook": _command,
    "close_hook": _command,
    "hook_timeout": _duration,
    "clean": _bool,
}


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def read_toml(path: Path) -> dict[str, Any]:
    """The parsed file, or ConfigError with the file name (and the line, for a syntax error)."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: not UTF-8 ({exc.reason})") from None


def _from_file(path: Path, keys: dict[str, Converter]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for raw_key, raw in read_toml(path).items():
        key = raw_key.replace("-", "_")
        if key not in keys:
            known = ", ".join(sorted(keys))
            close = difflib.get_close_matches(key, keys, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ConfigError(f"unknown key '{raw_key}' in {path} ({hint}known: {known})")
        if key in spelled:
            raise ConfigError(f"key '{key}' given twice in {path} (as '{spelled[key]}' and '{raw_key}')")
        spelled[key] = raw_key
        try:
            values[key] = keys[key](raw, False)
        except _Bad as exc:
            raise ConfigError(f"bad value for '{raw_key}' in {path}: {exc}") from None
    return values


def _from_flags(overrides: Mapping[str, Any], keys: dict[str, Converter],
                labels: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, raw in overrides.items():
        if raw is None:  # a flag not given
            continue
        if key not in keys:
            raise ConfigError(f"unknown setting {key!r} (known: {', '.join(sorted(keys))})")
        try:
            values[key] = keys[key](raw, isinstance(raw, str))
        except _Bad as exc:
            raise ConfigError(f"bad value for {labels.get(key, _flag(key))}: {exc}") from None
    return values


def _merge(config_file: Path | None, overrides: Mapping[str, Any], keys: dict[str, Converter],
           labels: Mapping[str, str]) -> dict[str, Any]:
    merged = _from_file(Path(config_file), keys) if config_file is not None else {}
    merged.update(_from_flags(overrides, keys, labels))
    return merged


_PATH_FIELDS = ("state_dir", "secret_file", "policy_file")


def _absolute(config: _C) -> _C:
    """Relative paths made absolute, against the working directory at load time.

    A daemon's worker processes change directory (into a cluster's working
    dir); a path that is still relative then would point elsewhere.
    """
    changes: dict[str, Any] = {name: path.absolute() for name in _PATH_FIELDS
               if isinstance(path := getattr(config, name, None), Path) and not path.is_absolute()}
    return dataclasses.replace(config, **changes) if changes else config


def _where(config_file: Path | None) -> str:
    return f" in {config_file}" if config_file is not None else ""


def load_scheduler_config(config_file: Path | None, overrides: Mapping[str, Any],
                          *, labels: Mapping[str, str] | None = None) -> SchedulerConfig:
    """Defaults < TOML file < ``overrides`` (field name -> value; None means not given).

    Relative paths come back absolute (against the current working directory).

    ``labels`` names where an override came from in error messages (default:
    its flag, e.g. ``--listen``); the CLI uses it for environment variables.
    """
    config = _absolute(SchedulerConfig(**_merge(config_file, overrides, SCHEDULER_KEYS, labels or {})))
    if config.heartbeat_timeout <= config.heartbeat_interval:
        raise ConfigError(f"heartbeat_timeout ({config.heartbeat_timeout:g}s) must be greater than "
                          f"heartbeat_interval ({config.heartbeat_interval:g}s){_where(config_file)}")
    _check_tls(config, "scheduler", config_file)
    return config


def load_node_config(config_file: Path | None, overrides: Mapping[str, Any],
                     *, labels: Mapping[str, str] | None = None) -> NodeConfig:
    """Like ``load_scheduler_config``, for a node.

    ``scheduler`` may name several addresses (failover order): the first stays
    in ``scheduler``, the others go ahead of ``failover``.
    """
    values = _merge(config_file, overrides, NODE_KEYS, labels or {})
    given = "scheduler" in values or "failover" in values
    schedulers = values.pop("scheduler", None)
    if schedulers is not None:
        values["scheduler"] = schedulers[0]
        values["failover"] = (*schedulers[1:], *values.get("failover", ()))
    config = _absolute(NodeConfig(**values))
    _check_tls(config, "node", config_file)
    if config.heartbeat_timeout <= config.heartbeat_interval:
        raise ConfigError(f"heartbeat_timeout ({config.heartbeat_timeout:g}s) must be greater than "
                          f"heartbeat_interval ({config.heartbeat_interval:g}s){_where(config_file)}")
    if config.discover and given:
        raise ConfigError("discover finds the scheduler by its announcements: give it no scheduler or failover "
                          f"addresses too (from --scheduler, FAIRPOOL_SCHEDULER or the config file){_where(config_file)}")
    return config

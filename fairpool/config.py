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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from fairpool.address import DEFAULT_PORT, Address, AddressError
from fairpool.protocol import DEFAULT_MAX_FRAME

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python < 3.11: the declared dependency
    import tomli as tomllib  # type: ignore[no-redef]


class ConfigError(ValueError):
    pass


def _hostname() -> str:
    return socket.gethostname() or "localhost"


@dataclass(frozen=True)
class SchedulerConfig:
    listen: Address = Address("127.0.0.1", DEFAULT_PORT)
    http: Address | None = None
    state_dir: Path = Path(".fairpool")
    secret_file: Path | None = None  # default: <state_dir>/secret
    log_format: str = "console"  # console | json
    log_level: str = "info"
    policy: str = "fifo"
    policy_file: Path | None = None
    name: str = field(default_factory=_hostname)
    heartbeat_interval: float = 1.0
    heartbeat_timeout: float = 10.0
    handshake_timeout: float = 10.0
    max_frame_size: int = DEFAULT_MAX_FRAME
    journal: bool = True  # off: nothing survives a scheduler restart (for benchmarks only)
    journal_fsync: bool = True
    compact_bytes: int = 64 * 1024 * 1024  # compact the journal when it grows past this
    result_retention: float = 7 * 24 * 3600.0  # seconds a finished job's result waits for its client

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
    log_format: str = "console"
    log_level: str = "info"
    heartbeat_interval: float = 1.0
    handshake_timeout: float = 10.0
    max_frame_size: int = DEFAULT_MAX_FRAME
    reconnect_max_delay: float = 5.0

    @property
    def secret_path(self) -> Path:
        return self.secret_file if self.secret_file is not None else self.state_dir / "secret"


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


def _show(value: Any) -> str:
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            dict: "a table", list: "an array"}.get(type(value))
    return f"{value!r}" if kind in ("an integer", "a number", "a string") else (kind or repr(value))


_COMMON: dict[str, Converter] = {
    "state_dir": _path,
    "secret_file": _path,
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
    "policy": _word,
    "policy_file": _path,
    "heartbeat_timeout": _duration,
    "journal": _bool,
    "journal_fsync": _bool,
    "compact_bytes": _size,
    "result_retention": _duration,
}

NODE_KEYS: dict[str, Converter] = {
    **_COMMON,
    "scheduler": _connect,
    "cpus": _count(1),
    "memory": _size,
    "gpus": _count(0),
    "reconnect_max_delay": _duration,
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
    return config


def load_node_config(config_file: Path | None, overrides: Mapping[str, Any],
                     *, labels: Mapping[str, str] | None = None) -> NodeConfig:
    """Like ``load_scheduler_config``, for a node."""
    return _absolute(NodeConfig(**_merge(config_file, overrides, NODE_KEYS, labels or {})))

"""Loading a daemon's settings: TOML file and flags through a key table; the shared keys, TLS among them.

``merge_settings`` reads the ``--config`` TOML file and the flags (field
name -> value, None: not given) through a key table of converters
(``fairpool.configvalues``): flags win over the file, the dataclass's
defaults fill the rest. Unknown keys (with a "did you mean"), keys given
twice and bad values raise ``ConfigError`` naming the file or flag, the key
and what was expected. ``absolute_paths`` pins relative paths to the
working directory at load time.

``COMMON_KEYS`` are the keys every daemon reads. Among them the TLS
settings, owned here: ``tls = { ca = "...", cert = "...", key = "..." }``
(or ``--tls-ca/--tls-cert/--tls-key``, ``tls_flags``) gives the CA, the
daemon's own certificate and its key (``fairpool.tls.TlsFiles``), and
``check_tls`` makes a daemon whose files are unusable stop at start, saying
why, rather than refuse every connection later.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from fairpool.configvalues import (
    LOG_FORMATS,
    LOG_LEVELS,
    BadValue,
    ConfigError,
    Converter,
    choice,
    duration,
    file_path,
    frame_size,
    show,
    word,
)
from fairpool.tls import TlsFiles

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python < 3.11: the declared dependency
    import tomli as tomllib  # type: ignore[no-redef]

_C = TypeVar("_C", bound="DataclassInstance")


TLS_KEYS = ("ca", "cert", "key")


def tls_table(value: Any, from_text: bool) -> TlsFiles:
    """``{ ca = "...", cert = "...", key = "..." }``: paths made absolute at load time, like the others."""
    if isinstance(value, TlsFiles):
        return value
    expected = 'expected a table { ca = "CA.crt", cert = "NAME.crt", key = "NAME.key" }'
    if not isinstance(value, dict):
        raise BadValue(f"{expected}, got {show(value)}")
    missing = [key for key in TLS_KEYS if key not in value]
    unknown = sorted(set(value) - set(TLS_KEYS))
    if missing:
        raise BadValue(f"{expected}: {', '.join(missing)} missing")
    if unknown:
        raise BadValue(f"{expected}: unknown key {', '.join(unknown)}")
    paths: dict[str, Path] = {}
    for key in TLS_KEYS:
        try:
            paths[key] = file_path(value[key], from_text).absolute()
        except BadValue as exc:
            raise BadValue(f"{key}: {exc}") from None
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


def check_tls(tls: TlsFiles | None, role: str, config_file: Path | None) -> None:
    """A daemon with unusable TLS files stops at start, saying why (not at each connection)."""
    if tls is None:
        return
    from fairpool.certs import check_files  # cryptography: only for daemons configured with TLS
    from fairpool.tls import TlsError

    try:
        check_files(tls, role)
    except TlsError as exc:
        raise ConfigError(f"bad value for 'tls'{where(config_file)}: {exc}") from None


COMMON_KEYS: dict[str, Converter] = {
    "state_dir": file_path,
    "secret_file": file_path,
    "tls": tls_table,
    "log_format": choice(*LOG_FORMATS),
    "log_level": choice(*LOG_LEVELS),
    "name": word,
    "heartbeat_interval": duration,
    "handshake_timeout": duration,
    "max_frame_size": frame_size,
}


def flag_name(key: str) -> str:
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


def values_from_file(path: Path, keys: dict[str, Converter]) -> dict[str, Any]:
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
        except BadValue as exc:
            raise ConfigError(f"bad value for '{raw_key}' in {path}: {exc}") from None
    return values


def values_from_flags(overrides: Mapping[str, Any], keys: dict[str, Converter],
                labels: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, raw in overrides.items():
        if raw is None:  # a flag not given
            continue
        if key not in keys:
            raise ConfigError(f"unknown setting {key!r} (known: {', '.join(sorted(keys))})")
        try:
            values[key] = keys[key](raw, isinstance(raw, str))
        except BadValue as exc:
            raise ConfigError(f"bad value for {labels.get(key, flag_name(key))}: {exc}") from None
    return values


def merge_settings(config_file: Path | None, overrides: Mapping[str, Any], keys: dict[str, Converter],
           labels: Mapping[str, str]) -> dict[str, Any]:
    merged = values_from_file(Path(config_file), keys) if config_file is not None else {}
    merged.update(values_from_flags(overrides, keys, labels))
    return merged


_PATH_FIELDS = ("state_dir", "secret_file", "policy_file")


def absolute_paths(config: _C) -> _C:
    """Relative paths made absolute, against the working directory at load time.

    A daemon's worker processes change directory (into a cluster's working
    dir); a path that is still relative then would point elsewhere.
    """
    changes: dict[str, Any] = {name: path.absolute() for name in _PATH_FIELDS
               if isinstance(path := getattr(config, name, None), Path) and not path.is_absolute()}
    return dataclasses.replace(config, **changes) if changes else config


def check_heartbeat(timeout: float, interval: float, config_file: Path | None) -> None:
    """A daemon's heartbeat timeout must leave room for at least one heartbeat."""
    if timeout <= interval:
        raise ConfigError(f"heartbeat_timeout ({timeout:g}s) must be greater than "
                          f"heartbeat_interval ({interval:g}s){where(config_file)}")


def where(config_file: Path | None) -> str:
    return f" in {config_file}" if config_file is not None else ""

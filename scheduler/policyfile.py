"""The scheduler's policy file: parse and validate it into a frozen PolicyConfig.

The format (SPEC.md, "Tenants and the policy file")::

    policy = "fair-share"          # optional: the --policy flag otherwise

    [tenants.alice]
    weight = 2                     # > 0, default 1
    tier = 1                       # integer, default 0 (priority policy)
    parent = "physics"             # another declared tenant (a group): a tree
    max_running = 16               # jobs running at once (held beyond)
    max_queued = 1000              # jobs queued at once (refused beyond)
    min = { cpus = 4 }             # guaranteed (priority policy)
    max = { cpus = 32, memory = "64G", gpus = 2 }   # never exceeded

    [decayed-usage]                # options of a policy, in its own section
    half_life = "2h"

Loading is a pure function: it reads the file, checks everything, and returns
a PolicyConfig, or raises PolicyFileError (a ConfigError, so the CLI reports
it as a usage error) with one line naming the file, the key and what was
expected. Nothing is applied until the whole file is good, so a reload of a
broken file changes nothing.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from fairpool.config import ConfigError, read_toml
from fairpool.policies.base import Policy, UnknownPolicy
from fairpool.policies.options import OptionError, parse_options, show
from fairpool.policies.registry import known_policies, make_policy, policy_options
from fairpool.policies.resources import Resources
from fairpool.policies.tenants import TenantConfig

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python < 3.11: the declared dependency
    import tomli as tomllib  # type: ignore[no-redef]

TENANT_KEYS = ("weight", "tier", "parent", "max_running", "max_queued", "min", "max")
RESOURCE_KEYS = ("cpus", "memory", "gpus")
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(i?B)?\s*", re.IGNORECASE)


class PolicyFileError(ConfigError):
    pass


@dataclass(frozen=True)
class PolicyConfig:
    policy: str | None  # None: the file leaves the choice to --policy
    tenants: Mapping[str, TenantConfig]
    options: Mapping[str, Mapping[str, Any]]  # policy name -> its converted options
    source: str = "<policy file>"

    def options_for(self, name: str) -> dict[str, Any]:
        return dict(self.options.get(name, {}))

    def make_policy(self, default: str = "fifo") -> Policy:
        name = self.policy or default
        return make_policy(name, self.options_for(name))


EMPTY = PolicyConfig(None, MappingProxyType({}), MappingProxyType({}))


class _Bad(Exception):
    """A value is wrong: (where, what was expected)."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(message)
        self.where = where


def load_policy_file(path: Path | str) -> PolicyConfig:
    """Read and validate a policy file; PolicyFileError names the file, key and expectation."""
    path = Path(path)
    try:
        data = read_toml(path)
    except ConfigError as exc:
        raise PolicyFileError(str(exc).replace("config file", "policy file")) from None
    return parse_policy(data, str(path))


def parse_policy_text(text: str, source: str = "<policy file>") -> PolicyConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyFileError(f"{source} is not valid TOML: {exc}") from None
    return parse_policy(data, source)


def parse_policy(data: Mapping[str, Any], source: str = "<policy file>") -> PolicyConfig:
    """Validate a parsed TOML document (a dict) into a PolicyConfig."""
    try:
        return _parse(data, source)
    except _Bad as exc:
        raise PolicyFileError(f"{source}: {exc.where}: {exc}") from None


def _parse(data: Mapping[str, Any], source: str) -> PolicyConfig:
    try:
        names = known_policies()
    except UnknownPolicy as exc:  # pragma: no cover - a broken plugin's metadata
        raise _Bad("policy", str(exc)) from None
    policy: str | None = None
    tenants: dict[str, TenantConfig] = {}
    options: dict[str, Mapping[str, Any]] = {}
    for key, value in data.items():
        if key == "policy":
            policy = _policy_name(value, names)
        elif key == "tenants":
            tenants = _tenants(value)
        elif key in names:
            options[key] = MappingProxyType(_options(key, value))
        else:
            known = ["policy", "tenants", *names]
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise _Bad(key, f"unknown key ({hint}expected policy, [tenants.NAME] or a section "
                            f"named after a policy: {', '.join(names)})")
    if policy is not None and policy not in options:
        _options(policy, {})  # a plugin's factory is loaded now, not at the first reload
    return PolicyConfig(policy, MappingProxyType(tenants), MappingProxyType(options), source)


def _policy_name(value: Any, names: list[str]) -> str:
    if not isinstance(value, str) or not value:
        raise _Bad("policy", f"expected a policy name ({', '.join(names)}), got {show(value)}")
    if value not in names:
        raise _Bad("policy", f"unknown policy {value!r} (known: {', '.join(names)})")
    return value


def _options(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Bad(name, f"expected a table [{name}] of the policy's options, got {show(value)}")
    try:
        converted: dict[str, Any] = parse_options(name, policy_options(name), value)
    except OptionError as exc:
        raise _Bad(f"[{name}] {exc.key}", str(exc)) from None
    except UnknownPolicy as exc:
        raise _Bad(f"[{name}]", str(exc)) from None
    return converted


# --- tenants --------------------------------------------------------------


def _tenants(value: Any) -> dict[str, TenantConfig]:
    if not isinstance(value, dict):
        raise _Bad("tenants", f"expected tables [tenants.NAME], got {show(value)}")
    tenants = {name: _tenant(name, table) for name, table in value.items()}
    for name, config in tenants.items():
        if config.parent is not None and config.parent not in tenants:
            raise _Bad(f"[tenants.{name}] parent",
                       f"expected a tenant declared in this file, got {config.parent!r}")
    for name in tenants:
        seen = [name]
        parent = tenants[name].parent
        while parent is not None:
            if parent in seen:
                raise _Bad(f"[tenants.{name}] parent", f"parents form a cycle: {' -> '.join(seen + [parent])}")
            seen.append(parent)
            parent = tenants[parent].parent
    return tenants


def _tenant(name: str, table: Any) -> TenantConfig:
    where = f"[tenants.{name}]"
    if not name or any(c.isspace() or not c.isprintable() for c in name):
        raise _Bad(where, f"expected a tenant name without spaces, got {name!r}")
    if not isinstance(table, dict):
        raise _Bad(where, f"expected a table of tenant settings, got {show(table)}")
    for key in table:
        if key not in TENANT_KEYS:
            close = difflib.get_close_matches(key, TENANT_KEYS, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise _Bad(f"{where} {key}", f"unknown tenant setting ({hint}known: {', '.join(TENANT_KEYS)})")
    weight = table.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 < weight < math.inf:
        raise _Bad(f"{where} weight", f"expected a number > 0, got {show(weight)}")
    tier = table.get("tier", 0)
    if isinstance(tier, bool) or not isinstance(tier, int):
        raise _Bad(f"{where} tier", f"expected an integer, got {show(tier)}")
    parent = table.get("parent")
    if parent is not None and (not isinstance(parent, str) or not parent):
        raise _Bad(f"{where} parent", f"expected the name of another tenant, got {show(parent)}")
    if parent == name:
        raise _Bad(f"{where} parent", "a tenant cannot be its own parent")
    minimum = _resources(f"{where} min", table["min"], allow_zero=True) if "min" in table else None
    maximum = _resources(f"{where} max", table["max"], allow_zero=False) if "max" in table else None
    if minimum is not None and maximum is not None:
        for kind in RESOURCE_KEYS:
            low, high = getattr(minimum, kind), getattr(maximum, kind)
            if high and low > high:
                raise _Bad(f"{where} min", f"min {kind} {low} is above max {kind} {high}")
    return TenantConfig(name, float(weight), tier, minimum, maximum,
                        _count(f"{where} max_running", table.get("max_running")),
                        _count(f"{where} max_queued", table.get("max_queued")), parent)


def _count(where: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _Bad(where, f"expected an integer >= 1, got {show(value)}")
    return value


def _resources(where: str, value: Any, *, allow_zero: bool) -> Resources:
    if not isinstance(value, dict):
        raise _Bad(where, f'expected a table like {{ cpus = 4, memory = "8G", gpus = 1 }}, got {show(value)}')
    lowest = "0" if allow_zero else "1"
    for key in value:
        if key not in RESOURCE_KEYS:
            raise _Bad(f"{where}.{key}", f"unknown resource (known: {', '.join(RESOURCE_KEYS)})")
    cpus = value.get("cpus", 0)
    if isinstance(cpus, bool) or not isinstance(cpus, int | float) or not 0 <= cpus < math.inf:
        raise _Bad(f"{where}.cpus", f"expected a number of cpus >= {lowest}, got {show(cpus)}")
    memory = _size(f"{where}.memory", value.get("memory", 0))
    gpus = value.get("gpus", 0)
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
        raise _Bad(f"{where}.gpus", f"expected an integer >= {lowest}, got {show(gpus)}")
    if not allow_zero:
        for kind, amount in (("cpus", cpus), ("memory", memory), ("gpus", gpus)):
            if kind in value and not amount:
                raise _Bad(f"{where}.{kind}", f"expected more than 0 (leave {kind} out for no limit)")
    return Resources(float(cpus), memory, gpus)


def _size(where: str, value: Any) -> int:
    expected = 'expected a size in bytes or like "512M", "4G", "1.5T"'
    if isinstance(value, bool):
        raise _Bad(where, f"{expected}, got {show(value)}")
    if isinstance(value, int):
        if value < 0:
            raise _Bad(where, f"{expected}, got {value}")
        return value
    if isinstance(value, str):
        match = _SIZE.fullmatch(value)
        if match is not None:
            return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).upper()])
    raise _Bad(where, f"{expected}, got {show(value)}")

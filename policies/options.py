"""Policy options: what each policy's section of the policy file may set.

A policy class lists its options as ``OPTIONS`` (name, kind, default, help);
``parse_options`` checks a section against them and converts the values, so
the policy file loader and ``make_policy`` refuse the same mistakes with the
same words. Durations are seconds or strings like "500ms", "10s", "2m", "2h",
"7d"; "none" switches an optional duration off.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h|d)?\s*")
KINDS = ("duration", "optional-duration", "number", "choice")


class OptionError(ValueError):
    """A bad option; ``key`` names it, the message says what was expected."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class Option:
    name: str
    kind: str  # one of KINDS
    default: Any
    help: str
    choices: tuple[str, ...] = ()


def show(value: Any) -> str:
    """A value as an error message shows it: the literal for scalars, the type otherwise."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float | str):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def parse_duration(value: Any) -> float:
    """Seconds > 0 from a number or a string with a unit; ValueError says what was expected."""
    expected = 'expected a positive number of seconds or a duration like "10s", "2m", "2h", "7d"'
    if isinstance(value, str):
        match = _DURATION.fullmatch(value)
        if match is None:
            raise ValueError(f"{expected}, got {value!r}")
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise ValueError(f"{expected}, got {show(value)}")
    if not 0 < seconds < math.inf:
        raise ValueError(f"{expected}, got {show(value)}")
    return seconds


def _convert(option: Option, value: Any) -> Any:
    if option.kind == "duration":
        return parse_duration(value)
    if option.kind == "optional-duration":
        if value is None or isinstance(value, str) and value.strip().lower() == "none":
            return None
        return parse_duration(value)
    if option.kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
            raise ValueError(f"expected a number > 0, got {show(value)}")
        return float(value)
    if option.kind == "choice":
        if value not in option.choices:
            raise ValueError(f"expected one of {', '.join(map(repr, option.choices))}, got {show(value)}")
        return value
    raise AssertionError(f"option kind {option.kind!r}")  # a policy's own mistake


def parse_options(policy: str, options: tuple[Option, ...], raw: Mapping[str, Any]) -> dict[str, Any]:
    """The section's values converted, keyed by option name; OptionError on the first bad one."""
    known = {option.name: option for option in options}
    values: dict[str, Any] = {}
    for raw_key, value in raw.items():
        key = raw_key.replace("-", "_")
        option = known.get(key)
        if option is None:
            if not known:
                raise OptionError(raw_key, f"policy {policy!r} has no options")
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise OptionError(raw_key, f"unknown option for policy {policy!r} ({hint}known: {', '.join(sorted(known))})")
        try:
            values[key] = _convert(option, value)
        except ValueError as exc:
            raise OptionError(raw_key, str(exc)) from None
    return values


def defaults(options: tuple[Option, ...]) -> dict[str, Any]:
    return {option.name: option.default for option in options}

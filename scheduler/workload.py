"""The simulator's workload file: a pool, tenants' job streams and how to measure them.

Parsed and validated into frozen dataclasses (``Workload``) by
``load_workload(path)``; a mistake raises ``WorkloadError`` (a ConfigError,
so the CLI reports it as a usage error) naming the file, the key and what
was expected. ``config/workload.toml`` documents every key. In short::

    duration = "120s"      # simulated time
    seed = 1               # every random draw derives from it
    [measure]              # warmup, window, sliding, resolution, threshold, tolerance
    [[node]]               # name, count, cpus, memory, gpus, join
    [[stream]]             # tenant, copies, arrive, start, stop, jobs, rate,
                           # runtime, cpus, memory, gpus, priority

Runtimes are a duration (``"1s"``, ``0.25``) or a distribution:
``"fixed(1s)"``, ``"uniform(500ms, 1.5s)"``, ``"exponential(1s)"`` (its mean).
"""

from __future__ import annotations

import difflib
import math
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fairpool.config import ConfigError, read_toml

ARRIVALS = ("backlog", "poisson", "periodic")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|s|m|h|d)?\s*")
_DISTRIBUTION = re.compile(r"\s*(fixed|uniform|exponential)\s*\((.*)\)\s*")
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(i?B)?\s*", re.IGNORECASE)

TOP_KEYS = ("duration", "seed", "tick", "measure", "node", "stream")
MEASURE_KEYS = ("warmup", "window", "sliding", "resolution", "threshold", "tolerance")
NODE_KEYS = ("name", "count", "cpus", "memory", "gpus", "join")
STREAM_KEYS = ("tenant", "copies", "arrive", "start", "stop", "jobs", "rate", "runtime",
               "cpus", "memory", "gpus", "priority")


class WorkloadError(ConfigError):
    pass


class _Bad(Exception):
    def __init__(self, where: str, message: str) -> None:
        super().__init__(message)
        self.where = where


@dataclass(frozen=True)
class Runtime:
    """A job runtime distribution: ``fixed`` (a), ``uniform`` (a..b) or ``exponential`` (mean a)."""

    kind: str
    a: float
    b: float = 0.0

    def sample(self, rng: random.Random) -> float:
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b)
        if self.kind == "exponential":
            return rng.expovariate(1.0 / self.a)
        return self.a

    def __str__(self) -> str:
        if self.kind == "uniform":
            return f"uniform({self.a:g}s, {self.b:g}s)"
        return f"{self.kind}({self.a:g}s)"


@dataclass(frozen=True)
class MeasureSpec:
    warmup: float = 0.0  # seconds left out of the measured windows
    window: float = 10.0  # measurement windows of this length, one after the other
    sliding: float = 5.0  # the sliding window of the newcomer figures
    resolution: float = 0.1  # seconds per bin (shares are added up per bin; entitlements sampled)
    threshold: float = 0.9  # a newcomer has converged once at this fraction of its entitlement
    tolerance: float = 0.1  # ... and it has settled once it stays within this of it


@dataclass(frozen=True)
class NodeSpec:
    name: str
    cpus: int
    memory: int = 0
    gpus: int = 0
    join: float = 0.0


@dataclass(frozen=True)
class StreamSpec:
    tenant: str
    arrive: str  # one of ARRIVALS
    runtime: Runtime
    start: float = 0.0
    stop: float | None = None  # no arrival after this (None: the end of the run)
    jobs: int | None = None  # at most this many jobs (backlog: exactly)
    rate: float = 0.0  # jobs per second (poisson, periodic)
    cpus: float = 1.0
    memory: int = 0
    gpus: int = 0
    priority: int = 0
    index: int = 0  # position in the file (with copies: the same for each): seeds its RNGs
    copy: int = 0


@dataclass(frozen=True)
class Workload:
    nodes: tuple[NodeSpec, ...]
    streams: tuple[StreamSpec, ...]
    duration: float
    seed: int = 1
    tick: float = 1.0
    measure: MeasureSpec = MeasureSpec()
    source: str = "<workload>"

    def rng(self, stream: StreamSpec, purpose: str) -> random.Random:
        """An RNG of its own per stream (copy) and purpose: same file, same draws."""
        return random.Random(f"{self.seed}/{stream.index}/{stream.copy}/{purpose}")


def load_workload(path: Path | str) -> Workload:
    path = Path(path)
    try:
        data = read_toml(path)
    except ConfigError as exc:
        raise WorkloadError(str(exc).replace("config file", "workload file")) from None
    return parse_workload(data, str(path))


def parse_workload(data: Mapping[str, Any], source: str = "<workload>") -> Workload:
    """Validate a parsed TOML document into a Workload; WorkloadError names the key."""
    try:
        return _parse(data, source)
    except _Bad as exc:
        raise WorkloadError(f"{source}: {exc.where}: {exc}") from None


def _parse(data: Mapping[str, Any], source: str) -> Workload:
    _check_keys("", data, TOP_KEYS)
    if "duration" not in data:
        raise _Bad("duration", 'missing: the simulated time, e.g. duration = "60s"')
    duration = _duration("duration", data["duration"])
    seed = data.get("seed", 1)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise _Bad("seed", f"expected an integer, got {seed!r}")
    tick = _duration("tick", data.get("tick", 1.0))
    measure = _measure(_table("measure", data.get("measure", {})), duration)
    nodes = _list("node", data.get("node"))
    node_specs = tuple(spec for i, table in enumerate(nodes) for spec in _nodes(f"node[{i}]", table))
    names = [n.name for n in node_specs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise _Bad("node", f"node names must differ, {twice[0]!r} is used twice")
    streams = _list("stream", data.get("stream"))
    stream_specs = tuple(spec for i, table in enumerate(streams) for spec in _streams(i, table))
    return Workload(node_specs, stream_specs, duration, seed, tick, measure, source)


def _measure(table: Mapping[str, Any], duration: float) -> MeasureSpec:
    _check_keys("[measure] ", table, MEASURE_KEYS)
    base = MeasureSpec()
    warmup = _duration("[measure] warmup", table.get("warmup", 0.0), zero=True)
    window = _duration("[measure] window", table.get("window", min(base.window, duration)))
    sliding = _duration("[measure] sliding", table.get("sliding", base.sliding))
    resolution = _duration("[measure] resolution", table.get("resolution", base.resolution))
    if resolution > window or resolution > sliding:
        raise _Bad("[measure] resolution", f"expected at most the window and the sliding window, got {resolution:g}s")
    if warmup >= duration:
        raise _Bad("[measure] warmup", f"expected less than the duration ({duration:g}s), got {warmup:g}s")
    fractions = {}
    for key in ("threshold", "tolerance"):
        value = table.get(key, getattr(base, key))
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
            raise _Bad(f"[measure] {key}", f"expected a number between 0 and 1, got {value!r}")
        fractions[key] = float(value)
    return MeasureSpec(warmup, window, sliding, resolution, fractions["threshold"], fractions["tolerance"])


def _nodes(where: str, table: Mapping[str, Any]) -> list[NodeSpec]:
    _check_keys(f"[{where}] ", table, NODE_KEYS)
    name = table.get("name", "node")
    if not isinstance(name, str) or not name or any(c.isspace() for c in name):
        raise _Bad(f"[{where}] name", f"expected a name without spaces, got {name!r}")
    count = _int(f"[{where}] count", table.get("count", 1), 1)
    cpus = _int(f"[{where}] cpus", table.get("cpus", 1), 1)
    memory = _size(f"[{where}] memory", table.get("memory", 0))
    gpus = _int(f"[{where}] gpus", table.get("gpus", 0), 0)
    join = _duration(f"[{where}] join", table.get("join", 0.0), zero=True)
    if count == 1:
        return [NodeSpec(name, cpus, memory, gpus, join)]
    return [NodeSpec(f"{name}-{i}", cpus, memory, gpus, join) for i in range(1, count + 1)]


def _streams(index: int, table: Any) -> list[StreamSpec]:
    where = f"[stream[{index}]]"
    table = _table(where, table)
    _check_keys(f"{where} ", table, STREAM_KEYS)
    tenant = table.get("tenant")
    if not isinstance(tenant, str) or not tenant or any(c.isspace() or not c.isprintable() for c in tenant):
        raise _Bad(f"{where} tenant", f"expected a tenant name without spaces, got {tenant!r}")
    copies = _int(f"{where} copies", table.get("copies", 1), 1)
    arrive = table.get("arrive", "backlog")
    if arrive not in ARRIVALS:
        raise _Bad(f"{where} arrive", f"expected one of {', '.join(map(repr, ARRIVALS))}, got {arrive!r}")
    jobs = _int(f"{where} jobs", table["jobs"], 1) if "jobs" in table else None
    rate = 0.0
    if arrive == "backlog":
        if jobs is None:
            raise _Bad(f"{where} jobs", 'missing: a backlog stream submits this many jobs at "start"')
    else:
        rate_value = table.get("rate")
        if isinstance(rate_value, bool) or not isinstance(rate_value, int | float) or not 0 < rate_value < math.inf:
            raise _Bad(f"{where} rate", f"expected jobs per second > 0 for arrive = {arrive!r}, got {rate_value!r}")
        rate = float(rate_value)
    start = _duration(f"{where} start", table.get("start", 0.0), zero=True)
    stop = _duration(f"{where} stop", table["stop"]) if "stop" in table else None
    if stop is not None and stop <= start:
        raise _Bad(f"{where} stop", f"expected later than start ({start:g}s), got {stop:g}s")
    if "runtime" not in table:
        raise _Bad(f"{where} runtime", 'missing: e.g. "1s", "uniform(0.5s, 1.5s)" or "exponential(1s)"')
    runtime = _runtime(f"{where} runtime", table["runtime"])
    cpus = table.get("cpus", 1)
    if isinstance(cpus, bool) or not isinstance(cpus, int | float) or not 0 < cpus < math.inf:
        raise _Bad(f"{where} cpus", f"expected a number of cpus > 0, got {cpus!r}")
    memory = _size(f"{where} memory", table.get("memory", 0))
    gpus = _int(f"{where} gpus", table.get("gpus", 0), 0)
    priority = table.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise _Bad(f"{where} priority", f"expected an integer, got {priority!r}")
    width = len(str(copies))
    names = [tenant] if copies == 1 else [f"{tenant}{i:0{width}d}" for i in range(1, copies + 1)]
    return [StreamSpec(name, arrive, runtime, start, stop, jobs, rate, float(cpus), memory, gpus, priority,
                       index, copy) for copy, name in enumerate(names)]


# --- values -----------------------------------------------------------------


def _check_keys(where: str, table: Mapping[str, Any], known: tuple[str, ...]) -> None:
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise _Bad(f"{where}{key}".strip(), f"unknown key ({hint}known: {', '.join(known)})")


def _table(where: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _Bad(where, f"expected a table, got {type(value).__name__}")
    return value


def _list(where: str, value: Any) -> list[Mapping[str, Any]]:
    if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
        raise _Bad(where, f"expected one or more [[{where}]] tables")
    return value


def _int(where: str, value: Any, lowest: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
        raise _Bad(where, f"expected an integer >= {lowest}, got {value!r}")
    return value


def parse_seconds(value: Any, *, zero: bool = False) -> float:
    """Seconds from a number or a string like "500ms", "10s", "2m"; ValueError otherwise."""
    if isinstance(value, str):
        match = _DURATION.fullmatch(value)
        if match is None:
            raise ValueError(f'expected a duration like "500ms", "10s", "2m", got {value!r}')
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise ValueError(f'expected a duration like "500ms", "10s", "2m", got {value!r}')
    if not (0 <= seconds if zero else 0 < seconds) or not seconds < math.inf:
        raise ValueError(f"expected a duration {'>=' if zero else '>'} 0, got {value!r}")
    return seconds


def _duration(where: str, value: Any, *, zero: bool = False) -> float:
    try:
        return parse_seconds(value, zero=zero)
    except ValueError as exc:
        raise _Bad(where, str(exc)) from None


def _size(where: str, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        match = _SIZE.fullmatch(value)
        if match is not None:
            return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).upper()])
    raise _Bad(where, f'expected a size in bytes or like "512M", "4G", got {value!r}')


def _runtime(where: str, value: Any) -> Runtime:
    match = _DISTRIBUTION.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        try:
            return Runtime("fixed", parse_seconds(value))
        except ValueError:
            raise _Bad(where, 'expected a duration like "1s", or "fixed(1s)", "uniform(500ms, 1.5s)", '
                              f'"exponential(1s)", got {value!r}') from None
    kind, inside = match.group(1), match.group(2).split(",")
    wanted = 2 if kind == "uniform" else 1
    if len(inside) != wanted:
        raise _Bad(where, f"{kind}() takes {wanted} duration(s), got {value!r}")
    bounds = [_duration(where, a.strip(), zero=kind == "uniform") for a in inside]
    if kind == "uniform":
        if bounds[1] < bounds[0] or bounds[1] <= 0:
            raise _Bad(where, f"uniform(a, b) needs 0 <= a <= b and b > 0, got {value!r}")
        return Runtime(kind, bounds[0], bounds[1])
    return Runtime(kind, bounds[0])

"""What a node daemon runs on: ``NodeConfig``, its keys and ``load_node_config``.

Besides the keys every daemon shares (``fairpool.configload.COMMON_KEYS``)
and its resources (cpus, memory, gpus) and ``run_as``, a node's settings say
how it joins and leaves the pool (its lifecycle, run by
``fairpool.nodes.lifecycle``, ``failover``, ``discover``, ``servehours`` and
``hooks``): the schedulers to try in order (``scheduler = "A,B"`` or an
array, then ``failover``), finding the scheduler by its LAN announcements
(``discover``), the service windows (``serve_hours = "18:00-08:00"``), how
many clusters to serve, what SIGTERM does (``stop``: finish or hand back),
and the shell hooks run at start and exit; and how much of a job's output it
keeps (``max_output``, the cap ``fairpool.nodes.outputcap`` applies). The converters of those values
are here; the plainer ones are in ``fairpool.configvalues``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fairpool.address import DEFAULT_PORT, Address
from fairpool.configload import (
    COMMON_KEYS,
    absolute_paths,
    check_heartbeat,
    check_tls,
    merge_settings,
    where,
)
from fairpool.configvalues import (
    DEFAULT_ANNOUNCE_ADDRESS,
    BadValue,
    ConfigError,
    Converter,
    announce_address,
    boolean,
    choice,
    command,
    connect,
    count,
    default_log_format,
    duration,
    hostname,
    interface,
    optional_word,
    run_as,
    show,
    size,
)
from fairpool.protocol import DEFAULT_MAX_FRAME
from fairpool.tls import TlsFiles


@dataclass(frozen=True)
class NodeConfig:
    scheduler: Address = Address("127.0.0.1", DEFAULT_PORT)
    name: str = field(default_factory=hostname)
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
    # bytes of each of a job's stdout and stderr kept: head and tail (fairpool.nodes.outputcap)
    max_output: int = 128 * 1024

    @property
    def secret_path(self) -> Path:
        return self.secret_file if self.secret_file is not None else self.state_dir / "secret"

    @property
    def schedulers(self) -> tuple[Address, ...]:
        """Every configured scheduler address, first preference first."""
        return (self.scheduler, *self.failover)


# --- joining and leaving: failover lists, service windows ------------------------------------


def scheduler_list(value: Any, from_text: bool) -> tuple[Address, ...]:
    """One or more HOST:PORT, first preference first: a TOML array, repeated flags, or "A,B"."""
    items = value if isinstance(value, list | tuple) else [value]
    addresses: list[Address] = []
    for item in items:
        if isinstance(item, Address):
            addresses.append(item)
            continue
        if not isinstance(item, str):
            raise BadValue(f'expected "HOST:PORT" or a list of them, got {show(item)}')
        parts = [part.strip() for part in item.split(",")]
        if not all(parts):
            raise BadValue(f"empty address in {item!r} (expected HOST:PORT or HOST:PORT,HOST:PORT,...)")
        addresses.extend(connect(part, True) for part in parts)
    if not addresses:
        raise BadValue("expected at least one HOST:PORT")
    return tuple(addresses)


def failover_list(value: Any, from_text: bool) -> tuple[Address, ...]:
    return () if value in ("", []) else scheduler_list(value, from_text)


_CLOCK = r"\s*([0-9]{1,2}):([0-9]{2})\s*"


def serve_hours(value: Any, from_text: bool) -> tuple[tuple[int, int], ...]:
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
        raise BadValue(f"{expected}, got {show(value)}")
    windows: list[tuple[int, int]] = []
    for part in parts:
        match = re.fullmatch(f"{_CLOCK}-{_CLOCK}", part)
        if match is None:
            raise BadValue(f"{expected}, got {part.strip()!r}")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if m1 > 59 or m2 > 59 or start >= 24 * 60 or end > 24 * 60:
            raise BadValue(f"{expected}: {part.strip()!r} is not a time of day (00:00 to 24:00)")
        if start == end:
            raise BadValue(f"{part.strip()!r} is an empty window; 00:00-24:00 is the whole day")
        windows.append((start, end))
    return tuple(windows)

#: The least and the most ``max_output`` may be: a useful head and tail; and room, for both streams
#: and the result, in the one message that carries them (a quarter of a message at most).
MIN_MAX_OUTPUT = 1024


def max_output(value: Any, from_text: bool) -> int:
    """Bytes of each of a job's streams a node keeps, like "256K" or "1M". There is no "unlimited":
    the output travels in one message with the job's result, and a job printing without end
    would take every daemon's memory with it."""
    nbytes = size(value, from_text)
    if nbytes < MIN_MAX_OUTPUT:
        raise BadValue(f'expected at least {MIN_MAX_OUTPUT} bytes (1K), like "128K" or "1M", got {nbytes} '
                       "(there is no unlimited: output travels in one message with the result)")
    return nbytes


NODE_KEYS: dict[str, Converter] = {
    **COMMON_KEYS,
    "scheduler": scheduler_list,  # several: failover order (load_node_config keeps the first in `scheduler`)
    "cpus": count(1),
    "memory": size,
    "gpus": count(0),
    "reconnect_max_delay": duration,
    "run_as": run_as,
    "failover": failover_list,
    "heartbeat_timeout": duration,
    "discover": boolean,
    "discover_name": optional_word,
    "announce_address": announce_address,
    "announce_interface": interface,
    "serve_hours": serve_hours,
    "serve": count(0),
    "stop": choice("finish", "handback"),
    "stop_timeout": duration,
    "init_hook": command,
    "close_hook": command,
    "hook_timeout": duration,
    "clean": boolean,
    "max_output": max_output,
}


def load_node_config(config_file: Path | None, overrides: Mapping[str, Any],
                     *, labels: Mapping[str, str] | None = None) -> NodeConfig:
    """Like ``load_scheduler_config``, for a node.

    ``scheduler`` may name several addresses (failover order): the first stays
    in ``scheduler``, the others go ahead of ``failover``.
    """
    values = merge_settings(config_file, overrides, NODE_KEYS, labels or {})
    given = "scheduler" in values or "failover" in values
    schedulers = values.pop("scheduler", None)
    if schedulers is not None:
        values["scheduler"] = schedulers[0]
        values["failover"] = (*schedulers[1:], *values.get("failover", ()))
    config = absolute_paths(NodeConfig(**values))
    check_tls(config.tls, "node", config_file)
    check_heartbeat(config.heartbeat_timeout, config.heartbeat_interval, config_file)
    if config.max_output > config.max_frame_size // 4:
        raise ConfigError(f"max_output ({config.max_output} bytes) must be at most a quarter of max_frame_size "
                          f"({config.max_frame_size // 4} bytes): a job's stdout and stderr travel in one message "
                          f"with its result{where(config_file)}")
    if config.discover and given:
        raise ConfigError("discover finds the scheduler by its announcements: give it no scheduler or failover "
                          f"addresses too (from --scheduler, FAIRPOOL_SCHEDULER or the config file){where(config_file)}")
    return config

"""Daemon configuration: typed, validated, from TOML files and command-line flags.

``SchedulerConfig`` and ``NodeConfig`` are what the daemons run on. The
loaders (``load_scheduler_config`` / ``load_node_config``) merge, in order of
precedence: command-line flags, the ``--config`` TOML file, defaults. Any bad
key or value raises ``ConfigError`` naming the file, key and what was expected.

This module owns the scheduler's settings (``SchedulerConfig``, its keys
``SCHEDULER_KEYS``, ``load_scheduler_config``) and is where every daemon
setting is imported from. The rest lives beside it, re-exported here:

* ``fairpool.configvalues`` -- the converters of plain values (paths,
  durations, sizes, addresses...), ``ConfigError`` and shared defaults;
* ``fairpool.configload`` -- reading the TOML file and flags through a key
  table, the keys every daemon shares, and the TLS settings (``tls_flags``);
* ``fairpool.nodeconfig`` -- ``NodeConfig``, ``NODE_KEYS``,
  ``load_node_config`` and the node lifecycle settings (failover,
  discovery, service hours, stop mode, hooks).
"""

from __future__ import annotations

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
    read_toml,
    tls_flags,
)
from fairpool.configvalues import (
    DEFAULT_ANNOUNCE_ADDRESS,
    LOG_FORMATS,
    LOG_LEVELS,
    ConfigError,
    Converter,
    announce_address,
    boolean,
    count,
    default_log_format,
    duration,
    file_path,
    hostname,
    interface,
    listen,
    optional_connect,
    optional_listen,
    parse_size,
    size,
    word,
)
from fairpool.nodeconfig import NODE_KEYS, NodeConfig, load_node_config
from fairpool.protocol import DEFAULT_MAX_FRAME
from fairpool.tls import TlsFiles

__all__ = [
    "DEFAULT_ANNOUNCE_ADDRESS", "DEFAULT_MAX_PAYLOAD", "LOG_FORMATS", "LOG_LEVELS", "NODE_KEYS", "SCHEDULER_KEYS",
    "ConfigError", "NodeConfig", "SchedulerConfig", "default_log_format", "load_node_config",
    "load_scheduler_config", "parse_size", "read_toml", "tls_flags",
]

#: What the client library lets one job's payload be (clients.session.MAX_JOB_PAYLOAD): room for the frame's rest.
DEFAULT_MAX_PAYLOAD = DEFAULT_MAX_FRAME - 64 * 1024


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
    name: str = field(default_factory=hostname)
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


SCHEDULER_KEYS: dict[str, Converter] = {
    **COMMON_KEYS,
    "listen": listen,
    "http": optional_listen,
    "metrics_tenants": count(0),
    "policy": word,
    "policy_file": file_path,
    "heartbeat_timeout": duration,
    "journal": boolean,
    "journal_fsync": boolean,
    "compact_bytes": size,
    "result_retention": duration,
    "max_payload_size": size,
    "max_connections_per_peer": count(0),
    "max_connections_per_tenant": count(0),
    "announce": boolean,
    "announce_address": announce_address,
    "announce_interface": interface,
    "announce_interval": duration,
    "advertise": optional_connect,
}

def load_scheduler_config(config_file: Path | None, overrides: Mapping[str, Any],
                          *, labels: Mapping[str, str] | None = None) -> SchedulerConfig:
    """Defaults < TOML file < ``overrides`` (field name -> value; None means not given).

    Relative paths come back absolute (against the current working directory).

    ``labels`` names where an override came from in error messages (default:
    its flag, e.g. ``--listen``); the CLI uses it for environment variables.
    """
    config = absolute_paths(SchedulerConfig(**merge_settings(config_file, overrides, SCHEDULER_KEYS, labels or {})))
    check_heartbeat(config.heartbeat_timeout, config.heartbeat_interval, config_file)
    check_tls(config.tls, "scheduler", config_file)
    return config

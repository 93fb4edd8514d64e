"""Daemon configuration: typed, validated, from TOML files and command-line flags.

``SchedulerConfig`` and ``NodeConfig`` are what the daemons run on. The
loaders (``load_scheduler_config`` / ``load_node_config``) merge, in order of
precedence: command-line flags, the ``--config`` TOML file, defaults. Any bad
key or value raises ``ConfigError`` naming the file, key and what was expected.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from fairpool.address import DEFAULT_PORT, Address
from fairpool.protocol import DEFAULT_MAX_FRAME


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

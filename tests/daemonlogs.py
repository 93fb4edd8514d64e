"""Reading what daemons logged: their JSON log records, found by event and fields, and when.

Tests that count what happened (a node lost three times, rejoined four) start
the daemons with ``log_format = "json"`` and ask ``logged(daemon, event,
**fields)``; a field given as a ``str`` that ends with ``*`` matches by
prefix. ``at(record)`` is the record's timestamp as ``time.time()`` seconds.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Protocol


class HasLog(Protocol):
    def log(self) -> str: ...


def records(daemon: HasLog) -> list[dict[str, Any]]:
    """Every JSON record the daemon wrote (other lines, e.g. a traceback, are skipped)."""
    found = []
    for line in daemon.log().splitlines():
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
    return found


def _matches(value: Any, wanted: Any) -> bool:
    if isinstance(wanted, str) and wanted.endswith("*"):
        return isinstance(value, str) and value.startswith(wanted[:-1])
    return bool(value == wanted)


def logged(daemon: HasLog, event: str, **fields: Any) -> list[dict[str, Any]]:
    """The records whose ``event`` is ``event`` and whose fields match ``fields``."""
    return [r for r in records(daemon)
            if r.get("event") == event and all(_matches(r.get(k), v) for k, v in fields.items())]


def at(record: dict[str, Any]) -> float:
    """When the record was logged (its ISO 8601 UTC ``timestamp``), in ``time.time()`` seconds."""
    return datetime.fromisoformat(str(record["timestamp"]).replace("Z", "+00:00")).timestamp()

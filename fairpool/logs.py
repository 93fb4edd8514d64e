"""Logging for the daemons and the command line: structlog, to stderr, console or JSON.

Daemons log through ``structlog.get_logger("fairpool.scheduler")`` (or
``"fairpool.node"`` ...); ``configure_logging`` decides how it looks. Every
event carries the standard fields ``timestamp`` (ISO 8601, UTC), ``level``,
``event`` and ``logger``. ``"console"`` renders one human-readable line per
event (in colour on a terminal); ``"json"`` one JSON object per line, for
journald and log collectors; the default is console on a terminal and JSON
otherwise (``fairpool.config.default_log_format``). Records from the standard
``logging`` module (libraries) go through the same renderer.

Field names are shared by every daemon: a line about a job carries ``job``
(its uid), ``tenant``, ``node`` and ``cluster``. Values of fields named like
credentials (``secret``, ``token``, ``password``, ``key``, ...) are replaced
by ``[redacted]`` before any renderer sees them: no code path should log one,
and this makes sure none does.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from fairpool.config import LOG_FORMATS, LOG_LEVELS, default_log_format

REDACTED = "[redacted]"
#: Field names whose values are never logged, alone or as a suffix (``admin_token``, ``tls_key``).
SECRET_FIELDS = ("secret", "token", "password", "passphrase", "key")


class _NamedWriteLogger(structlog.WriteLogger):
    """A fast write-to-file logger that remembers the name it was asked for.

    ``structlog.stdlib.add_logger_name`` reads ``.name``; going through the
    standard library for every event would cost more than the event itself.
    """

    def __init__(self, file: TextIO, name: str) -> None:
        super().__init__(file)
        self.name = name


def _logger_factory(*args: Any) -> _NamedWriteLogger:
    # sys.stderr is looked up when a logger is made, not when logging is
    # configured, so that a replaced stderr (pytest's capture) is honoured.
    name = str(args[0]) if args else "fairpool"
    return _NamedWriteLogger(sys.stderr, name)


def is_secret_field(name: str) -> bool:
    """Whether a log field of this name may hold a credential (``secret_file`` is a path: it may not)."""
    name = name.lower()
    return any(name == word or name.endswith("_" + word) for word in SECRET_FIELDS)


def redact_secrets(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: blank the values of credential-named fields."""
    for name in event_dict:
        if is_secret_field(name):
            event_dict[name] = REDACTED
    return event_dict


def _renderer(format: str) -> structlog.types.Processor:
    if format == "json":
        return structlog.processors.JSONRenderer()
    # plain_traceback: rich's (used when rich is installed) would print locals,
    # and a frame's locals may hold the cluster secret.
    return structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty(),
                                         exception_formatter=structlog.dev.plain_traceback)


def configure_logging(format: str | None = None, level: str = "info") -> None:
    """Route every structlog logger (and stdlib ``logging``) to stderr in ``format`` at ``level``.

    ``format`` None (or ``"auto"``): console on a terminal, JSON otherwise.
    """
    if format is None or format == "auto":
        format = default_log_format()
    if format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {format!r}")
    if level.lower() not in LOG_LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}, not {level!r}")
    threshold = logging.getLevelNamesMapping()[level.upper()]

    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        redact_secrets,
    ]
    if format == "json":
        # The console renderer prints tracebacks itself; JSON needs them as data.
        # Never with local variables: a frame's locals may hold the cluster secret.
        shared += [
            structlog.processors.StackInfoRenderer(),
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)),
        ]
    renderer = _renderer(format)

    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=_logger_factory,
        # Not cached: configure_logging may run again (tests, `fairpool demo`),
        # and loggers made at import time must follow the newest configuration.
        cache_logger_on_first_use=False,
    )

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        foreign_pre_chain=shared,
    ))
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_fairpool", False)]:
        root.removeHandler(old)
    handler._fairpool = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(threshold)

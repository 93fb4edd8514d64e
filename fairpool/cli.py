"""The ``fairpool`` command: parse flags, load the config, run daemons under one trio run.

Owns the command line (``scheduler``, ``node``, ``up``, ``demo``; ``admin`` is
wired in from ``fairpool.admincli``, ``certs`` from ``fairpool.certscli``), how a
daemon is started and stopped (SIGINT/SIGTERM cancel the run: a clean stop,
exit 0, no traceback) and how failures reach the user (bad flags or config:
one line, exit 2; a runtime error such as a port in use: one line, exit 1).
The daemons themselves are imported lazily, inside the commands.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

import structlog
import trio

from fairpool import __version__
from fairpool.address import Address
from fairpool.config import (
    NODE_KEYS,
    SCHEDULER_KEYS,
    ConfigError,
    NodeConfig,
    SchedulerConfig,
    load_node_config,
    load_scheduler_config,
    read_toml,
    tls_flags,
)
from fairpool.logs import configure_logging
from fairpool.secret import SecretError

log = structlog.get_logger("fairpool.cli")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
ENV_SCHEDULER, ENV_SECRET_FILE = "FAIRPOOL_SCHEDULER", "FAIRPOOL_SECRET_FILE"


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (and exit code 2).

    No abbreviated flags: ``--cpu`` must not silently mean ``--cpus``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# --- the command line ----------------------------------------------------------


def _daemon_flags(p: argparse.ArgumentParser) -> None:
    # Values stay strings here: the config loader converts and validates flags
    # and TOML alike, so both give the same error for the same mistake.
    p.add_argument("--config", metavar="FILE", type=Path, help="TOML file with the same keys as the flags")
    p.add_argument("--state-dir", metavar="DIR", help="where state lives (journal, secret, address file)")
    p.add_argument("--secret-file", metavar="FILE",
                   help="the cluster secret (created, mode 0600, if missing; default: STATE_DIR/secret)")
    p.add_argument("--log-format", metavar="console|json",
                   help="log format (default: console on a terminal, json otherwise)")
    p.add_argument("--log-level", metavar="LEVEL", help="debug, info, warning, error (default: info)")
    p.add_argument("--tls-ca", metavar="FILE", help="mutual TLS: the CA certificate (with --tls-cert, --tls-key)")
    p.add_argument("--tls-cert", metavar="FILE", help="mutual TLS: this daemon's certificate (`fairpool certs`)")
    p.add_argument("--tls-key", metavar="FILE", help="mutual TLS: this daemon's private key")


def _scheduler_flags(p: argparse.ArgumentParser) -> None:
    _daemon_flags(p)
    p.add_argument("--listen", metavar="HOST:PORT", help="protocol address (default: 127.0.0.1:51350)")
    p.add_argument("--http", metavar="HOST:PORT",
                   help='dashboard and /metrics address, "" for none (default: off; for up: 127.0.0.1:51351)')
    p.add_argument("--policy", metavar="NAME", help="fair-share policy (default: fifo)")
    p.add_argument("--policy-file", metavar="FILE", help="policy TOML: tenants, weights, settings")
    p.add_argument("--announce", action="store_true", default=None,
                   help="announce the scheduler on the LAN, for `fairpool node --discover` (default: off)")
    p.add_argument("--advertise", metavar="HOST:PORT",
                   help="the address nodes are told to dial (behind NAT; default: the listen address)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fairpool", description="A shared, multi-tenant compute pool for Python.")
    parser.add_argument("--version", action="version", version=f"fairpool {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = commands.add_parser("scheduler", help="run the scheduler daemon")
    _scheduler_flags(p)
    p.set_defaults(run=_cmd_scheduler, parser=p)

    p = commands.add_parser("node", help="run a node daemon")
    _daemon_flags(p)
    p.add_argument("--scheduler", metavar="HOST:PORT", action="append",
                   help=f"scheduler address (env {ENV_SCHEDULER}); several (A,B or repeated): failover order")
    p.add_argument("--cpus", metavar="N", help="CPUs to offer (default: all)")
    p.add_argument("--name", metavar="NAME", help="node name (default: host name)")
    p.add_argument("--memory", metavar="SIZE", help='memory to offer, e.g. "16G" (default: detect)')
    p.add_argument("--gpus", metavar="N", help="GPUs to offer (default: 0)")
    p.add_argument("--run-as", metavar="USER[:GROUP]",
                   help="run jobs as this unprivileged user (the node must run as root)")
    p.add_argument("--discover", action="store_true", default=None,
                   help="find the scheduler by its LAN announcements instead of --scheduler")
    p.add_argument("--discover-name", metavar="NAME", help="with --discover: only the scheduler of this name")
    p.add_argument("--announce-address", metavar="HOST:PORT",
                   help="where announcements are heard (default: multicast 239.255.51.35:51352)")
    p.add_argument("--announce-interface", metavar="IP", help="the interface to hear announcements on")
    p.add_argument("--serve-hours", metavar="HH:MM-HH:MM", help='take jobs only then, e.g. "18:00-08:00"')
    p.add_argument("--serve", metavar="N", help="exit after serving N clusters (default: 0, never)")
    p.add_argument("--stop", metavar="finish|handback", help="what SIGTERM does with running jobs (default: finish)")
    p.add_argument("--stop-timeout", metavar="SECONDS", help="how long `finish` waits (default: 60s)")
    p.add_argument("--init-hook", metavar="COMMAND", help="shell command run before the node starts")
    p.add_argument("--close-hook", metavar="COMMAND", help="shell command run when the node exits")
    p.add_argument("--clean", action="store_true", default=None,
                   help="remove working directories a crashed node left in the state dir")
    p.add_argument("--max-output", metavar="SIZE",
                   help='bytes of a job\'s stdout (and of its stderr) kept, head and tail, e.g. "1M" (default: 128K)')
    p.set_defaults(run=_cmd_node, parser=p)

    p = commands.add_parser("up", help="scheduler + one local node, in the foreground")
    _scheduler_flags(p)
    p.add_argument("--cpus", metavar="N", help="CPUs for the local node (default: all)")
    p.set_defaults(run=_cmd_up, parser=p)

    p = commands.add_parser("demo", help="start a pool and run three tenants' jobs on it")
    p.add_argument("--cpus", metavar="N", help="CPUs for the local node (default: all)")
    p.add_argument("--jobs", metavar="N", type=int, default=40, help="jobs per tenant (default: 40)")
    p.add_argument("--policy", metavar="NAME", help="the policy dividing the pool (default: fair-share)")
    p.add_argument("--log-level", metavar="LEVEL", default="warning", help="daemon log level (default: warning)")
    p.set_defaults(run=_cmd_demo, parser=p)

    from fairpool.admincli import register as register_admin  # its own module: verbs, tables, JSON

    register_admin(commands)
    from fairpool.certscli import register as register_certs

    register_certs(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # reported by the command's parser, so that its --help is the one suggested
            (args.parser if args.command else parser).error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        code: int = args.run(args)
    except ConfigError as exc:
        print(f"fairpool {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return code


def _overrides(args: argparse.Namespace, keys: Mapping[str, Any]) -> dict[str, Any]:
    overrides = {key: getattr(args, key) for key in keys if getattr(args, key, None) is not None}
    tls = tls_flags(getattr(args, "tls_ca", None), getattr(args, "tls_cert", None), getattr(args, "tls_key", None))
    if tls is not None:
        overrides["tls"] = tls
    return overrides


# --- commands ------------------------------------------------------------------


def _cmd_scheduler(args: argparse.Namespace) -> int:
    config = load_scheduler_config(args.config, _overrides(args, SCHEDULER_KEYS))
    configure_logging(config.log_format, config.log_level)

    async def run() -> None:
        from fairpool.scheduler.daemon import serve_scheduler

        await serve_scheduler(config)

    return run_daemon("scheduler", run, listen=config.listen, http=config.http)


def _cmd_node(args: argparse.Namespace) -> int:
    overrides = _overrides(args, NODE_KEYS)
    labels: dict[str, str] = {}
    # The environment stands in for a flag that is not given.
    for key, var in (("scheduler", ENV_SCHEDULER), ("secret_file", ENV_SECRET_FILE)):
        if key == "scheduler" and args.discover:
            continue  # --discover finds it; a FAIRPOOL_SCHEDULER set for clients is not a conflict
        if key not in overrides and os.environ.get(var):
            overrides[key], labels[key] = os.environ[var], var
    config = load_node_config(args.config, overrides, labels=labels)
    configure_logging(config.log_format, config.log_level)

    async def run() -> None:
        from fairpool.nodes.service import run_node  # SIGTERM drains the node

        structlog.contextvars.bind_contextvars(node=config.name)  # every line of the node names it
        await run_node(config)

    return run_daemon("node", run)


def local_node_config(scheduler: SchedulerConfig, cpus: str | int | None) -> NodeConfig:
    """The node ``up`` and ``demo`` run beside the scheduler: same secret, state under it."""
    overrides: dict[str, Any] = {
        "cpus": cpus,
        "state_dir": scheduler.state_dir / "node",
        "secret_file": scheduler.secret_path,
        "log_format": scheduler.log_format,
        "log_level": scheduler.log_level,
        "heartbeat_interval": scheduler.heartbeat_interval,
        "heartbeat_timeout": scheduler.heartbeat_timeout,
        "handshake_timeout": scheduler.handshake_timeout,
        "max_frame_size": scheduler.max_frame_size,
    }
    return load_node_config(None, overrides)


def reachable(bound: Address) -> Address:
    """Where a local node connects to a scheduler bound to ``bound`` (a wildcard is not an address)."""
    if bound.host in ("0.0.0.0", ""):
        return Address("127.0.0.1", bound.port)
    if bound.host == "::":
        return Address("::1", bound.port)
    return bound


async def start_pool(nursery: trio.Nursery, scheduler: SchedulerConfig, node: NodeConfig) -> Address:
    """Start a scheduler and a node connected to it; return once the node has joined.

    Returns the address clients connect to.
    """
    from fairpool.nodes.daemon import serve_node
    from fairpool.scheduler.daemon import serve_scheduler

    bound: Address = await nursery.start(serve_scheduler, scheduler)
    address = reachable(bound)
    await nursery.start(serve_node, replace(node, scheduler=address))
    return address


UP_HTTP_PORT = 51351  # `fairpool up` serves the dashboard here unless told otherwise
HTTP_ADDRESS_FILE = "scheduler.http"  # where the scheduler writes the dashboard's bound address


def _up_dashboard(args: argparse.Namespace, scheduler: SchedulerConfig) -> SchedulerConfig:
    """``up`` serves the dashboard on loopback unless --http or the config file's ``http`` say otherwise.

    With ``--listen HOST:0`` (any free port) the dashboard takes a free port too.
    """
    if args.http is not None or (args.config is not None and "http" in read_toml(args.config)):
        return scheduler
    return replace(scheduler, http=Address("127.0.0.1", 0 if scheduler.listen.port == 0 else UP_HTTP_PORT))


def _cmd_up(args: argparse.Namespace) -> int:
    scheduler = _up_dashboard(args, load_scheduler_config(args.config, _overrides(args, SCHEDULER_KEYS)))
    if scheduler.tls is not None:
        raise ConfigError("`fairpool up` does not run TLS (its local node would need a node certificate): "
                          "run `fairpool scheduler` and `fairpool node`, each with its own certificate")
    node = local_node_config(scheduler, args.cpus)
    configure_logging(scheduler.log_format, scheduler.log_level)

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            address = await start_pool(nursery, scheduler, node)
            print(banner(scheduler, node, address, _dashboard_address(scheduler)), flush=True)

    return run_daemon("up", run, listen=scheduler.listen, http=scheduler.http)


def _dashboard_address(scheduler: SchedulerConfig) -> Address | None:
    """Where the running scheduler's dashboard listens (it wrote it to its state dir), if it serves one."""
    try:
        return Address.parse((scheduler.state_dir / HTTP_ADDRESS_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def banner(scheduler: SchedulerConfig, node: NodeConfig, address: Address,
           dashboard_address: Address | None = None) -> str:
    secret = scheduler.secret_path.absolute()
    if scheduler.http is None:
        dashboard = "off (start with --http 127.0.0.1:PORT)"
    elif dashboard_address is not None:
        dashboard = f"http://{reachable(dashboard_address)}/ (log in with the secret file's content)"
    elif scheduler.http.port == 0:
        dashboard = f"on {scheduler.http.host}, at a free port (see the log)"
    else:
        dashboard = f"http://{reachable(scheduler.http)}/"
    return "\n".join([
        f"fairpool is up: a scheduler and a local node with {node.cpus} CPUs (policy {scheduler.policy})",
        f"  scheduler    {address}",
        f"  secret file  {secret}",
        f"  state        {scheduler.state_dir.absolute()}",
        f"  dashboard    {dashboard}",
        "Connect from Python:",
        "  from fairpool import SharedJobCluster",
        f'  cluster = SharedJobCluster(compute, scheduler="{address}", secret_file="{secret}")',
        f"More nodes: fairpool node --scheduler {address} --secret-file {secret}",
        "Ctrl-C stops.",
    ])


def _cmd_demo(args: argparse.Namespace) -> int:
    from fairpool.demo import run_demo

    return run_demo(cpus=args.cpus, jobs=args.jobs, policy=args.policy, log_level=args.log_level)


# --- running a daemon until a signal ---------------------------------------------


def run_daemon(what: str, main: Callable[[], Awaitable[None]], *, listen: Address | None = None,
               http: Address | None = None) -> int:
    """Run ``main`` under trio until it returns or SIGINT/SIGTERM stops it; return the exit code.

    A signal is a clean stop (exit 0); a second one exits at once.
    """
    try:
        trio.run(_supervise, main)
    except BaseException as exc:  # noqa: B036 - every failure becomes one line and an exit code
        return _failure(what, exc, listen=listen, http=http)
    return EXIT_OK


async def _supervise(main: Callable[[], Awaitable[None]]) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            main_scope = trio.CancelScope()
            nursery.start_soon(_stop_on_signal, signals, main_scope)
            with main_scope:
                await main()
            nursery.cancel_scope.cancel()


async def _stop_on_signal(signals: AsyncIterator[int], main_scope: trio.CancelScope) -> None:
    async for signum in signals:
        name = signal.Signals(signum).name
        if main_scope.cancel_called:
            log.warning("stopping now", signal=name, reason="second signal")
            os._exit(EXIT_FAILED)
        log.info("stopping", signal=name)
        main_scope.cancel()


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def _is_usage_error(exc: BaseException) -> bool:
    if isinstance(exc, ConfigError):
        return True
    try:
        from fairpool.policies.base import UnknownPolicy
    except ImportError:
        return False
    return isinstance(exc, UnknownPolicy)


def _failure(what: str, exc: BaseException, *, listen: Address | None, http: Address | None) -> int:
    leaves = list(_leaves(exc))
    if all(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
        log.info("interrupted, stopped")  # SIGINT before the signal receiver was installed
        return EXIT_OK
    for leaf in leaves:
        if _is_usage_error(leaf):
            print(f"fairpool {what}: error: {leaf}", file=sys.stderr)
            return EXIT_USAGE
    for leaf in leaves:
        if isinstance(leaf, OSError | SecretError):
            log.error(f"fairpool {what}: {_describe(leaf, listen, http)}")
            return EXIT_FAILED
    # What went wrong, in the line itself; and the traceback of the failure, not of the nurseries
    # around it (a JSON log renders an exception group's own frames, not those inside it).
    error = "; ".join(f"{type(leaf).__name__}: {leaf}" for leaf in leaves)
    log.error(f"fairpool {what} crashed", error=error, exc_info=leaves[0] if len(leaves) == 1 else exc)
    return EXIT_FAILED


def _describe(exc: BaseException, listen: Address | None, http: Address | None) -> str:
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        # The dashboard names its address (as the error's filename); else it was the protocol's.
        where = exc.filename or listen or http or "its address"
        return f"cannot listen on {where}: address already in use (is another fairpool running?)"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc)


if __name__ == "__main__":
    sys.exit(main())

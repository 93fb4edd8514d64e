"""A node's init and close hooks: site commands run before the node starts and when it exits.

``init_hook`` prepares the host (mount scratch space, load a module, check a
licence...): it runs before the node connects, and if it cannot run, exits
non-zero or outlasts ``hook_timeout``, the node does not start and says why
in one line. ``close_hook`` runs when the node exits (after its jobs ended
or were handed back, on SIGTERM, SIGINT or ``--serve N``); its failure is
logged, the exit goes on. Both run with ``/bin/sh -c`` in the node's own
environment plus ``FAIRPOOL_NODE_NAME``, ``FAIRPOOL_NODE_STATE_DIR``,
``FAIRPOOL_NODE_CPUS`` and ``FAIRPOOL_SCHEDULER`` (the configured addresses,
comma-separated; empty with ``--discover``).
"""

from __future__ import annotations

import os
import signal

import structlog
import trio

from fairpool.config import NodeConfig

log = structlog.get_logger("fairpool.node")

#: The end of a failing hook's output shown in the error line.
OUTPUT_TAIL = 300


class HookError(OSError):
    """A hook failed. An OSError: the command line reports those in one line, exit 1 (no traceback)."""


def hook_environment(config: NodeConfig) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        FAIRPOOL_NODE_NAME=config.name,
        FAIRPOOL_NODE_STATE_DIR=str(config.state_dir),
        FAIRPOOL_NODE_CPUS=str(config.cpus),
        FAIRPOOL_SCHEDULER="" if config.discover else ",".join(str(a) for a in config.schedulers),
    )
    return env


def _tail(output: bytes) -> str:
    text = " ".join(output.decode(errors="replace").split())
    return text if len(text) <= OUTPUT_TAIL else "..." + text[-OUTPUT_TAIL:]


async def run_hook(kind: str, command: str, config: NodeConfig) -> None:
    """Run one hook to its end; HookError if it cannot run, fails or takes longer than ``hook_timeout``."""
    log.info(f"running the {kind} hook", command=command)
    what = f"{kind} hook `{command}`"
    try:
        with trio.fail_after(config.hook_timeout):
            done = await trio.run_process(["/bin/sh", "-c", command], env=hook_environment(config), stdin=b"",
                                          capture_stdout=True, capture_stderr=True, check=False)
    except trio.TooSlowError:
        raise HookError(f"{what} did not finish within {config.hook_timeout:g}s (hook_timeout)") from None
    except OSError as exc:
        raise HookError(f"{what} could not be run: {exc.strerror or exc}") from None
    output = _tail(done.stderr) or _tail(done.stdout)
    if done.returncode != 0:
        code = done.returncode
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"failed with exit status {code}"
        raise HookError(f"{what} {how}" + (f": {output}" if output else ""))
    if output:
        log.debug(f"{kind} hook output", output=output)


async def run_init_hook(config: NodeConfig) -> None:
    """The init hook, if any; HookError stops the node from starting."""
    if config.init_hook:
        await run_hook("init", config.init_hook, config)


async def run_close_hook(config: NodeConfig) -> None:
    """The close hook, if any: runs even while the node is being cancelled; failures are logged."""
    if not config.close_hook:
        return
    with trio.CancelScope(shield=True):
        try:
            await run_hook("close", config.close_hook, config)
        except HookError as exc:
            log.warning("the close hook failed", reason=str(exc))

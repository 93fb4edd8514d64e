"""How each benchmarked system is stood up, measured once, and torn down.

One function per system, each taking the :class:`Settings` and a fresh
directory for this one measurement, and returning an :class:`Outcome`:

- fairpool: ``fairpool scheduler`` + ``fairpool node --cpus 2`` as
  subprocesses (the console script beside the running python), then the
  client helper bench/peers/fairpool_client.py;
- dispy: dispynode (2 CPUs) and dispyscheduler through the race-fixing
  wrapper bench/peers/dispy_daemon.py, then bench/peers/dispy_shared.py, all
  in the peers venv;
- Dask: bench/peers/dask_local.py (a LocalCluster) in the peers venv;
- pool: bench/peers/pool_local.py (ProcessPoolExecutor(2)) in fairpool's python.

Every process is started through harness.Processes, so it is gone when the
function returns, whatever happened.
"""

from __future__ import annotations

import os
import re
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness import Outcome, Processes, free_port_block, run_helper, tail, tcp_listening, wait_until

PEERS = Path(__file__).resolve().parent / "peers"
sys.path.insert(0, str(PEERS))
from measure import rss_mb  # noqa: E402  (stdlib-only module shared with the helpers)

DAEMON_START_S = 30.0
_ADDRESS = re.compile(r"^127\.0\.0\.1:(\d+)$")


@dataclass(frozen=True)
class Settings:
    """What every measurement runs: the driver's command-line options."""

    jobs: int
    latency_jobs: int
    latency_discard: int
    warmup_jobs: int
    deadline_s: float
    peers_python: Path | None


def _env() -> dict[str, str]:
    # a user's FAIRPOOL_* settings must not redirect the benchmark's clients or daemons
    return {k: v for k, v in os.environ.items() if not k.startswith("FAIRPOOL_")}


def _common(s: Settings) -> list[str]:
    return [
        "--jobs", str(s.jobs),
        "--latency-jobs", str(s.latency_jobs),
        "--latency-discard", str(s.latency_discard),
        "--warmup-jobs", str(s.warmup_jobs),
    ]  # fmt: skip


def _with_logs(outcome: Outcome, work: Path, names: list[str]) -> Outcome:
    """On a failure, add the tails of the daemons' logs to the detail."""
    if outcome.status == "ok":
        return outcome
    for name in names:
        text = tail(work / f"{name}.err", 5)
        if text:
            outcome.detail += f"\n  [{name} stderr]\n  " + text.replace("\n", "\n  ")
    return outcome


def measure_pool(s: Settings, work: Path) -> Outcome:
    with Processes(work) as procs:
        argv = [sys.executable, str(PEERS / "pool_local.py"), *_common(s)]
        return run_helper(procs, "pool", argv, cwd=work, deadline_s=s.deadline_s, env=_env())


def measure_dask(s: Settings, work: Path) -> Outcome:
    if s.peers_python is None:
        return Outcome("failed", detail="no peers venv")
    scratch = work / "dask-scratch"
    scratch.mkdir()
    with Processes(work) as procs:
        argv = [
            str(s.peers_python), str(PEERS / "dask_local.py"), *_common(s),
            "--local-directory", str(scratch),
        ]  # fmt: skip
        return run_helper(procs, "dask", argv, cwd=work, deadline_s=s.deadline_s, env=_env())


def measure_dispy(s: Settings, work: Path) -> Outcome:
    if s.peers_python is None:
        return Outcome("failed", detail="no peers venv")
    py, wrapper, env = str(s.peers_python), str(PEERS / "dispy_daemon.py"), _env()
    # dispy derives its ports from one base P: P (scheduler, from nodes),
    # P+1 (node), P+2 (scheduler, from clients); the client needs its own port
    base = free_port_block(3)
    client_port = free_port_block(1)
    while base <= client_port <= base + 2:
        client_port = free_port_block(1)
    node_secret, cluster_secret = secrets.token_hex(16), secrets.token_hex(16)
    with Processes(work) as procs:
        node = procs.start(
            "dispynode",
            [py, wrapper, "node", "-c", "2", "-i", "127.0.0.1", "-p", str(base),
             "-s", node_secret, "--dest_path_prefix", str(work / "dispynode"), "--daemon"],
            cwd=work, env=env,
        )  # fmt: skip
        up = wait_until(lambda: tcp_listening(base + 1) or node.poll() is not None, DAEMON_START_S)
        if not up or node.poll() is not None:
            return _with_logs(
                Outcome("failed", detail="dispynode did not start"), work, ["dispynode"]
            )
        sched = procs.start(
            "dispyscheduler",
            [py, wrapper, "scheduler", "-n", "127.0.0.1", "-i", "127.0.0.1", "-p", str(base),
             "--node_secret", node_secret, "--cluster_secret", cluster_secret,
             "--dest_path_prefix", str(work / "dispyscheduler"), "--daemon"],
            cwd=work, env=env,
        )  # fmt: skip
        up = wait_until(lambda: tcp_listening(base + 2) or sched.poll() is not None, DAEMON_START_S)
        if not up or sched.poll() is not None:
            outcome = Outcome("failed", detail="dispyscheduler did not start")
            return _with_logs(outcome, work, ["dispyscheduler", "dispynode"])
        argv = [
            py, str(PEERS / "dispy_shared.py"), *_common(s),
            "--dispy-port", str(base), "--client-port", str(client_port),
            "--secret", cluster_secret,
        ]  # fmt: skip
        outcome = run_helper(
            procs, "dispy-client", argv, cwd=work, deadline_s=s.deadline_s, env=env
        )
        outcome.figures["scheduler_rss_mb"] = rss_mb(sched.pid)
        outcome.figures["rss_of"] = "dispyscheduler process"
        return _with_logs(outcome, work, ["dispyscheduler", "dispynode"])


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a process has used so far (/proc/PID/stat), None if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _read_address(path: Path) -> str | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return text if _ADDRESS.match(text) else None


def measure_fairpool(
    s: Settings, work: Path, *, journal: bool = True, policy: str = "fifo"
) -> Outcome:
    """fairpool as deployed: the journal on, every acknowledgement after an fsync (group commit).

    ``policy``: the scheduler's policy (fifo, its default; fair-share prices the accounting).
    """
    exe = Path(sys.executable).parent / "fairpool"
    if not exe.exists():
        return Outcome("failed", detail=f"no fairpool console script at {exe}")
    name = "fairpool" if journal else "fairpool-nojournal"
    state = work / (name if policy == "fifo" else f"{name}-{policy}")
    state.mkdir(parents=True, exist_ok=True)
    config = state.parent / f"{state.name}.toml"
    config.write_text(f"journal = {'true' if journal else 'false'}\npolicy = \"{policy}\"\n")
    address_file, secret_file = state / "scheduler.address", state / "secret"
    env = _env()
    with Processes(work) as procs:
        sched = procs.start(
            "fairpool-scheduler",
            [str(exe), "scheduler", "--listen", "127.0.0.1:0", "--state-dir", str(state),
             "--config", str(config)],
            cwd=work, env=env,
        )  # fmt: skip

        def listening() -> bool:
            ready = _read_address(address_file) is not None and secret_file.exists()
            return ready or sched.poll() is not None

        wait_until(listening, DAEMON_START_S)
        address = _read_address(address_file)
        if address is None or not secret_file.exists() or sched.poll() is not None:
            outcome = Outcome(
                "failed",
                detail=f"scheduler wrote no 127.0.0.1 address to {address_file} "
                f"(or no {secret_file}) within {DAEMON_START_S:.0f} s",
            )
            return _with_logs(outcome, work, ["fairpool-scheduler"])
        node = procs.start(
            "fairpool-node",
            [str(exe), "node", "--scheduler", address, "--cpus", "2",
             "--secret-file", str(secret_file), "--state-dir", str(state / "node")],
            cwd=work, env=env,
        )  # fmt: skip
        argv = [
            sys.executable, str(PEERS / "fairpool_client.py"), *_common(s),
            "--scheduler", address, "--secret-file", str(secret_file),
        ]  # fmt: skip
        cpu_before = cpu_seconds(sched.pid)
        outcome = run_helper(
            procs, "fairpool-client", argv, cwd=work, deadline_s=s.deadline_s, env=env
        )
        outcome.figures["scheduler_rss_mb"] = rss_mb(sched.pid)
        # the scheduler's CPU over the client's run (warm-up, per-job, map, latency; not its start-up)
        cpu_after = cpu_seconds(sched.pid)
        if cpu_before is not None and cpu_after is not None:
            outcome.figures["scheduler_cpu_s"] = cpu_after - cpu_before
        outcome.figures["rss_of"] = "fairpool scheduler process"
        if node.poll() is not None:
            outcome.detail += f" (node exited {node.returncode})"
        return _with_logs(outcome, work, ["fairpool-scheduler", "fairpool-node"])


MEASURE: dict[str, Callable[[Settings, Path], Outcome]] = {
    "fairpool": measure_fairpool,
    "fairpool-nojournal": lambda s, work: measure_fairpool(s, work, journal=False),
    "fairpool-fairshare": lambda s, work: measure_fairpool(s, work, policy="fair-share"),
    "dispy": measure_dispy,
    "dask": measure_dask,
    "pool": measure_pool,
}
NEEDS_PEERS = frozenset({"dispy", "dask"})

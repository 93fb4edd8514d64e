"""How ``fairpool admin`` shows replies to a person: aligned tables and ``key: value`` lines.

Pure functions from a reply body (plain data, as in ``fairpool.admincli``'s
``--json`` schema) to text. Tables are in the manner of squeue / condor_q:
one header line, one row per item, columns padded to their widest cell,
numbers right-aligned. Timestamps become local clock times, durations
``M:SS`` / ``H:MM:SS`` / ``D-HH:MM:SS``, byte counts ``16G``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

Cell = Callable[[Mapping[str, Any]], Any]
Column = tuple[str, Cell]
EMPTY = "-"
RIGHT_ALIGNED = frozenset({"CPUS", "BUSY", "ASSIGNED", "DONE", "MEMORY", "GPUS", "TIME", "WEIGHT", "TIER",
                           "MAX-RUNNING", "MAX-QUEUED", "RUNNING", "QUEUED", "ENTITLED", "RECEIVES"})


def table(items: Iterable[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    headers = [header for header, _cell in columns]
    rows = [[_text(cell(item)) for _header, cell in columns] for item in items]
    widths = [max([len(headers[i]), *(len(r[i]) for r in rows)]) for i in range(len(columns))]
    right = [header in RIGHT_ALIGNED for header in headers]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)])


def key_values(pairs: Iterable[tuple[str, Any]]) -> str:
    pairs = [(k, _text(v)) for k, v in pairs]
    width = max((len(k) for k, _v in pairs), default=0) + 1
    return "\n".join(f"{k + ':':<{width}} {v}".rstrip() for k, v in pairs)


def _text(value: Any) -> str:
    if value is None or value == "":
        return EMPTY
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value) or EMPTY
    return str(value)


def clock(at: float | None) -> str:
    """A timestamp as local time: HH:MM:SS today, else with the date."""
    if not at:
        return EMPTY
    local = time.localtime(at)
    if time.strftime("%Y-%m-%d", local) == time.strftime("%Y-%m-%d"):
        return time.strftime("%H:%M:%S", local)
    return time.strftime("%Y-%m-%d %H:%M:%S", local)


def duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return EMPTY
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


def size(n: int | None) -> str:
    """Bytes as 512, 4K, 1.5G."""
    if not n:
        return EMPTY
    value = float(n)
    for unit in ("", "K", "M", "G"):
        if value < 1024:
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.0f}T" if value == int(value) else f"{value:.1f}T"


def percent(fraction: float | None) -> str:
    return EMPTY if fraction is None else f"{fraction:.1%}"


def _running_time(job: Mapping[str, Any]) -> float | None:
    started = job.get("started_at")
    if not started:
        return None
    return float(job.get("finished_at") or time.time()) - float(started)


# --- one renderer per verb --------------------------------------------------------------

STATUS_ORDER = ("policy", "nodes", "cpus", "busy", "queued", "running", "finished", "clusters", "tenants",
                "connections", "orphaned")


def status_text(body: Mapping[str, Any]) -> str:
    keys = [k for k in STATUS_ORDER if k in body] + sorted(k for k in body if k not in STATUS_ORDER)
    return key_values((k, body[k]) for k in keys)


NODE_COLUMNS: list[Column] = [
    ("NAME", lambda n: n.get("name")),
    ("STATE", lambda n: n.get("state")),
    ("CPUS", lambda n: n.get("cpus")),
    ("BUSY", lambda n: n.get("busy")),
    ("ASSIGNED", lambda n: n.get("assigned")),
    ("DONE", lambda n: n.get("done")),
    ("MEMORY", lambda n: size(n.get("memory"))),
    ("GPUS", lambda n: n.get("gpus")),
    ("JOINED", lambda n: clock(n.get("joined_at"))),
    ("HEARTBEAT", lambda n: clock(n.get("last_heartbeat"))),
]

JOB_COLUMNS: list[Column] = [
    ("UID", lambda j: j.get("uid")),
    ("TENANT", lambda j: j.get("tenant")),
    ("CLUSTER", lambda j: j.get("cluster_id")),
    ("STATUS", lambda j: j.get("status")),
    ("NODE", lambda j: j.get("node")),
    ("CPUS", lambda j: j.get("cpus")),
    ("SUBMITTED", lambda j: clock(j.get("submitted_at"))),
    ("TIME", lambda j: duration(_running_time(j))),
]

TENANT_COLUMNS: list[Column] = [
    ("NAME", lambda t: t.get("name")),
    ("WEIGHT", lambda t: t.get("weight")),
    ("TIER", lambda t: t.get("tier")),
    ("MAX-RUNNING", lambda t: t.get("max_running")),
    ("RUNNING", lambda t: t.get("running")),
    ("QUEUED", lambda t: t.get("queued")),
    ("ENTITLED", lambda t: percent(t.get("entitlement"))),
    ("RECEIVES", lambda t: percent(t.get("received"))),
    ("TOKEN", lambda t: t.get("token")),
]

POLICY_TENANT_COLUMNS: list[Column] = [
    ("TENANT", lambda t: t.get("name")),
    ("WEIGHT", lambda t: t.get("weight")),
    ("TIER", lambda t: t.get("tier")),
    ("MAX-RUNNING", lambda t: t.get("max_running")),
    ("MAX-QUEUED", lambda t: t.get("max_queued")),
    ("PARENT", lambda t: t.get("parent")),
]

_NODE_DETAIL = ("name", "state", "cpus", "busy", "assigned", "done", "memory", "gpus", "joined_at",
                "last_heartbeat", "avg_runtime")
_JOB_DETAIL = ("uid", "tenant", "cluster_id", "status", "node", "pinned_node", "cpus", "memory", "gpus",
               "priority", "timeout", "submitted_at", "started_at", "finished_at", "exit_code", "reason")
_JOB_BLOCKS = ("stdout", "stderr", "traceback")


def _detail_value(key: str, value: Any) -> Any:
    if key.endswith("_at") or key == "last_heartbeat":
        return clock(value)
    if key == "memory":
        return size(value)
    if key == "avg_runtime" and value is not None:
        return f"{value:.3g}s"
    return value


def node_text(node: Mapping[str, Any]) -> str:
    text = key_values((k, _detail_value(k, node.get(k))) for k in _NODE_DETAIL if k in node)
    jobs = node.get("jobs")
    if jobs:
        text += "\n\n" + table(jobs, JOB_COLUMNS)
    return text


def job_text(job: Mapping[str, Any]) -> str:
    keys = [k for k in _JOB_DETAIL if k in job]
    keys += [k for k in job if k not in _JOB_DETAIL and k not in _JOB_BLOCKS]
    parts = [key_values((k, _detail_value(k, job.get(k))) for k in keys)]
    for block in _JOB_BLOCKS:
        content = str(job.get(block) or "").rstrip("\n")
        if content:
            parts.append(f"{block}:\n" + "\n".join("  " + line for line in content.splitlines()))
    return "\n".join(parts)


def drain_text(node: Mapping[str, Any]) -> str:
    state, name = node.get("state"), node.get("name")
    if state == "draining":
        return (f"node {name} is draining: it takes no new jobs and finishes the {node.get('assigned', 0)} "
                "it holds, then it is drained")
    return f"node {name} is {state}"


def cancel_text(body: Mapping[str, Any]) -> str:
    lines = []
    if body.get("cancelled"):
        lines.append("cancelled: " + " ".join(body["cancelled"]))
    if body.get("already_ended"):
        lines.append("already ended: " + " ".join(body["already_ended"]))
    return "\n".join(lines) or "nothing to cancel"


def policy_text(body: Mapping[str, Any]) -> str:
    tenants = body.get("tenants") or {}
    text = key_values([("policy", body.get("policy")), ("queued", body.get("queued")),
                       ("tenants", len(tenants) if isinstance(tenants, Mapping) else tenants)])
    if isinstance(tenants, Mapping) and tenants:
        rows = [{"name": name, **settings} for name, settings in sorted(tenants.items())]
        text += "\n\n" + table(rows, POLICY_TENANT_COLUMNS)
    return text


def token_text(body: Mapping[str, Any], rotated: bool = False) -> str:
    """A new tenant token: shown this once, so say so (and what the tenant does with it)."""
    lines = [key_values([("tenant", body.get("tenant")), ("token", body.get("token"))]), "",
             "Keep this token now: it is shown only this once (the scheduler keeps just a hash of it).",
             f"The tenant connects with tenant={body.get('tenant')!r} and token=... "
             "(or FAIRPOOL_TENANT and FAIRPOOL_TOKEN); 'tenants add --rotate' replaces a lost one."]
    if rotated:
        lines.append("The old token no longer works; the connections it let in were closed.")
    return "\n".join(lines)


def why_text(body: Mapping[str, Any]) -> str:
    return str(body.get("explanation") or f"job {body.get('uid')} is {body.get('status')}")

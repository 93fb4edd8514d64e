"""Re-attaching to a cluster an earlier client opened: where from, and what the scheduler holds.

``reattach_settings`` finds the cluster's recover file in the working
directory (if any) and resolves the connection settings with it: arguments
first, then the file (the scheduler, tenant, secret file and TLS files the
dead client used; a token is never written there), then ``FAIRPOOL_*``
variables and defaults.

Before it sends ``OpenCluster``, a re-attaching connection asks the
scheduler two questions (``probe_requests``): ``cluster.stats`` -- does this
tenant have that cluster? (if not, an ``OpenCluster`` would open a new, empty
one, so the client stops with ``ClusterNotFound``) -- and ``jobs.list`` --
every job the scheduler holds for it: queued, running, or ended with its
result not yet acknowledged. The scheduler re-sends running jobs and
results after ``ClusterOpened``, but only the list tells of queued ones.
``listing`` reads its entries; a job the client knows (from the recover file)
that a whole list leaves out ends with ``MISSING_REASON``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from fairpool.clients.recover import RecoverState, read_recover_state, recover_path
from fairpool.clients.settings import ClientSettings, resolve_settings
from fairpool.messages import Request

logger = logging.getLogger("fairpool.clients")

#: Request ids of the probe (the connection reads their replies before anything else asks).
PROBE_ID = -1
LISTING_ID = -2
#: At most this many jobs listed (~200 bytes each, far below a frame); a list this long
#: may be cut short: it then ends no job, and new uids rely on the recover file.
LISTING_LIMIT = 200_000
NOT_FOUND = "no such cluster"  # the scheduler's words

MISSING_REASON = (
    "the scheduler no longer holds this job: its result was taken by another client, "
    "or dropped after the scheduler's result retention time"
)


def probe_requests(cluster_id: str) -> tuple[Request, Request]:
    return (Request(PROBE_ID, "cluster.stats", {"cluster_id": cluster_id}),
            Request(LISTING_ID, "jobs.list", {"cluster": cluster_id, "limit": LISTING_LIMIT}))


def reattach_settings(
    cluster_id: str,
    scheduler: str | None,
    tenant: str | None,
    secret_file: str | os.PathLike[str] | None,
    directory: str | os.PathLike[str] = ".",
    token: str | None = None,
    tls: object = None,
) -> tuple[ClientSettings, RecoverState | None]:
    """Settings for re-attaching to ``cluster_id``, and its recover file here (read), if there is one."""
    found = find_recover_state(cluster_id, directory)
    info = found.info if found is not None else None
    settings = resolve_settings(
        scheduler if scheduler is not None else info.scheduler if info else None,
        tenant if tenant is not None else info.tenant if info else None,
        # ("" in the file: the dead client read no secret, so neither do we unless told to)
        secret_file if secret_file is not None else (info.secret_file or None) if info else None,
        token,
        tls if tls is not None else info.tls if info else None,
    )
    return settings, found


def find_recover_state(cluster_id: str, directory: str | os.PathLike[str] = ".") -> RecoverState | None:
    path = recover_path(cluster_id, directory)
    if not path.exists():
        return None
    try:
        state = read_recover_state(path)
    except (OSError, ValueError, KeyError) as exc:
        logger.warning("cluster %s: ignoring its unreadable recover file %s: %s", cluster_id, path, exc)
        return None
    if state.info.cluster_id != cluster_id:
        logger.warning("ignoring the recover file %s: it names cluster %s", path, state.info.cluster_id)
        return None
    state.path = path.absolute()
    return state


def listing(jobs: Any) -> list[tuple[str, str, float]]:
    """Listed jobs as (uid, status, submitted_at): ``jobs.list`` views, or (uid, status, at) tuples."""
    entries: list[tuple[str, str, float]] = []
    for entry in jobs if isinstance(jobs, list) else ():
        if isinstance(entry, Mapping):
            uid, status, at = entry.get("uid"), entry.get("status", ""), entry.get("submitted_at")
        elif isinstance(entry, tuple | list) and entry:
            uid = entry[0]
            status = entry[1] if len(entry) > 1 else ""
            at = entry[2] if len(entry) > 2 else 0.0
        else:
            continue
        if isinstance(uid, str):
            entries.append((uid, str(status), float(at) if isinstance(at, int | float) else 0.0))
    return entries

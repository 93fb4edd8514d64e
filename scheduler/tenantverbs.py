"""The tenant verbs: list tenants, change their settings, give them tokens, remove them.

Admin-only requests (``queries.answer`` refuses them to a tenant's client):

* ``tenants.list`` — every tenant the scheduler knows of (policy settings,
  jobs, a token, or a history in the policy's books), its settings and share,
  and whether it has a token (never the keys);
* ``tenants.set NAME`` — change settings live (journaled as RTenant);
* ``tenants.add NAME [rotate]`` — a new token, in the reply and nowhere else:
  the state keeps only its TokenKeys, journaled as RTenantToken, and the
  reply is sent once that record is on disk. A tenant with a token gets a new
  one only with ``rotate``; the old one then stops working, and every
  connection it let in is closed;
* ``tenants.remove NAME`` — settings back to the defaults and the token revoked
  (its connections closed).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fairpool.scheduler.journalrecords import RTenant
from fairpool.scheduler.records import ConnRecord
from fairpool.scheduler.refused import Refused
from fairpool.tokens import token_keys

if TYPE_CHECKING:
    from fairpool.scheduler.state import SchedulerState

TENANT_SETTINGS = ("weight", "tier", "max_running", "max_queued", "parent")

def _tenants_list(state: SchedulerState, conn: ConnRecord, args: dict[str, Any], now: float) -> list[dict[str, Any]]:
    names = {j.tenant for j in state.jobs.values()} | set(state.dispatcher.tenants) | set(state.tokens)
    booked = getattr(state.dispatcher.policy, "booked", None)  # (a third party's policy may not say)
    if booked is not None:
        names |= set(booked())
    running = Counter(j.tenant for n in state.nodes.values() for j in n.assigned.values())
    queued = Counter(j.tenant for j in state.dispatcher.order())
    figures = getattr(state.dispatcher.policy, "tenant_figures", None)
    views = []
    for name in sorted(names):
        config = state.dispatcher.tenants.get(name)
        entitlement, received, words = figures(name) if figures else (None, None, "")
        views.append({"name": name, "weight": config.weight if config else 1.0, "tier": config.tier if config else 0,
                      "max_running": config.max_running if config else None, "running": running[name],
                      "queued": queued[name], "entitlement": entitlement, "received": received, "policy_says": words,
                      "token": name in state.tokens})  # whether it has one; never the keys
    return views


def _tenants_set(state: SchedulerState, conn: ConnRecord, args: dict[str, Any], now: float) -> dict[str, Any]:
    name = _tenant_name(args)
    state.set_tenant(_tenant_record(state, name, args))
    return next(v for v in _tenants_list(state, conn, {}, now) if v["name"] == name)


def _tenant_name(args: dict[str, Any]) -> str:
    name = str(args["name"])
    if not name:
        raise Refused("a tenant needs a name")
    return name


def _tenant_record(state: SchedulerState, name: str, args: dict[str, Any]) -> RTenant:
    """The tenant's settings with those in ``args`` changed; Refused (and nothing changed) if they are bad."""
    current = state.dispatcher.tenants.get(name)
    fields: dict[str, Any] = {"weight": current.weight if current else 1.0, "tier": current.tier if current else 0,
              "max_running": current.max_running if current else None,
              "max_queued": current.max_queued if current else None,
              "parent": current.parent if current else None}
    for key in TENANT_SETTINGS:
        if args.get(key) is not None:
            fields[key] = args[key]
    try:
        record = RTenant(name, float(fields["weight"]), int(fields["tier"]),
                         None if fields["max_running"] is None else int(fields["max_running"]),
                         None if fields["max_queued"] is None else int(fields["max_queued"]),
                         None if fields["parent"] is None else str(fields["parent"]))
    except (TypeError, ValueError) as exc:
        raise Refused(f"bad tenant settings: {exc}") from None
    if record.weight <= 0:
        raise Refused(f"weight must be > 0, got {record.weight:g}")
    for limit in (record.max_running, record.max_queued):
        if limit is not None and limit < 0:
            raise Refused("max_running and max_queued must be >= 0")
    return record


def _tenants_add(state: SchedulerState, conn: ConnRecord, args: dict[str, Any], now: float) -> dict[str, Any]:
    """A new token for the tenant (the reply is the only place it is ever shown), and any settings given."""
    name = _tenant_name(args)
    if name != name.strip() or not name.isprintable():
        raise Refused(f"bad tenant name {name!r}: no surrounding spaces or control characters")
    record = _tenant_record(state, name, args) if any(args.get(k) is not None for k in TENANT_SETTINGS) else None
    rotating = name in state.tokens
    if rotating and not args.get("rotate"):
        raise Refused(f"tenant {name!r} has a token already (--rotate replaces it; the old one then stops working)")
    token = state.make_token()
    state.set_token(name, token_keys(token), f"tenant {name!r} has a new token: connect with that one" if rotating
                    else f"tenant {name!r} was given a token: connect with it", now)
    if record is not None:
        state.set_tenant(record)
    return {"tenant": name, "token": token}


def _tenants_remove(state: SchedulerState, conn: ConnRecord, args: dict[str, Any], now: float) -> dict[str, Any]:
    """Back to the default settings, and the tenant's token revoked (its connections closed)."""
    name = str(args["name"])
    has_settings, has_token = name in state.dispatcher.tenants, name in state.tokens
    if not has_settings and not has_token:
        raise Refused(f"no such tenant {name!r} in the policy settings or among those with a token")
    if has_settings:
        state.set_tenant(RTenant(name, removed=True))
    if has_token:
        state.set_token(name, None, f"tenant {name!r} was removed: its token no longer works", now)
    return {"tenant": name, "removed": True, "token_revoked": has_token}


Handler = Callable[["SchedulerState", ConnRecord, dict[str, Any], float], Any]
TENANT_ADMIN_VERBS: dict[str, Handler] = {
    "tenants.list": _tenants_list,
    "tenants.set": _tenants_set,
    "tenants.add": _tenants_add,
    "tenants.remove": _tenants_remove,
}

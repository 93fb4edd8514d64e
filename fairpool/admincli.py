"""``fairpool admin``: the admin command line (argparse wiring, output, exit codes).

    fairpool admin [--scheduler HOST:PORT] [--secret-file FILE | --tenant NAME [--token TOKEN]]
                   [--tls-ca FILE --tls-cert FILE --tls-key FILE] [--timeout SECONDS] [--json] VERB ...

Connection flags come before the verb (``jobs --tenant`` is a filter, not a
credential); ``FAIRPOOL_SCHEDULER``, ``FAIRPOOL_SECRET_FILE``,
``FAIRPOOL_TENANT``, ``FAIRPOOL_TOKEN`` and ``FAIRPOOL_TLS_CA/CERT/KEY``
stand in for them (see ``fairpool.admin``). A tenant credential may use
``jobs`` and ``why`` only (its own jobs); any other verb exits 1 at once. ``--json`` may also follow the verb. A noun alone lists
(``nodes`` = ``nodes list``, ``policy`` = ``policy show``, ``journal`` =
``journal inspect``); ``drain``, ``undrain`` and ``cancel`` are also verbs of
their own (``nodes drain``, ``nodes undrain``, ``jobs cancel``).

``--json`` prints ONE JSON document on stdout — the scheduler's reply body:

=====================  ==================================================================
status                 {"nodes", "cpus", "busy", "queued", "running", "finished", "clusters",
                       "connections", "tenants", "orphaned": int, "policy": str}
nodes [list]           [node]; node = {"name", "state": "up"|"draining"|"drained"|"down",
                       "cpus", "busy", "assigned", "done", "memory", "gpus": int,
                       "joined_at", "last_heartbeat": float|null, "avg_runtime": float|null}
nodes show NAME        node + {"jobs": [job]}
nodes drain/undrain N  node, after the change
jobs [list]            [job]; job = {"uid", "tenant", "cluster_id", "status", "node": str,
                       "submitted_at", "started_at", "finished_at": float|null,
                       "cpus": float, "memory", "gpus", "priority": int}
jobs show UID          job + {"reason", "stdout", "stderr", "traceback": str,
                       "exit_code": int|null, "timeout": float|null, "pinned_node": str|null}
jobs cancel UID...     {"cancelled": [uid], "already_ended": [uid], "not_found": [uid]}
why UID                job + {"explanation": str}; a queued job also {"rank", "tenants",
                       "ahead", "entitlement", "received", "reason"} from the policy
tenants [list]         [{"name", "weight", "tier", "max_running", "running", "queued",
                       "entitlement", "received", "policy_says", "token": bool}]
tenants show NAME      one tenant of that list
tenants add NAME       {"tenant": NAME, "token": TOKEN}: the token is shown this once only
  [--rotate]           (--rotate: replace an existing token; the old one stops working)
tenants remove NAME    {"tenant", "removed": true, "token_revoked": bool}
policy [show]          {"policy": str, "queued": int, "tenants": {NAME: {"weight", "tier",
                       "max_running", "max_queued", "parent"}}}
policy set NAME        {"policy": str}
policy reload          {"policy": str, "tenants": [NAME]}
policy simulate        the simulator report's ``to_dict()``
journal [inspect]      {"file", "size", "intact_end", "total", "counts": {KIND: n},
                       "records": [{"offset", "length", "kind", ...key fields, payloads
                       only as *_bytes sizes}], "torn": null|{"offset", "bytes"},
                       "corrupt": null|{"offset", "error"}}
journal compact        {"bytes_before", "bytes_after": int}
=====================  ==================================================================

Exit codes: 0 done; 1 refused, not found, unreachable, wrong secret, corrupt
journal (one line on stderr, stdout empty); 2 usage error. Never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fairpool import adminformat as fmt
from fairpool.admin import (
    DEFAULT_TIMEOUT,
    ENV_TENANT,
    ENV_TOKEN,
    AdminError,
    AdminUsageError,
    Credentials,
    RequestRefused,
    call,
    parse_scheduler_address,
    resolve_credentials,
)
from fairpool.jobstatus import JobStatus

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_STATE_DIR = Path(".fairpool")
SIMULATOR = "fairpool.scheduler.simulator"

Action = Callable[["_Run"], int]


class _Run:
    """One invocation: the parsed flags, the credentials (resolved on first use), the output."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.as_json: bool = bool(getattr(args, "json", False))
        self._credentials: Credentials | None = None

    @property
    def credentials(self) -> Credentials:
        if self._credentials is None:
            a = self.args
            self._credentials = resolve_credentials(scheduler=a.scheduler, secret_file=a.secret_file,
                                                    tenant=a.tenant, token=a.token, tls_ca=a.tls_ca,
                                                    tls_cert=a.tls_cert, tls_key=a.tls_key)
        return self._credentials

    def ask(self, verb: str, args: Mapping[str, Any] | None = None) -> Any:
        credentials = self.credentials
        if not credentials.may_ask(verb):  # refused before connecting: nothing can change
            raise AdminError(f"{verb!r} needs the admin credential (the cluster secret or an admin certificate); "
                             f"as {credentials.describe()} only 'jobs' and 'why' may be used "
                             f"(unset {ENV_TENANT}/{ENV_TOKEN} to act as the admin)")
        try:
            return call(credentials, verb, args, timeout=self.args.timeout)
        except RequestRefused as exc:
            if credentials.role != "admin" and "needs the admin credential" in exc.error:
                raise AdminError(f"{exc.error} (connected as {credentials.describe()})") from None
            raise

    def show(self, body: Any, text: Callable[[Any], str]) -> int:
        print(json.dumps(body, indent=2, default=str) if self.as_json else text(body))
        return EXIT_OK


def run(args: argparse.Namespace) -> int:
    """Entry point from ``fairpool.cli``: run the verb, turn every failure into one line and a code."""
    action: Action | None = getattr(args, "action", None)
    if action is None:
        args.parser.print_help(sys.stderr)
        return EXIT_USAGE
    words = getattr(args, "words", "")
    try:
        if args.scheduler is not None:
            parse_scheduler_address(args.scheduler)  # malformed is a usage error even for offline verbs
        return action(_Run(args))
    except AdminUsageError as exc:
        print(f"fairpool admin {words}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except AdminError as exc:
        print(f"fairpool admin {words}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `fairpool admin jobs | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return EXIT_FAILED


# --- verbs ------------------------------------------------------------------------------


def _status(r: _Run) -> int:
    return r.show(r.ask("status"), fmt.status_text)


def _nodes_list(r: _Run) -> int:
    return r.show(r.ask("nodes.list"), lambda body: fmt.table(body, fmt.NODE_COLUMNS))


def _nodes_show(r: _Run) -> int:
    return r.show(r.ask("nodes.show", {"name": r.args.name}), fmt.node_text)


def _nodes_drain(r: _Run) -> int:
    return r.show(r.ask("nodes.drain", {"name": r.args.name}), fmt.drain_text)


def _nodes_undrain(r: _Run) -> int:
    return r.show(r.ask("nodes.undrain", {"name": r.args.name}), fmt.drain_text)


def _jobs_list(r: _Run) -> int:
    filters = {"tenant": getattr(r.args, "filter_tenant", None), "status": getattr(r.args, "status", None),
               "node": getattr(r.args, "node", None), "cluster": getattr(r.args, "cluster", None),
               "limit": getattr(r.args, "limit", None)}
    body = r.ask("jobs.list", {k: v for k, v in filters.items() if v is not None})
    return r.show(body, lambda jobs: fmt.table(jobs, fmt.JOB_COLUMNS))


def _jobs_show(r: _Run) -> int:
    return r.show(r.ask("jobs.show", {"uid": r.args.uid}), fmt.job_text)


def _jobs_cancel(r: _Run) -> int:
    return r.show(r.ask("jobs.cancel", {"uids": list(r.args.uids)}), fmt.cancel_text)


def _why(r: _Run) -> int:
    return r.show(r.ask("why", {"uid": r.args.uid}), fmt.why_text)


def _tenants_list(r: _Run) -> int:
    return r.show(r.ask("tenants.list"), lambda body: fmt.table(body, fmt.TENANT_COLUMNS))


def _tenants_show(r: _Run) -> int:
    for tenant in r.ask("tenants.list"):
        if tenant.get("name") == r.args.name:
            return r.show(tenant, lambda t: fmt.key_values(t.items()))
    raise AdminError(f"no such tenant {r.args.name!r} (the scheduler knows a tenant once it is in the "
                     "policy file, has submitted jobs or has a token)")


def _tenant_args(r: _Run) -> dict[str, Any]:
    settings = {key: getattr(r.args, key, None) for key in ("weight", "tier", "max_running", "max_queued")}
    return {"name": r.args.name, **{k: v for k, v in settings.items() if v is not None}}


def _ask_tenant_verb(r: _Run, verb: str, args: dict[str, Any]) -> Any:
    """A scheduler without the verb refuses it: said plainly."""
    try:
        return r.ask(verb, args)
    except RequestRefused as exc:
        if exc.error.startswith("unknown request"):
            raise AdminError(f"not supported by this scheduler yet (it answered: "
                             f"{exc.error.split(' (known:')[0]})") from None
        raise


def _tenant_change(verb: str) -> Action:
    """tenants set/remove: sent as they are."""

    def action(r: _Run) -> int:
        body = _ask_tenant_verb(r, verb, _tenant_args(r))
        return r.show(body, lambda b: fmt.key_values(b.items()) if isinstance(b, Mapping) else str(b))

    return action


def _tenants_add(r: _Run) -> int:
    """The new token is printed here and never again (the scheduler keeps only its hash)."""
    rotate = bool(getattr(r.args, "rotate", False))
    body = _ask_tenant_verb(r, "tenants.add", {**_tenant_args(r), **({"rotate": True} if rotate else {})})
    issued = {"tenant": body["tenant"], "token": body["token"]}
    return r.show(issued, lambda b: fmt.token_text(b, rotated=rotate))


def _policy_show(r: _Run) -> int:
    return r.show(r.ask("policy.show"), fmt.policy_text)


def _policy_set(r: _Run) -> int:
    return r.show(r.ask("policy.set", {"name": r.args.name}), lambda b: f"policy is now {b['policy']}")


def _policy_reload(r: _Run) -> int:
    return r.show(r.ask("policy.reload"), lambda b: f"policy file reloaded: policy {b['policy']}, "
                                                    f"tenants {', '.join(b.get('tenants') or []) or '-'}")


def _policy_simulate(r: _Run) -> int:
    for flag, path in (("--config", r.args.config), ("--workload", r.args.workload)):
        if not path.is_file():
            raise AdminUsageError(f"bad value for {flag}: no such file {str(path)!r}")
    try:
        from fairpool.scheduler.simulator import run_simulation  # type: ignore[import-not-found,unused-ignore]
    except ModuleNotFoundError as exc:
        if exc.name == SIMULATOR:
            raise AdminError(f"the policy simulator ({SIMULATOR}) is not part of this installation yet") from None
        raise AdminError(f"the policy simulator cannot be loaded: {exc}") from None
    except ImportError as exc:
        raise AdminError(f"the policy simulator cannot be loaded: {exc}") from None
    from fairpool.config import ConfigError

    try:
        report = run_simulation(r.args.config, r.args.workload)
    except ConfigError as exc:
        raise AdminUsageError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - the simulator's failure is one line, never a traceback
        raise AdminError(f"the simulation failed: {type(exc).__name__}: {exc}") from None
    return r.show(report.to_dict(), lambda _body: str(report))


def _journal_inspect(r: _Run) -> int:
    from fairpool.scheduler.journal import JOURNAL_NAME
    from fairpool.scheduler.journalinspect import JournalChanged, inspect_journal, render

    path = Path(getattr(r.args, "state_dir", None) or DEFAULT_STATE_DIR) / JOURNAL_NAME
    limit: int | None = getattr(r.args, "limit", None)
    try:
        inspection = inspect_journal(path)
    except FileNotFoundError:
        raise AdminError(f"no journal at {path} (pass --state-dir DIR: the scheduler's state dir)") from None
    except JournalChanged as exc:
        raise AdminError(str(exc)) from None
    except OSError as exc:
        raise AdminError(f"cannot read {path}: {exc.strerror or exc}") from None
    r.show(inspection.to_dict(limit), lambda _body: render(inspection, limit))
    return EXIT_FAILED if inspection.corrupt else EXIT_OK


def _journal_compact(r: _Run) -> int:
    return r.show(r.ask("journal.compact"),
                  lambda b: f"journal compacted: {b['bytes_before']} -> {b['bytes_after']} bytes")


# --- the parser -------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _status_name(text: str) -> str:
    if text.upper() not in JobStatus.__members__:
        raise argparse.ArgumentTypeError(f"unknown status {text!r} (known: {', '.join(JobStatus.__members__)})")
    return text.upper()


def _verb(group: Any, name: str, words: str, action: Action, help: str, **kwargs: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = group.add_parser(name, help=help, description=help, **kwargs)
    # SUPPRESS: a sub-command's default must not overwrite a --json given before the verb.
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON document")
    p.set_defaults(action=action, words=words, parser=p)
    return p


def _job_filters(p: argparse.ArgumentParser) -> None:
    s = argparse.SUPPRESS  # given on `jobs` or on `jobs list`: either one counts
    p.add_argument("--tenant", dest="filter_tenant", metavar="T", default=s, help="only this tenant's jobs")
    p.add_argument("--status", metavar="S", type=_status_name, default=s, help="only jobs in this status")
    p.add_argument("--node", metavar="N", default=s, help="only jobs on (or run on) this node")
    p.add_argument("--cluster", metavar="C", default=s, help="only this cluster's jobs")
    p.add_argument("--limit", metavar="N", type=_positive_int, default=s, help="at most N jobs")


def _tenant_settings(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME")
    p.add_argument("--weight", type=_positive_float, metavar="W", help="share weight")
    p.add_argument("--tier", type=int, metavar="P", help="priority tier")
    p.add_argument("--max-running", type=_positive_int, metavar="N", help="at most N jobs running")
    p.add_argument("--max-queued", type=_positive_int, metavar="N", help="at most N jobs queued")


def register(commands: Any) -> argparse.ArgumentParser:
    """Add ``admin`` to the ``fairpool`` command's sub-commands (an argparse subparsers action)."""
    admin: argparse.ArgumentParser = commands.add_parser(
        "admin", help="ask or tell a running scheduler (status, nodes, jobs, tenants, policy, journal)",
        description="Ask or tell a running fairpool scheduler. Connection flags come before the verb.")
    admin.add_argument("--scheduler", metavar="HOST:PORT",
                       help="scheduler address (env FAIRPOOL_SCHEDULER; default 127.0.0.1:51350)")
    admin.add_argument("--secret-file", metavar="FILE",
                       help="the cluster secret: the admin credential (env FAIRPOOL_SECRET_FILE; "
                            "default ./.fairpool/secret)")
    admin.add_argument("--tenant", metavar="NAME",
                       help="act as this tenant: only its jobs, with 'jobs' and 'why' (env FAIRPOOL_TENANT)")
    admin.add_argument("--token", metavar="TOKEN",
                       help="the tenant's token, from 'tenants add' (env FAIRPOOL_TOKEN); no secret file needed")
    for part, what in (("ca", "the CA certificate"), ("cert", "our certificate"), ("key", "its private key")):
        admin.add_argument(f"--tls-{part}", metavar="FILE",
                           help=f"TLS: {what} (env FAIRPOOL_TLS_{part.upper()}); all three, or none")
    admin.add_argument("--timeout", metavar="SECONDS", type=_positive_float, default=DEFAULT_TIMEOUT,
                       help=f"give up on the scheduler after this long (default {DEFAULT_TIMEOUT:g})")
    admin.add_argument("--json", action="store_true", default=False, help="print one JSON document")
    admin.set_defaults(run=run, parser=admin, action=None, words="")
    verbs = admin.add_subparsers(dest="verb", metavar="VERB")

    _verb(verbs, "status", "status", _status, "pool summary: nodes, queued, running, finished, policy")

    nodes = _verb(verbs, "nodes", "nodes", _nodes_list, "list, show, drain or undrain nodes")
    sub = nodes.add_subparsers(dest="nodes_verb", metavar="list|show|drain|undrain")
    _verb(sub, "list", "nodes list", _nodes_list, "list the nodes")
    for name, action, what in (("show", _nodes_show, "one node and its jobs"),
                               ("drain", _nodes_drain, "take no new jobs; finish the running ones"),
                               ("undrain", _nodes_undrain, "take jobs again")):
        _verb(sub, name, f"nodes {name}", action, what).add_argument("name", metavar="NAME")
    for name, action, what in (("drain", _nodes_drain, "= nodes drain NAME"),
                               ("undrain", _nodes_undrain, "= nodes undrain NAME")):
        _verb(verbs, name, name, action, what).add_argument("name", metavar="NAME")

    jobs = _verb(verbs, "jobs", "jobs", _jobs_list, "list, show or cancel jobs")
    _job_filters(jobs)
    sub = jobs.add_subparsers(dest="jobs_verb", metavar="list|show|cancel")
    _job_filters(_verb(sub, "list", "jobs list", _jobs_list, "list jobs (newest last)"))
    _verb(sub, "show", "jobs show", _jobs_show, "one job in full").add_argument("uid", metavar="UID")
    _verb(sub, "cancel", "jobs cancel", _jobs_cancel, "cancel jobs").add_argument("uids", metavar="UID", nargs="+")
    _verb(verbs, "cancel", "cancel", _jobs_cancel, "= jobs cancel UID...").add_argument("uids", metavar="UID",
                                                                                        nargs="+")
    _verb(verbs, "why", "why", _why, "why a job waits (or what became of it)").add_argument("uid", metavar="JOB")

    tenants = _verb(verbs, "tenants", "tenants", _tenants_list, "list, show, add, set or remove tenants")
    sub = tenants.add_subparsers(dest="tenants_verb", metavar="list|show|add|set|remove")
    _verb(sub, "list", "tenants list", _tenants_list, "list tenants and their shares")
    _verb(sub, "show", "tenants show", _tenants_show, "one tenant").add_argument("name", metavar="NAME")
    add = _verb(sub, "add", "tenants add", _tenants_add, "give a tenant a token (printed once); and settings")
    _tenant_settings(add)
    add.add_argument("--rotate", action="store_true", help="replace the tenant's token: the old one stops working")
    _tenant_settings(_verb(sub, "set", "tenants set", _tenant_change("tenants.set"), "change a tenant's settings"))
    _verb(sub, "remove", "tenants remove", _tenant_change("tenants.remove"),
          "remove a tenant").add_argument("name", metavar="NAME")

    policy = _verb(verbs, "policy", "policy", _policy_show, "show, set, reload or simulate the policy")
    sub = policy.add_subparsers(dest="policy_verb", metavar="show|set|reload|simulate")
    _verb(sub, "show", "policy show", _policy_show, "the policy and the tenants' settings")
    _verb(sub, "set", "policy set", _policy_set, "switch the policy live (journaled)").add_argument("name",
                                                                                                   metavar="NAME")
    _verb(sub, "reload", "policy reload", _policy_reload, "read the scheduler's policy file again")
    p = _verb(sub, "simulate", "policy simulate", _policy_simulate, "run the offline simulator (no scheduler needed)")
    p.add_argument("--config", metavar="FILE", type=Path, required=True, help="policy TOML file")
    p.add_argument("--workload", metavar="FILE", type=Path, required=True, help="workload file")

    journal = _verb(verbs, "journal", "journal inspect", _journal_inspect, "inspect (offline) or compact the journal")
    _inspect_flags(journal)
    sub = journal.add_subparsers(dest="journal_verb", metavar="inspect|compact")
    _inspect_flags(_verb(sub, "inspect", "journal inspect", _journal_inspect,
                         "read STATE_DIR/journal.log offline: records up to a torn tail or corruption"))
    _verb(sub, "compact", "journal compact", _journal_compact, "compact the running scheduler's journal now")
    return admin


def _inspect_flags(p: argparse.ArgumentParser) -> None:
    s = argparse.SUPPRESS
    p.add_argument("--state-dir", metavar="DIR", default=s, help="the scheduler's state dir (default ./.fairpool)")
    p.add_argument("--limit", metavar="N", type=_positive_int, default=s,
                   help="show only the last N records (those nearest the end, or the corruption)")

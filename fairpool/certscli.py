"""``fairpool certs init|issue``: the command line over ``fairpool.certs``.

Owns the ``certs`` sub-commands' flags and what they print: the files
written and the ``tls = {...}`` snippet to paste into a daemon's config (or
the ``tls=`` argument for a client). Exit codes: 0 written, 1 refused (a file
exists, no CA), 2 bad arguments; errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fairpool.certs import (
    CA_DAYS,
    CERT_DAYS,
    DEFAULT_DIR,
    DEFAULT_HOSTS,
    CertsError,
    CertsUsageError,
    Issued,
    init_ca,
    issue,
)
from fairpool.tls import CERT_ROLES

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2


def register(commands: Any) -> argparse.ArgumentParser:
    """Add ``certs`` to the ``fairpool`` command's sub-commands (an argparse subparsers action)."""
    certs: argparse.ArgumentParser = commands.add_parser(
        "certs", help="make a private CA and issue TLS certificates (scheduler, node, client, admin)",
        description="A private certificate authority for mutual TLS between fairpool's scheduler, "
                    "nodes, clients and admins.")
    certs.set_defaults(run=_no_verb, parser=certs)
    verbs = certs.add_subparsers(dest="certs_verb", metavar="init|issue")

    p = verbs.add_parser("init", help="make the CA (DIR/ca.crt, DIR/ca.key)",
                         description="Make a private CA. Its key (mode 0600) signs every certificate: keep it "
                                     "on one trusted host.")
    _dir_flag(p)
    p.add_argument("--days", metavar="N", type=int, default=CA_DAYS,
                   help=f"validity in days (default: {CA_DAYS})")
    p.add_argument("--force", action="store_true", help="replace an existing CA (every certificate it issued "
                                                        "stops working)")
    p.set_defaults(run=_init, parser=p)

    p = verbs.add_parser("issue", help="issue a certificate and key for ROLE NAME",
                         description="Issue a certificate (DIR/ROLE-NAME.crt) and its key (DIR/ROLE-NAME.key, "
                                     "mode 0600), signed by the CA in DIR. ROLE is "
                                     f"{', '.join(CERT_ROLES)}; a client certificate's NAME is its tenant.")
    p.add_argument("role", metavar="ROLE", help=" | ".join(CERT_ROLES))
    p.add_argument("name", metavar="NAME", help="the holder's name (a client's: its tenant)")
    _dir_flag(p)
    p.add_argument("--host", metavar="H", action="append", dest="hosts", default=[],
                   help="scheduler only, repeatable: a host name or IP address clients connect to "
                        f"(default: {', '.join(DEFAULT_HOSTS)})")
    p.add_argument("--days", metavar="N", type=int, default=CERT_DAYS,
                   help=f"validity in days (default: {CERT_DAYS})")
    p.add_argument("--force", action="store_true", help="replace an existing certificate and key of ROLE NAME")
    p.set_defaults(run=_issue, parser=p)
    return certs


def _dir_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", metavar="DIR", type=Path, default=DEFAULT_DIR,
                   help=f"where the CA and certificates are (default: ./{DEFAULT_DIR})")


def _no_verb(args: argparse.Namespace) -> int:
    args.parser.print_help(sys.stderr)
    return EXIT_USAGE


def _init(args: argparse.Namespace) -> int:
    try:
        ca = init_ca(args.dir, days=args.days, force=args.force)
    except CertsError as exc:
        return _fail("init", exc)
    print(f"made the CA {ca.name!r}, valid until {ca.not_after:%Y-%m-%d}:")
    print(f"  certificate  {ca.cert.absolute()}  (give it to every scheduler, node, client and admin)")
    print(f"  key          {ca.key.absolute()}  (mode 0600: keep it private, only `certs issue` needs it)")
    print("Next: fairpool certs issue scheduler NAME [--host H ...]; fairpool certs issue node NAME; "
          "fairpool certs issue client TENANT" + ("" if args.dir == DEFAULT_DIR else f"  (with --dir {args.dir})"))
    return EXIT_OK


def _issue(args: argparse.Namespace) -> int:
    try:
        issued = issue(args.role, args.name, directory=args.dir, hosts=args.hosts, days=args.days, force=args.force)
    except CertsError as exc:
        return _fail("issue", exc)
    print(snippet(issued))
    return EXIT_OK


def snippet(issued: Issued) -> str:
    """What ``issue`` prints: the files, and how to use them."""
    files = issued.files
    ca, cert, key = (str(p.absolute()) for p in (files.ca, files.cert, files.key))
    lines = [
        f"issued {'an' if issued.role == 'admin' else 'a'} {issued.role} certificate for {issued.name!r}, "
        f"valid until {issued.not_after:%Y-%m-%d}:",
        f"  certificate  {cert}",
        f"  key          {key}  (mode 0600)",
        f"  CA           {ca}",
    ]
    if issued.hosts:
        lines.append(f"  valid for    {', '.join(issued.hosts)}")
    toml = f"tls = {{ ca = {json.dumps(ca)}, cert = {json.dumps(cert)}, key = {json.dumps(key)} }}"
    if issued.role in ("scheduler", "node"):
        lines += [f"In {issued.role}.toml:", f"  {toml}"]
    elif issued.role == "client":
        python = json.dumps({"ca": ca, "cert": cert, "key": key})
        lines += [f"It proves tenant {issued.name!r}. From Python:",
                  f"  SharedJobCluster(compute, scheduler=..., tls={python})"]
    else:
        lines += ["It is an admin credential (for `fairpool admin`):", f"  {toml}"]
    return "\n".join(lines)


def _fail(verb: str, exc: CertsError) -> int:
    print(f"fairpool certs {verb}: error: {exc}", file=sys.stderr)
    return EXIT_USAGE if isinstance(exc, CertsUsageError) else EXIT_REFUSED

"""A private certificate authority for mutual TLS: making the CA and issuing role certificates.

Owns what ``fairpool certs init`` and ``fairpool certs issue`` write, as an
API (tests issue expired certificates with it), and checking certificate
files before a daemon or client uses them:

    DIR/ca.crt, DIR/ca.key                 the CA (the key is the pool's root of trust)
    DIR/ROLE-NAME.crt, DIR/ROLE-NAME.key   one party's certificate and key

Keys are ECDSA P-256, written mode 0600; nothing is overwritten unless asked
(``force``). How a certificate carries its role and name is fixed in
``fairpool.tls`` (a ``fairpool:role:ROLE`` URI and the common name).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fairpool.handshake import CertIdentity
from fairpool.tls import (
    CERT_ROLES,
    TlsError,
    TlsFiles,
    client_context,
    identity_from_fields,
    role_uri,
    server_context,
)

DEFAULT_DIR = Path(".fairpool") / "certs"
CA_CERT, CA_KEY = "ca.crt", "ca.key"
CA_DAYS = 3650
CERT_DAYS = 365
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_HOST = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_CLOCK_SKEW = dt.timedelta(minutes=5)  # a certificate issued now is valid on a host whose clock is a bit behind


class CertsError(Exception):
    """Refused: a file exists, the CA is missing... ``str()`` is one readable line."""


class CertsUsageError(CertsError):
    """A bad argument: unknown role, bad name, bad host, bad validity."""


@dataclass(frozen=True)
class Authority:
    """A CA as ``init_ca`` made it."""

    cert: Path
    key: Path
    name: str
    not_after: dt.datetime


@dataclass(frozen=True)
class Issued:
    """What was written: the files, and who the certificate says its holder is."""

    files: TlsFiles
    role: str
    name: str
    not_after: dt.datetime
    hosts: tuple[str, ...] = ()


def ca_paths(directory: Path) -> tuple[Path, Path]:
    """The CA certificate and key in ``directory``."""
    return directory / CA_CERT, directory / CA_KEY


def cert_paths(directory: Path, role: str, name: str) -> tuple[Path, Path]:
    """Where ``issue`` writes ROLE NAME's certificate and key."""
    return directory / f"{role}-{name}.crt", directory / f"{role}-{name}.key"


def init_ca(directory: Path = DEFAULT_DIR, *, days: int = CA_DAYS, force: bool = False,
            now: dt.datetime | None = None) -> Authority:
    """Make a private CA in ``directory``; CertsError if one is there (unless ``force``)."""
    _check_days(days)
    cert_path, key_path = ca_paths(directory)
    if not force:
        _refuse_existing(cert_path, key_path, "a CA")
    now = now or dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    # A random suffix tells CAs apart in error messages and in `openssl x509 -text`.
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fairpool"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"fairpool CA {secrets.token_hex(4)}"),
    ])
    not_after = now + dt.timedelta(days=days)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    _make_dir(directory)
    _write(key_path, _key_pem(key), 0o600, force)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644, force)
    return Authority(cert_path, key_path, subject_cn(cert), not_after)


def issue(role: str, name: str, *, directory: Path = DEFAULT_DIR, hosts: Sequence[str] = (),
          days: int = CERT_DAYS, not_before: dt.datetime | None = None, force: bool = False) -> Issued:
    """Issue ROLE NAME's certificate and key, signed by the CA in ``directory``.

    ``hosts`` (scheduler only; default localhost, 127.0.0.1, ::1): the host
    names and IP addresses clients reach it by. The certificate is valid from
    ``not_before`` (default: now) for ``days`` days: a past ``not_before``
    makes an expired certificate (for tests).
    """
    if role not in CERT_ROLES:
        raise CertsUsageError(f"unknown role {role!r} (expected one of {', '.join(CERT_ROLES)})")
    if not _NAME.match(name):
        raise CertsUsageError(f"bad name {name!r}: 1-64 letters, digits, '.', '_', '@' or '-', "
                              "not starting with a punctuation mark")
    if hosts and role != "scheduler":
        raise CertsUsageError("--host is for scheduler certificates only (clients check the scheduler's host name)")
    _check_days(days)
    host_list = tuple(dict.fromkeys(hosts or DEFAULT_HOSTS)) if role == "scheduler" else ()
    alt_names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(role_uri(role))]
    alt_names += [_host_name(host) for host in host_list]
    cert_path, key_path = cert_paths(directory, role, name)
    if not force:
        _refuse_existing(cert_path, key_path, f"a {role} certificate for {name!r}")
    ca_cert, ca_key = load_ca(directory)
    start = not_before or dt.datetime.now(dt.UTC) - _CLOCK_SKEW
    # Not beyond the CA's own validity: past it nothing verifies anyway.
    not_after = min(start + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if role == "scheduler" else ExtendedKeyUsageOID.CLIENT_AUTH
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fairpool"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(key_path, _key_pem(key), 0o600, force)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644, force)
    return Issued(TlsFiles(ca_paths(directory)[0], cert_path, key_path), role, name, not_after, host_list)


def load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA certificate and key in ``directory``; CertsError if missing or unreadable."""
    cert_path, key_path = ca_paths(directory)
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise CertsError(f"no CA in {directory}: {exc.filename} is missing "
                         f"(run `fairpool certs init --dir {directory}` first)") from None
    except OSError as exc:
        raise CertsError(f"cannot read the CA in {directory}: {exc.strerror or exc}") from None
    except (ValueError, TypeError) as exc:
        raise CertsError(f"the CA in {directory} is not usable: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise CertsError(f"{key_path} is not the key of {cert_path}")
    return cert, key


def read_certificate(path: Path) -> x509.Certificate:
    """The first certificate in a PEM file; TlsError if there is none."""
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        raise TlsError(f"TLS certificate file {path} does not exist") from None
    except OSError as exc:
        raise TlsError(f"cannot read TLS certificate file {path}: {exc.strerror or exc}") from None
    except ValueError:
        raise TlsError(f"{path} holds no PEM certificate") from None


def certificate_identity(path: Path) -> CertIdentity:
    """The role and name a certificate file says its holder has (fairpool.tls's encoding)."""
    cert = read_certificate(path)
    try:
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = alt.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    try:
        return identity_from_fields(uris, names)
    except TlsError as exc:
        raise TlsError(f"{path}: {exc}") from None


def check_files(files: TlsFiles, role: str, *, now: dt.datetime | None = None) -> CertIdentity:
    """Check before use that ``files`` work for a party of ``role``; TlsError says what is wrong.

    The files load (and the key matches the certificate), the certificate is
    signed by the CA in ``files.ca``, is valid now and has the role ``role``.
    """
    (server_context if role == "scheduler" else client_context)(files)
    identity = certificate_identity(files.cert)
    if identity.role != role:
        raise TlsError(f"{files.cert} is a {identity.role} certificate; a {role} needs a {role} certificate "
                       f"(`fairpool certs issue {role} NAME`)")
    cert, ca = read_certificate(files.cert), read_certificate(files.ca)
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise TlsError(f"{files.cert} is not signed by the CA in {files.ca}") from None
    now = now or dt.datetime.now(dt.UTC)
    if now > cert.not_valid_after_utc:
        raise TlsError(f"{files.cert} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC "
                       f"(issue a new one with `fairpool certs issue {role} {identity.name} --force`)")
    if now < cert.not_valid_before_utc:
        raise TlsError(f"{files.cert} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    return identity


def subject_cn(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def _host_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not _HOST.match(host):
        raise CertsUsageError(f"bad host {host!r}: expected a host name or an IP address")
    return x509.DNSName(host.lower())


def _check_days(days: int) -> None:
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise CertsUsageError(f"bad validity {days!r}: expected a number of days >= 1")


def _refuse_existing(cert_path: Path, key_path: Path, what: str) -> None:
    existing = [str(p) for p in (cert_path, key_path) if p.exists()]
    if existing:
        raise CertsError(f"{what} exists already ({', '.join(existing)}): pass --force to replace it")


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _make_dir(directory: Path) -> None:
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)  # it holds the CA key
    except OSError as exc:
        raise CertsError(f"cannot create {directory}: {exc.strerror or exc}") from None


def _write(path: Path, data: bytes, mode: int, force: bool) -> None:
    """Write through a temporary file with its final mode; link it in (no clobbering) or replace."""
    _make_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(fd, mode)  # exactly this mode, whatever the umask
            f.write(data)
            f.flush()
            os.fsync(fd)
        if force:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if another run wrote it meanwhile
    except FileExistsError:
        raise CertsError(f"{path} exists already: pass --force to replace it") from None
    except OSError as exc:
        raise CertsError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)

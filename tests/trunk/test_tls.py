"""Mutual TLS (fairpool.tls): both ends over real loopback sockets, certificates from fairpool.certs."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing
from conftest import async_wait_for
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fairpool import certs
from fairpool.address import Address
from fairpool.clients.errors import ClientConfigError
from fairpool.clients.settings import resolve_settings
from fairpool.handshake import AuthError, CertIdentity, Peer
from fairpool.tls import (
    TlsError,
    TlsFiles,
    client_context,
    peer_identity,
    server_context,
    tls_files,
    wrap_client,
    wrap_server,
)
from fairpool.wire import ConnectionClosed, MessageStream, accept_handshake, open_connection

SECRET = b"the cluster secret"
TIMEOUT = 10.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TlsFiles]:
    """One CA with a certificate per role, plus a foreign CA and odd certificates."""
    ours, other = tmp_path_factory.mktemp("ca"), tmp_path_factory.mktemp("other-ca")
    certs.init_ca(ours)
    certs.init_ca(other)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    files = {
        "scheduler": certs.issue("scheduler", "pool", directory=ours).files,
        "client": certs.issue("client", "alice", directory=ours).files,
        "node": certs.issue("node", "n1", directory=ours).files,
        "admin": certs.issue("admin", "root", directory=ours).files,
        "expired": certs.issue("client", "old", directory=ours, not_before=past, days=1).files,
        "far-host": certs.issue("scheduler", "far", directory=ours, hosts=["pool.example.org"]).files,
    }
    foreign = certs.issue("client", "alice", directory=other).files
    files["foreign"] = TlsFiles(files["client"].ca, foreign.cert, foreign.key)
    foreign_scheduler = certs.issue("scheduler", "pool", directory=other).files
    files["foreign-scheduler"] = TlsFiles(files["client"].ca, foreign_scheduler.cert, foreign_scheduler.key)
    return files


def forge(directory: Path, label: str, ca: TlsFiles, *, uris: Sequence[str], name: str = "mallory",
          usage: x509.ObjectIdentifier = ExtendedKeyUsageOID.CLIENT_AUTH, signer: TlsFiles | None = None,
          chain: bool = False) -> TlsFiles:
    """A certificate ``fairpool certs`` would not issue: signed by ``signer`` (default: the CA)."""
    signer = signer or TlsFiles(ca.ca, ca.ca, ca.ca.with_name("ca.key"))
    issuer = x509.load_pem_x509_certificate(signer.cert.read_bytes())
    issuer_key = serialization.load_pem_private_key(signer.key.read_bytes(), password=None)
    assert isinstance(issuer_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )
    alt: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri) for uri in uris]
    alt += [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    pem = cert.public_bytes(serialization.Encoding.PEM)
    if chain:
        pem += issuer.public_bytes(serialization.Encoding.PEM)
    cert_path, key_path = directory / f"{label}.crt", directory / f"{label}.key"
    cert_path.write_bytes(pem)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return TlsFiles(ca.ca, cert_path, key_path)


class Server:
    """A TLS fairpool endpoint on loopback: what happened to each connection lands in ``outcomes``."""

    def __init__(self, files: TlsFiles, hello_wait: float) -> None:
        self.files = files
        self.hello_wait = hello_wait
        self.outcomes: list[object] = []  # Peer, or the reason (str) it was refused
        self.port = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        try:
            tls_stream, identity = await wrap_server(stream, self.files, timeout=TIMEOUT, hello_wait=self.hello_wait)
        except TlsError as exc:
            self.outcomes.append(str(exc))
            return
        messages = MessageStream(tls_stream)
        try:
            self.outcomes.append(await accept_handshake(messages, SECRET, certificate=identity, timeout=TIMEOUT))
        except (AuthError, ConnectionClosed) as exc:
            self.outcomes.append(str(exc))
        finally:
            await messages.aclose()

    async def outcome(self) -> object:
        await async_wait_for(lambda: self.outcomes, timeout=TIMEOUT)
        return self.outcomes.pop(0)


@asynccontextmanager
async def serving(files: TlsFiles, hello_wait: float = TIMEOUT) -> AsyncIterator[Server]:
    server = Server(files, hello_wait)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, host="127.0.0.1"), server.handle, 0)
        server.port = listeners[0].socket.getsockname()[1]
        yield server
        nursery.cancel_scope.cancel()


async def connect(port: int, files: TlsFiles | None, role: str = "client", auth: str = "tls",
                  host: str = "127.0.0.1") -> MessageStream:
    return await open_connection(Address(host, port), SECRET if auth == "secret" else b"", role=role,
                                 auth=auth, tls=files, timeout=TIMEOUT)


# --- accepted ------------------------------------------------------------------------------------


async def test_a_client_certificate_proves_its_tenant(pki: dict[str, TlsFiles]) -> None:
    async with serving(pki["scheduler"]) as server:
        stream = await connect(server.port, pki["client"])
        await stream.aclose()
        assert await server.outcome() == Peer("client", "alice", "alice", "tls")


async def test_node_and_admin_certificates_prove_their_roles(pki: dict[str, TlsFiles]) -> None:
    async with serving(pki["scheduler"]) as server:
        for role, name in (("node", "n1"), ("admin", "root")):
            await (await connect(server.port, pki[role], role=role)).aclose()
            peer = await server.outcome()
            assert isinstance(peer, Peer) and (peer.role, peer.name, peer.auth) == (role, name, "tls")


async def test_the_secret_still_works_inside_tls(pki: dict[str, TlsFiles]) -> None:
    async with serving(pki["scheduler"]) as server:
        await (await connect(server.port, pki["node"], role="admin", auth="secret")).aclose()
        peer = await server.outcome()
        assert isinstance(peer, Peer) and (peer.role, peer.auth) == ("admin", "secret")


async def test_messages_flow_both_ways_over_tls_1_3(pki: dict[str, TlsFiles]) -> None:
    async with trio.open_nursery() as nursery:
        identity: list[CertIdentity] = []

        async def echo(stream: trio.SocketStream) -> None:
            tls_stream, who = await wrap_server(stream, pki["scheduler"])
            identity.append(who)
            assert tls_stream.version() == "TLSv1.3"
            data = await tls_stream.receive_some(1 << 20)
            await tls_stream.send_all(data[::-1])
            await tls_stream.aclose()

        listeners = await nursery.start(partial(trio.serve_tcp, host="127.0.0.1"), echo, 0)
        tcp = await trio.open_tcp_stream("127.0.0.1", listeners[0].socket.getsockname()[1])
        client = await wrap_client(tcp, pki["node"], "127.0.0.1")
        await client.send_all(b"hello")
        assert await client.receive_some(100) == b"olleh"
        await client.aclose()
        assert identity == [CertIdentity("node", "n1")]
        nursery.cancel_scope.cancel()


async def test_the_scheduler_is_reached_by_host_name_too(pki: dict[str, TlsFiles]) -> None:
    async with serving(pki["scheduler"]) as server:
        await (await connect(server.port, pki["client"], host="localhost")).aclose()
        assert isinstance(await server.outcome(), Peer)


# --- refused by the scheduler ------------------------------------------------------------------


async def test_a_certificate_from_a_foreign_ca_is_refused_with_the_reason_on_both_ends(
        pki: dict[str, TlsFiles]) -> None:
    async with serving(pki["scheduler"]) as server:
        with pytest.raises(TlsError, match="the scheduler refused this certificate: it is not signed by"):
            await connect(server.port, pki["foreign"])
        assert "is not signed by this scheduler's CA" in str(await server.outcome())


async def test_an_expired_certificate_is_refused_with_the_reason_on_both_ends(pki: dict[str, TlsFiles]) -> None:
    async with serving(pki["scheduler"]) as server:
        with pytest.raises(TlsError, match="refused this certificate: it has expired"):
            await connect(server.port, pki["expired"])
        assert await server.outcome() == "the peer's certificate has expired"


async def test_a_certificate_of_another_role_is_refused_by_the_handshake(pki: dict[str, TlsFiles]) -> None:
    async with serving(pki["scheduler"]) as server:
        with pytest.raises(AuthError, match="the certificate is for role 'node', not 'admin'"):
            await connect(server.port, pki["node"], role="admin")
        assert await server.outcome() == "the certificate is for role 'node', not 'admin'"


async def test_a_client_certificate_cannot_claim_another_tenant(pki: dict[str, TlsFiles]) -> None:
    async with serving(pki["scheduler"]) as server:
        with pytest.raises(AuthError, match="for tenant 'alice', not 'bob'"):
            await open_connection(Address("127.0.0.1", server.port), b"", role="client", tenant="bob",
                                  auth="tls", tls=pki["client"], timeout=TIMEOUT)


async def test_a_scheduler_certificate_cannot_connect_as_a_client(pki: dict[str, TlsFiles]) -> None:
    async with serving(pki["scheduler"]) as server:
        with pytest.raises(TlsError, match="wrong role"):
            await connect(server.port, pki["scheduler"])
        assert "is for another role" in str(await server.outcome())


async def test_a_certificate_without_a_role_is_refused(pki: dict[str, TlsFiles], tmp_path: Path) -> None:
    roleless = forge(tmp_path, "roleless", pki["client"], uris=[])
    async with serving(pki["scheduler"]) as server:
        with pytest.raises((TlsError, ConnectionClosed)):
            await connect(server.port, roleless)
        assert "carries no single fairpool role (found: none)" in str(await server.outcome())


async def test_a_certificate_with_two_roles_is_refused(pki: dict[str, TlsFiles], tmp_path: Path) -> None:
    both = forge(tmp_path, "both", pki["client"], uris=["fairpool:role:client", "fairpool:role:admin"])
    async with serving(pki["scheduler"]) as server:
        with pytest.raises((TlsError, ConnectionClosed)):
            await connect(server.port, both)
        assert "found: client, admin" in str(await server.outcome())


async def test_a_holder_cannot_sign_itself_a_certificate_of_another_role(
        pki: dict[str, TlsFiles], tmp_path: Path) -> None:
    # The client's key signs a "node" certificate and presents the chain up to our CA.
    forged = forge(tmp_path, "forged", pki["client"], uris=["fairpool:role:node"], signer=pki["client"],
                   chain=True)
    async with serving(pki["scheduler"]) as server:
        with pytest.raises(TlsError, match="refused this certificate"):
            await connect(server.port, forged, role="node")
        assert "is not signed by this scheduler's CA" in str(await server.outcome())


async def test_a_peer_without_a_certificate_is_refused(pki: dict[str, TlsFiles]) -> None:
    context = ssl.create_default_context(cafile=str(pki["client"].ca))
    async with serving(pki["scheduler"]) as server:
        tcp = await trio.open_tcp_stream("127.0.0.1", server.port)
        tls_stream = trio.SSLStream(tcp, context, server_hostname="127.0.0.1")
        await tls_stream.do_handshake()
        with pytest.raises(trio.BrokenResourceError):
            await tls_stream.receive_some(10)
        await trio.aclose_forcefully(tls_stream)
        assert "presented no certificate" in str(await server.outcome())


async def test_a_plain_client_is_told_that_tls_is_required(pki: dict[str, TlsFiles]) -> None:
    async with serving(pki["scheduler"], hello_wait=0.3) as server:
        with pytest.raises(AuthError, match="refused by server: this scheduler requires TLS"):
            await connect(server.port, None, auth="secret")
        assert "not a TLS connection: the peer sent nothing" in str(await server.outcome())


async def test_a_peer_speaking_something_else_is_refused_at_once(pki: dict[str, TlsFiles]) -> None:
    async with serving(pki["scheduler"]) as server:
        tcp = await trio.open_tcp_stream("127.0.0.1", server.port)
        await tcp.send_all(b"GET / HTTP/1.0\r\n\r\n")
        assert "did not open with a TLS hello" in str(await server.outcome())
        await tcp.aclose()


async def test_a_silent_tls_handshake_times_out(pki: dict[str, TlsFiles]) -> None:
    left, _right = trio.testing.memory_stream_pair()
    with pytest.raises(TlsError, match="not completed within 0.2s"):
        await wrap_server(left, pki["scheduler"], timeout=0.2)


# --- refused by the client -----------------------------------------------------------------------


async def test_a_scheduler_from_a_foreign_ca_is_refused(pki: dict[str, TlsFiles]) -> None:
    async with serving(pki["foreign-scheduler"]) as server:
        with pytest.raises(TlsError, match=r"the scheduler's certificate \(at 127.0.0.1\) is not signed by our CA"):
            await connect(server.port, pki["client"])
        assert "refused the scheduler's certificate: it is not signed by the peer's CA" in str(await server.outcome())


async def test_a_scheduler_certificate_for_other_hosts_is_refused(pki: dict[str, TlsFiles]) -> None:
    async with serving(pki["far-host"]) as server:
        with pytest.raises(TlsError, match="not valid for the host name '127.0.0.1'.*--host 127.0.0.1"):
            await connect(server.port, pki["client"])


async def test_a_server_with_a_node_certificate_is_not_a_scheduler(pki: dict[str, TlsFiles]) -> None:
    async with serving(pki["node"]) as server:
        with pytest.raises(TlsError, match="it is not a scheduler certificate"):
            await connect(server.port, pki["client"])


async def test_the_role_uri_decides_even_when_the_key_usage_would_pass(
        pki: dict[str, TlsFiles], tmp_path: Path) -> None:
    impostor = forge(tmp_path, "impostor", pki["client"], uris=["fairpool:role:node"],
                     usage=ExtendedKeyUsageOID.SERVER_AUTH)
    async with serving(impostor) as server:
        with pytest.raises(TlsError, match="has a node certificate, not a scheduler's"):
            await connect(server.port, pki["client"])


async def test_a_plain_server_is_reported_as_not_speaking_tls(pki: dict[str, TlsFiles]) -> None:
    async def plain(stream: trio.SocketStream) -> None:
        messages = MessageStream(stream)
        with pytest.raises((AuthError, ConnectionClosed, Exception)):
            await accept_handshake(messages, SECRET, timeout=TIMEOUT)
        await messages.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, host="127.0.0.1"), plain, 0)
        with pytest.raises(TlsError, match="does not speak TLS"):
            await connect(listeners[0].socket.getsockname()[1], pki["client"])
        nursery.cancel_scope.cancel()


# --- files and contexts --------------------------------------------------------------------------


def test_a_missing_file_is_named(pki: dict[str, TlsFiles], tmp_path: Path) -> None:
    files = TlsFiles(pki["client"].ca, tmp_path / "nope.crt", pki["client"].key)
    with pytest.raises(TlsError, match=r"TLS certificate file .*nope.crt does not exist"):
        client_context(files)


def test_a_key_of_another_certificate_is_refused(pki: dict[str, TlsFiles]) -> None:
    files = TlsFiles(pki["client"].ca, pki["client"].cert, pki["node"].key)
    with pytest.raises(TlsError, match="the key does not belong to the certificate"):
        client_context(files)


def test_an_encrypted_key_is_refused_without_prompting(pki: dict[str, TlsFiles], tmp_path: Path) -> None:
    key = serialization.load_pem_private_key(pki["client"].key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(b"passphrase")))
    with pytest.raises(TlsError, match="encrypted.key: the key is encrypted"):
        client_context(TlsFiles(pki["client"].ca, pki["client"].cert, encrypted))


def test_a_file_that_is_not_pem_is_refused(pki: dict[str, TlsFiles], tmp_path: Path) -> None:
    junk = tmp_path / "junk.crt"
    junk.write_text("not a certificate\n")
    with pytest.raises(TlsError, match="cannot use the CA certificate"):
        server_context(TlsFiles(junk, pki["scheduler"].cert, pki["scheduler"].key))


def test_contexts_are_cached_until_a_file_changes(pki: dict[str, TlsFiles], tmp_path: Path) -> None:
    files = TlsFiles(*(tmp_path / p.name for p in (pki["node"].ca, pki["node"].cert, pki["node"].key)))
    for source, copy in zip((pki["node"].ca, pki["node"].cert, pki["node"].key), (files.ca, files.cert, files.key),
                            strict=True):
        copy.write_bytes(source.read_bytes())
    first = client_context(files)
    assert client_context(files) is first
    assert server_context(files) is not first
    stat = files.cert.stat()
    os.utime(files.cert, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # a renewed certificate
    assert client_context(files) is not first


def test_tls_files_come_from_a_mapping_or_are_refused() -> None:
    assert tls_files({"ca": "a", "cert": "b", "key": "c"}) == TlsFiles(Path("a"), Path("b"), Path("c"))
    with pytest.raises(ValueError, match="exactly the keys"):
        tls_files({"ca": "a", "cert": "b"})


def test_peer_identity_needs_a_certificate() -> None:
    with pytest.raises(TlsError, match="presented no certificate"):
        peer_identity({})
    cert = {"subject": ((("commonName", "n1"),),), "subjectAltName": (("URI", "fairpool:role:node"),)}
    assert peer_identity(cert) == CertIdentity("node", "n1")
    with pytest.raises(TlsError, match="found: wizard"):
        peer_identity({**cert, "subjectAltName": (("URI", "fairpool:role:wizard"),)})


def test_check_files_says_what_is_wrong(pki: dict[str, TlsFiles]) -> None:
    assert certs.check_files(pki["node"], "node") == CertIdentity("node", "n1")
    with pytest.raises(TlsError, match="is a client certificate; a node needs a node certificate"):
        certs.check_files(pki["client"], "node")
    with pytest.raises(TlsError, match="expired on"):
        certs.check_files(pki["expired"], "client")
    with pytest.raises(TlsError, match="is not signed by the CA in"):
        certs.check_files(pki["foreign"], "client")


# --- a client's tls= ------------------------------------------------------------------------------


def as_argument(files: TlsFiles) -> dict[str, str]:
    return {"ca": str(files.ca), "cert": str(files.cert), "key": str(files.key)}


def test_a_tls_client_is_the_tenant_its_certificate_names(pki: dict[str, TlsFiles],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAIRPOOL_TENANT", "someone-else")
    settings = resolve_settings("127.0.0.1:1", tls=as_argument(pki["client"]))
    assert (settings.tenant, settings.auth, settings.secret) == ("alice", "tls", b"")


def test_an_explicit_tenant_is_kept_for_the_scheduler_to_judge(pki: dict[str, TlsFiles]) -> None:
    assert resolve_settings("127.0.0.1:1", tenant="bob", tls=as_argument(pki["client"])).tenant == "bob"


def test_unusable_client_files_are_a_config_error_before_connecting(pki: dict[str, TlsFiles],
                                                                    tmp_path: Path) -> None:
    files = {**as_argument(pki["client"]), "key": str(pki["node"].key)}
    with pytest.raises(ClientConfigError, match="bad tls=: .*the key does not belong to the certificate"):
        resolve_settings("127.0.0.1:1", tls=files)
    with pytest.raises(ClientConfigError, match="bad tls=: .*does not exist"):
        resolve_settings("127.0.0.1:1", tls={**files, "cert": str(tmp_path / "nope.crt")})

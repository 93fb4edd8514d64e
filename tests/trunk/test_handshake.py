"""The mutual HMAC handshake (fairpool.handshake), driven without sockets."""

from __future__ import annotations

import msgspec
import pytest

from fairpool.handshake import NONCE_BYTES, AuthError, ClientHandshake, Peer, ServerHandshake
from fairpool.messages import (
    PROTOCOL_VERSION,
    ClientHello,
    Heartbeat,
    Refused,
    ServerAuth,
    ServerHello,
)

SECRET = b"the cluster secret"
OTHER = b"another secret"


def hello_for(server: ServerHandshake, secret: bytes = SECRET, role: str = "client",
              tenant: str = "alice", name: str = "laptop") -> tuple[ClientHandshake, ClientHello]:
    client = ClientHandshake(secret, role, tenant, name)
    return client, client.respond(server.hello())


def test_matching_secrets_authenticate_both_ways_and_give_the_peer() -> None:
    server = ServerHandshake(SECRET, server_name="sched")
    client, hello = hello_for(server, role="node", tenant="", name="n1")
    peer, auth = server.check(hello)
    client.finish(auth)  # the server proved it holds the secret too
    assert peer == Peer(role="node", tenant="", name="n1")
    assert client.server_name == "sched"


def test_client_with_wrong_secret_is_refused_by_the_server() -> None:
    server = ServerHandshake(SECRET)
    _, hello = hello_for(server, secret=OTHER)
    with pytest.raises(AuthError, match="wrong secret"):
        server.check(hello)


def test_server_with_wrong_secret_is_detected_by_the_client() -> None:
    client = ClientHandshake(SECRET, "client", "alice", "laptop")
    impostor = ServerHandshake(OTHER)
    hello = client.respond(impostor.hello())
    # The impostor cannot verify the client's hello; the best it can do is answer with
    # a MAC made from its own secret over the same nonces.
    accomplice = ClientHandshake(OTHER, "client", "alice", "laptop", nonce=hello.nonce)
    _, forged = impostor.check(accomplice.respond(impostor.hello()))
    with pytest.raises(AuthError, match="failed to prove"):
        client.finish(forged)


def test_random_server_auth_is_refused_by_the_client() -> None:
    server = ServerHandshake(SECRET)
    client, _ = hello_for(server)
    with pytest.raises(AuthError):
        client.finish(ServerAuth(b"\x00" * 32))


def test_recorded_client_hello_replayed_on_a_new_connection_is_refused() -> None:
    first = ServerHandshake(SECRET)
    _, recorded = hello_for(first)
    first.check(recorded)  # accepted where it was made
    with pytest.raises(AuthError, match="wrong secret"):
        ServerHandshake(SECRET).check(recorded)


def test_wrong_version_is_refused_naming_both_versions() -> None:
    server = ServerHandshake(SECRET)
    _, hello = hello_for(server)
    future = PROTOCOL_VERSION + 1
    with pytest.raises(AuthError, match=rf"version {future} .*speaks {PROTOCOL_VERSION}\)"):
        server.check(msgspec.structs.replace(hello, version=future))


def test_client_refuses_a_server_of_another_version_naming_both() -> None:
    hello = ServerHello(PROTOCOL_VERSION + 1, b"n" * NONCE_BYTES)
    with pytest.raises(AuthError, match=rf"version {PROTOCOL_VERSION + 1}.*speaks {PROTOCOL_VERSION}"):
        ClientHandshake(SECRET, "client").respond(hello)


@pytest.mark.parametrize(
    "change", [{"tenant": "mallory"}, {"role": "admin"}, {"name": "someone-else"}],
    ids=["tenant", "role", "name"],
)
def test_identity_altered_after_the_mac_is_refused(change: dict[str, str]) -> None:
    server = ServerHandshake(SECRET)
    _, hello = hello_for(server)
    with pytest.raises(AuthError, match="wrong secret"):
        server.check(msgspec.structs.replace(hello, **change))


def test_identity_shifted_across_the_field_separator_is_refused() -> None:
    server = ServerHandshake(SECRET)
    _, hello = hello_for(server, tenant="alice\0x", name="")
    with pytest.raises(AuthError):
        server.check(msgspec.structs.replace(hello, tenant="alice", name="x\0"))


def test_unknown_role_is_refused() -> None:
    server = ServerHandshake(SECRET)
    _, hello = hello_for(server, role="root")
    with pytest.raises(AuthError, match="unknown role 'root'"):
        server.check(hello)


@pytest.mark.parametrize("length", [0, 16, NONCE_BYTES + 1])
def test_client_nonce_of_the_wrong_length_is_refused(length: int) -> None:
    server = ServerHandshake(SECRET)
    _, hello = hello_for(server)
    with pytest.raises(AuthError, match="nonce has the wrong length"):
        server.check(msgspec.structs.replace(hello, nonce=b"x" * length))


def test_server_nonce_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(AuthError, match="nonce has the wrong length"):
        ClientHandshake(SECRET, "client").respond(ServerHello(PROTOCOL_VERSION, b"short"))


def test_client_echoing_the_server_nonce_is_refused() -> None:
    nonce = b"s" * NONCE_BYTES
    server = ServerHandshake(SECRET, nonce=nonce)
    hello = ClientHandshake(SECRET, "client", nonce=nonce).respond(server.hello())
    with pytest.raises(AuthError, match="echoed"):
        server.check(hello)


def test_server_refuses_anything_but_a_client_hello() -> None:
    with pytest.raises(AuthError, match="expected ClientHello, got Heartbeat"):
        ServerHandshake(SECRET).check(Heartbeat(1.0))


def test_client_reports_the_servers_refusal() -> None:
    server = ServerHandshake(SECRET)
    client, _ = hello_for(server)
    with pytest.raises(AuthError, match="refused by server: go away"):
        client.finish(Refused("go away"))


def test_client_cannot_finish_before_responding() -> None:
    with pytest.raises(AuthError, match="expected ServerAuth"):
        ClientHandshake(SECRET, "client").finish(ServerAuth(b"\x00" * 32))


def test_each_handshake_draws_a_fresh_nonce() -> None:
    assert ServerHandshake(SECRET).hello().nonce != ServerHandshake(SECRET).hello().nonce

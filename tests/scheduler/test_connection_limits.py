"""ConnectionLimits: connections per IP address and per tenant, counted and given back; the config keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from fairpool.config import DEFAULT_MAX_PAYLOAD, ConfigError, load_scheduler_config
from fairpool.handshake import AuthError, Peer
from fairpool.scheduler.limits import ConnectionLimits


def test_connections_from_one_address_are_counted_up_to_the_limit() -> None:
    limits = ConnectionLimits(per_peer=2, per_tenant=0)
    first, second = limits.admit_peer("10.0.0.1"), limits.admit_peer("10.0.0.1")
    assert first.refusal == second.refusal == ""
    third = limits.admit_peer("10.0.0.1")
    assert third.refusal == "too many connections from 10.0.0.1 (limit 2)"
    assert limits.admit_peer("10.0.0.2").refusal == ""  # another address has its own count


def test_a_refused_connection_takes_no_slot_and_a_closed_one_gives_its_slot_back() -> None:
    limits = ConnectionLimits(per_peer=1, per_tenant=0)
    held = limits.admit_peer("::1")
    refused = limits.admit_peer("::1")
    refused.release()  # counted nothing: gives nothing back
    assert limits.admit_peer("::1").refusal
    held.release()
    held.release()  # once only
    assert limits.hosts == {}  # no zero counts left behind by a run of short-lived peers
    assert limits.admit_peer("::1").refusal == ""


def test_client_connections_are_counted_per_tenant_once_authenticated() -> None:
    limits = ConnectionLimits(per_peer=0, per_tenant=1)
    alice = limits.admit_peer("h")
    alice.admit(Peer("client", "alice", "laptop"))
    other = limits.admit_peer("h")
    with pytest.raises(AuthError, match=r"^too many connections for tenant 'alice' \(limit 1\)$"):
        other.admit(Peer("client", "alice", "desktop"))
    limits.admit_peer("h").admit(Peer("client", "bob", "b"))  # bob has his own count
    alice.release()
    other.admit(Peer("client", "alice", "desktop"))  # alice's slot is free again


def test_nodes_and_admins_do_not_count_against_a_tenant() -> None:
    limits = ConnectionLimits(per_peer=0, per_tenant=1)
    for _ in range(3):
        limits.admit_peer("h").admit(Peer("node", "", "n1"))
        limits.admit_peer("h").admit(Peer("admin", "", "op"))
    assert limits.tenants == {}


def test_zero_means_no_limit() -> None:
    limits = ConnectionLimits(per_peer=0, per_tenant=0)
    admissions = [limits.admit_peer("h") for _ in range(500)]
    assert all(a.refusal == "" for a in admissions)
    for a in admissions:
        a.admit(Peer("client", "alice", ""))
    assert limits.tenants["alice"] == 500


def test_limit_keys_load_from_toml_with_their_defaults(tmp_path: Path) -> None:
    default = load_scheduler_config(None, {})
    assert (default.max_payload_size, default.max_connections_per_peer, default.max_connections_per_tenant) == (
        DEFAULT_MAX_PAYLOAD, 1024, 256)
    path = tmp_path / "s.toml"
    path.write_text('max_payload_size = "1M"\nmax_connections_per_peer = 8\nmax-connections-per-tenant = 0\n')
    config = load_scheduler_config(path, {})
    assert (config.max_payload_size, config.max_connections_per_peer, config.max_connections_per_tenant) == (
        1 << 20, 8, 0)


@pytest.mark.parametrize(("line", "key"), [("max_connections_per_peer = -1", "max_connections_per_peer"),
                                           ('max_connections_per_tenant = "many"', "max_connections_per_tenant"),
                                           ('max_payload_size = "big"', "max_payload_size")])
def test_bad_limit_values_are_refused_naming_the_key(tmp_path: Path, line: str, key: str) -> None:
    path = tmp_path / "s.toml"
    path.write_text(line + "\n")
    with pytest.raises(ConfigError, match=f"bad value for '{key}'"):
        load_scheduler_config(path, {})

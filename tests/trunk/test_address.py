"""HOST:PORT parsing (fairpool.address) as users type addresses."""

from __future__ import annotations

import pytest

from fairpool.address import DEFAULT_HOST, DEFAULT_PORT, Address, AddressError


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("127.0.0.1:51350", "127.0.0.1", 51350),
        ("  10.1.2.3:80  ", "10.1.2.3", 80),
        ("[::1]:7000", "::1", 7000),
        ("[::1]", "::1", DEFAULT_PORT),
        ("::1", "::1", DEFAULT_PORT),
        ("example.org", "example.org", DEFAULT_PORT),
        ("example.org:0", "example.org", 0),
        (":0", DEFAULT_HOST, 0),
        ("localhost:65535", "localhost", 65535),
    ],
)
def test_parse_accepts_what_users_write(text: str, host: str, port: int) -> None:
    assert Address.parse(text) == Address(host, port)


def test_parse_uses_the_given_default_port() -> None:
    assert Address.parse("example.org", default_port=8080) == Address("example.org", 8080)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "empty address"),
        ("   ", "empty address"),
        ("host:http", "port 'http' is not a number"),
        ("host:65536", "port 65536 out of range"),
        ("host:-1", "port -1 out of range"),
        ("[::1:80", "missing ']'"),
        ("[::1]80", r"expected \[HOST\]:PORT"),
        ("[::1]:x", "port 'x' is not a number"),
    ],
)
def test_parse_refuses_bad_addresses_with_a_clear_error(text: str, complaint: str) -> None:
    with pytest.raises(AddressError, match=complaint):
        Address.parse(text)


def test_address_error_is_a_value_error() -> None:
    assert issubclass(AddressError, ValueError)


@pytest.mark.parametrize(
    ("address", "text"),
    [(Address("127.0.0.1", 1), "127.0.0.1:1"), (Address("::1", 2), "[::1]:2")],
)
def test_str_round_trips_through_parse(address: Address, text: str) -> None:
    assert str(address) == text
    assert Address.parse(text) == address


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "localhost"])
def test_loopback_hosts_are_loopback(host: str) -> None:
    assert Address(host, 1).is_loopback


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.1", "::", "example.org", "128.0.0.1"])
def test_other_hosts_are_not_loopback(host: str) -> None:
    assert not Address(host, 1).is_loopback


def test_dns_name_starting_with_127_is_not_loopback() -> None:
    assert not Address("127.attacker.example", 1).is_loopback

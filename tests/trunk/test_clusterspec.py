"""Cluster specs (fairpool.clusterspec): what a node is willing to unpack."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fairpool.clusterspec import (
    ClusterSpec,
    DependFile,
    SpecError,
    decode_spec,
    encode_spec,
    is_safe_file_name,
)


def test_function_spec_round_trips() -> None:
    spec = ClusterSpec("function", code=b"\x80pickled", files=[DependFile("data.csv", b"1,2", 0o600)])
    assert decode_spec(encode_spec(spec)) == spec


def test_program_spec_round_trips() -> None:
    spec = ClusterSpec("program", program="run.sh", files=[DependFile("run.sh", b"#!/bin/sh\n", 0o755)])
    assert decode_spec(encode_spec(spec)) == spec


@pytest.mark.parametrize("name", ["../x", "a/b", "/etc/passwd", "", ".", "..", "a\\b", "a\0b"])
def test_unsafe_file_names_are_refused(name: str) -> None:
    data = encode_spec(ClusterSpec("function", files=[DependFile(name, b"x")]))
    with pytest.raises(SpecError, match="plain file name"):
        decode_spec(data)


@pytest.mark.parametrize("name", ["x", "data.csv", ".hidden", "..x", "a b"])
def test_plain_file_names_are_safe(name: str) -> None:
    assert is_safe_file_name(name)


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(SpecError, match="unknown computation kind 'shell'"):
        decode_spec(encode_spec(ClusterSpec("shell")))


def test_program_not_among_the_files_is_refused() -> None:
    spec = ClusterSpec("program", program="run.sh", files=[DependFile("other.sh", b"")])
    with pytest.raises(SpecError, match="'run.sh' is not among the cluster's files"):
        decode_spec(encode_spec(spec))


@pytest.mark.parametrize(
    "data",
    [b"", b"\xc1", msgspec.msgpack.encode(5), msgspec.msgpack.encode(["function", "code"])],
    ids=["empty", "invalid opcode", "not an array", "wrong field type"],
)
def test_garbage_bytes_are_a_spec_error(data: bytes) -> None:
    with pytest.raises(SpecError, match="malformed cluster spec"):
        decode_spec(data)


def test_invalid_utf8_in_a_file_name_is_a_spec_error() -> None:
    data = encode_spec(ClusterSpec("function", files=[DependFile("abc", b"")])).replace(b"abc", b"a\xffc")
    with pytest.raises(SpecError):
        decode_spec(data)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(data=st.binary(max_size=60))
def test_arbitrary_bytes_decode_to_a_spec_or_raise_spec_error(data: bytes) -> None:
    try:
        spec = decode_spec(data)
    except SpecError:
        return
    assert isinstance(spec, ClusterSpec)

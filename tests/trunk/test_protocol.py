"""Sans-IO framing (fairpool.protocol): reassembly, size limits and malformed input."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fairpool.messages import (
    AnyMessage,
    ClientHello,
    Heartbeat,
    JobSubmit,
    Message,
    Submit,
    encode,
)
from fairpool.protocol import (
    HEADER,
    PREAUTH_MAX_FRAME,
    Connection,
    FrameDecoder,
    FrameTooLarge,
    ProtocolError,
    encode_frame,
)

SAMPLE = Submit("c1", [JobSubmit("c1.0", b"\x00\x01opaque"), JobSubmit("c1.1", b"")])

# A small limit keeps the fuzzers' frames decodable instead of merely "too large".
FUZZ_MAX_FRAME = 4096


def framed(body: bytes) -> bytes:
    return HEADER.pack(len(body)) + body


def feed(conn: Connection, chunks: list[bytes]) -> list[AnyMessage]:
    """Feed non-empty chunks (an empty one would mean end of stream)."""
    messages: list[AnyMessage] = []
    for chunk in chunks:
        if chunk:
            messages.extend(conn.receive_data(chunk))
    return messages


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


# --- reassembly ---------------------------------------------------------------


def test_frame_split_at_every_byte_boundary_reassembles() -> None:
    data = encode_frame(SAMPLE)
    for cut in range(1, len(data)):
        conn = Connection()
        assert conn.receive_data(data[:cut]) == []
        assert conn.receive_data(data[cut:]) == [SAMPLE], f"cut at byte {cut}"


def test_frame_fed_one_byte_at_a_time_reassembles() -> None:
    data = encode_frame(SAMPLE)
    conn = Connection()
    assert feed(conn, [data[i : i + 1] for i in range(len(data))]) == [SAMPLE]


def test_many_frames_in_one_chunk_all_come_out_in_order() -> None:
    messages = [Heartbeat(float(i)) for i in range(200)]
    data = b"".join(encode_frame(m) for m in messages)
    assert Connection().receive_data(data) == messages


def test_chunk_ending_inside_the_next_frame_keeps_the_rest_for_later() -> None:
    first, second = encode_frame(Heartbeat(1.0)), encode_frame(SAMPLE)
    conn = Connection()
    assert conn.receive_data(first + second[:5]) == [Heartbeat(1.0)]
    assert conn.receive_data(second[5:]) == [SAMPLE]


def test_send_batches_messages_that_receive_data_decodes() -> None:
    messages: list[Message] = [Heartbeat(1.0), SAMPLE, Heartbeat(2.0)]
    assert Connection().receive_data(Connection().send(*messages)) == messages


# --- size limits ----------------------------------------------------------------


def test_frame_over_max_frame_raises_from_its_header_alone() -> None:
    decoder = FrameDecoder(max_frame=100)
    with pytest.raises(FrameTooLarge, match="101 bytes exceeds the limit of 100"):
        decoder.feed(HEADER.pack(101))  # no body byte sent: the decoder must not wait for it
    assert decoder.buffered <= HEADER.size


def test_oversize_hello_is_refused_before_authentication() -> None:
    conn = Connection(PREAUTH_MAX_FRAME)
    with pytest.raises(FrameTooLarge):
        conn.receive_data(HEADER.pack(PREAUTH_MAX_FRAME + 1) + b"x" * 100)


def test_frame_too_large_is_a_protocol_error() -> None:
    assert issubclass(FrameTooLarge, ProtocolError)


def test_frame_of_exactly_max_frame_is_accepted() -> None:
    body = encode(SAMPLE)
    assert Connection(max_frame=len(body)).receive_data(framed(body)) == [SAMPLE]


def test_raising_max_frame_after_authentication_admits_larger_frames() -> None:
    body = encode(SAMPLE)
    conn = Connection(max_frame=len(body) - 1)
    conn.max_frame = len(body)
    assert conn.receive_data(framed(body)) == [SAMPLE]


# --- end of stream ----------------------------------------------------------------


def test_end_of_stream_between_frames_is_clean() -> None:
    conn = Connection()
    assert conn.receive_data(encode_frame(SAMPLE)) == [SAMPLE]
    assert conn.receive_data(b"") == []
    assert conn.closed


@pytest.mark.parametrize("kept", [1, 3, 4, 10])
def test_end_of_stream_inside_a_frame_is_a_protocol_error(kept: int) -> None:
    conn = Connection()
    conn.receive_data(encode_frame(SAMPLE)[:kept])
    with pytest.raises(ProtocolError, match="closed inside a frame"):
        conn.receive_data(b"")


# --- malformed bodies ---------------------------------------------------------------

GARBAGE = {
    "empty body": b"",
    "invalid msgpack opcode": b"\xc1",
    "not an array": msgspec.msgpack.encode(5),
    "a map instead of an array": msgspec.msgpack.encode({"at": 1.0}),
    "unknown tag": msgspec.msgpack.encode(["Nope", 1]),
    "the abstract base tag": msgspec.msgpack.encode(["Message"]),
    "missing field": msgspec.msgpack.encode(["Heartbeat"]),
    "wrong field type": msgspec.msgpack.encode(["Heartbeat", "soon"]),
    "nested wrong type": msgspec.msgpack.encode(["Submit", "c1", [["JobSubmit", 7, b""]]]),
    "truncated body": encode(SAMPLE)[:-3],
    "trailing bytes": encode(Heartbeat(1.0)) + b"\x00",
}


@pytest.mark.parametrize("body", list(GARBAGE.values()), ids=list(GARBAGE))
def test_garbage_body_raises_protocol_error(body: bytes) -> None:
    with pytest.raises(ProtocolError, match="malformed message"):
        Connection().receive_data(framed(body))


def test_invalid_utf8_in_a_string_field_is_a_protocol_error() -> None:
    body = encode(ClientHello(1, "client", b"n" * 32, b"m" * 32)).replace(b"client", b"clien\xff")
    with pytest.raises(ProtocolError):
        Connection().receive_data(framed(body))


# --- fuzzing ----------------------------------------------------------------------------

# Frames whose declared length matches their body, so that bodies reach the decoder,
# mixed with raw bytes, so that headers are garbage too.
_frames = st.binary(max_size=64).map(framed)
_stream = st.lists(st.one_of(_frames, st.binary(min_size=1, max_size=16)), max_size=8).map(b"".join)


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=_stream, cuts=st.lists(st.integers(min_value=0), max_size=6), eof=st.booleans())
def test_arbitrary_bytes_in_arbitrary_chunks_yield_messages_or_protocol_error(
    data: bytes, cuts: list[int], eof: bool
) -> None:
    conn = Connection(max_frame=FUZZ_MAX_FRAME)
    try:
        messages = feed(conn, split_at(data, cuts))
        if eof:
            conn.receive_data(b"")
    except ProtocolError:
        return
    assert all(isinstance(m, Message) for m in messages)


@settings(max_examples=100, deadline=None)
@given(
    stamps=st.lists(st.floats(allow_nan=False), min_size=1, max_size=20),
    cuts=st.lists(st.integers(min_value=0), max_size=10),
)
def test_valid_frames_in_arbitrary_chunks_reassemble(stamps: list[float], cuts: list[int]) -> None:
    messages: list[Message] = [Heartbeat(t) if i % 2 else SAMPLE for i, t in enumerate(stamps)]
    data = b"".join(encode_frame(m) for m in messages)
    conn = Connection()
    assert feed(conn, split_at(data, cuts)) == messages
    assert conn.receive_data(b"") == []

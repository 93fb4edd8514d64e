"""Sans-IO framing of large frames (fairpool.protocol): gathered in a buffer of their own, never copied out.

A frame of ``large_frame`` bytes or more gets a buffer of its exact size once
its header is read; what arrives for it (through ``receive_data``, or written
straight into ``receive_buffer()`` as a ``recv_into`` would) goes there once,
and that buffer is the frame decoded. The tests use a small ``large_frame`` so
that every split of a stream can be tried on frames of a few dozen bytes.
"""

from __future__ import annotations

import gc
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fairpool.messages import (
    AnyMessage,
    Heartbeat,
    JobResult,
    JobSubmit,
    Message,
    NodeProgress,
    Submit,
)
from fairpool.protocol import (
    HEADER,
    Connection,
    FrameDecoder,
    FrameTooLarge,
    ProtocolError,
    encode_frame,
    encode_frames,
)

SMALL_LARGE = 32  # frames of 32 bytes or more take the large-frame path in these tests
BIG = Submit("c1", [JobSubmit("c1.0", bytes(range(256)) * 2)])  # over SMALL_LARGE
TINY = Heartbeat(1.5)  # under it
STREAM: list[Message] = [TINY, BIG, TINY, BIG, BIG, TINY]


def stream_bytes(messages: list[Message]) -> bytes:
    return bytes(encode_frames(messages))


def fed_in(chunks: list[bytes], large_frame: int = SMALL_LARGE) -> list[AnyMessage]:
    conn = Connection(large_frame=large_frame)
    got: list[AnyMessage] = []
    for chunk in chunks:
        if chunk:
            got.extend(conn.receive_data(chunk))
    assert conn.receive_data(b"") == []  # nothing left half-received
    return got


def received_into(data: bytes, sizes: list[int], large_frame: int = SMALL_LARGE) -> list[AnyMessage]:
    """Like a socket read loop: ``recv_into`` the large frame's buffer while one is gathered."""
    conn = Connection(large_frame=large_frame)
    got: list[AnyMessage] = []
    pos = 0
    turn = 0
    while pos < len(data):
        size = max(1, sizes[turn % len(sizes)]) if sizes else 7
        turn += 1
        into = conn.receive_buffer()
        if into is None:
            got.extend(conn.receive_data(data[pos : pos + size]))
            pos += min(size, len(data) - pos)
            continue
        count = min(size, into.nbytes, len(data) - pos)
        into[:count] = data[pos : pos + count]
        into.release()
        got.extend(conn.received_into(count))
        pos += count
    assert conn.receive_buffer() is None
    assert conn.receive_data(b"") == []
    return got


def test_encode_frames_is_the_frames_of_each_message_one_after_the_other() -> None:
    assert stream_bytes(STREAM) == b"".join(encode_frame(m) for m in STREAM)
    assert encode_frames([]) == b""


def test_a_large_frame_split_at_every_byte_boundary_decodes_to_the_same_message() -> None:
    data = encode_frame(BIG)
    assert len(data) > SMALL_LARGE
    for cut in range(1, len(data)):
        assert fed_in([data[:cut], data[cut:]]) == [BIG], f"cut at byte {cut}"


def test_a_stream_of_large_and_small_frames_cut_twice_anywhere_decodes_to_the_same_messages() -> None:
    data = stream_bytes([TINY, BIG, TINY])
    for first in range(1, len(data), 3):
        for second in range(first, len(data), 5):
            got = fed_in([data[:first], data[first:second], data[second:]])
            assert got == [TINY, BIG, TINY], f"cuts at {first}, {second}"


def test_a_stream_fed_one_byte_at_a_time_decodes_to_the_same_messages() -> None:
    data = stream_bytes(STREAM)
    assert fed_in([data[i : i + 1] for i in range(len(data))]) == STREAM


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
       large_frame=st.integers(min_value=1, max_value=2000))
def test_any_chunking_and_any_large_frame_threshold_decode_to_the_same_messages(
        cuts: list[int], large_frame: int) -> None:
    data = stream_bytes(STREAM)
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    chunks = [data[a:b] for a, b in zip(points, points[1:], strict=False)]
    assert fed_in(chunks, large_frame) == STREAM


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=10))
def test_frames_received_into_the_large_frames_buffer_decode_to_the_same_messages(sizes: list[int]) -> None:
    assert received_into(stream_bytes(STREAM), sizes) == STREAM


def test_the_buffer_written_into_is_the_frame_handed_out_not_a_copy_of_it() -> None:
    body = bytes(encode_frame(BIG))[HEADER.size :]
    decoder = FrameDecoder(large_frame=SMALL_LARGE)
    assert decoder.feed(HEADER.pack(len(body)) + body[:10]) == []
    into = decoder.unfilled()
    assert into is not None and into.nbytes == len(body) - 10
    frame_buffer = into.obj
    into[:] = body[10:]
    into.release()
    (frame,) = decoder.filled(len(body) - 10)
    assert frame is frame_buffer
    assert frame == body and decoder.unfilled() is None and decoder.buffered == 0


def test_filling_more_than_the_large_frame_lacks_is_refused() -> None:
    decoder = FrameDecoder(large_frame=SMALL_LARGE)
    decoder.feed(HEADER.pack(100))
    with pytest.raises(ValueError):
        decoder.filled(101)
    with pytest.raises(ValueError):
        FrameDecoder().filled(1)  # no large frame being gathered


def test_gathering_a_large_frame_allocates_about_its_size_once() -> None:
    """Fed in socket-sized chunks, a 16 MB frame costs one buffer of its size, not three (a growing buffer,
    a slice of it and the bytes made of that slice)."""
    size = 16 * 1024 * 1024
    data = HEADER.pack(size) + bytes(size)
    chunk = 256 * 1024
    chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    decoder = FrameDecoder()
    gc.collect()
    tracemalloc.start()
    try:
        frames: list[bytes | bytearray] = []
        for piece in chunks:
            frames.extend(decoder.feed(piece))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [len(f) for f in frames] == [size]
    assert peak < size * 1.25, f"gathering a {size}-byte frame peaked at {peak} bytes"


def test_a_large_frame_received_whole_decodes_with_one_copy_at_most() -> None:
    """All of a large frame in one ``receive_data`` (a test, a local pipe): sliced out once."""
    message = NodeProgress([], [JobResult("u", "FINISHED", bytes(3 * 1024 * 1024))])
    assert Connection().receive_data(encode_frame(message)) == [message]


def test_the_peer_hanging_up_inside_a_large_frame_is_a_protocol_error() -> None:
    data = encode_frame(BIG)
    conn = Connection(large_frame=SMALL_LARGE)
    assert conn.receive_data(data[:-3]) == []
    assert conn.receive_buffer() is not None
    with pytest.raises(ProtocolError, match="closed inside a frame"):
        conn.receive_data(b"")


def test_a_frame_over_the_limit_is_refused_on_its_header_even_if_it_would_be_large() -> None:
    decoder = FrameDecoder(max_frame=1000, large_frame=SMALL_LARGE)
    with pytest.raises(FrameTooLarge, match="1001 bytes exceeds the limit of 1000 bytes"):
        decoder.feed(HEADER.pack(1001))
    assert decoder.unfilled() is None  # no buffer was made for it


def test_a_malformed_large_frame_is_a_protocol_error() -> None:
    body = b"\xc1" * 64  # 0xc1: never used in msgpack
    conn = Connection(large_frame=SMALL_LARGE)
    assert conn.receive_data(HEADER.pack(len(body)) + body[:5]) == []
    with pytest.raises(ProtocolError, match="malformed message"):
        conn.receive_data(body[5:])

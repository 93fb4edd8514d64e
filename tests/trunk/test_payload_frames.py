"""Large payloads cross a hop without a copy of their own: decoded as views of their frame
(``fairpool.largefields.decode_views``) and sent as they are, beside their frame's other bytes
(``fairpool.protocol.encode_frame_parts``). The bytes on the wire stay what ``encode_frames`` writes.

A small ``large_frame``/``large`` lets frames of a few hundred bytes take the large paths.
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from fairpool.largefields import Pieces, decode_views, encode_parts
from fairpool.messages import (
    ClusterDef,
    Dispatch,
    FileChunk,
    Heartbeat,
    JobProvisional,
    JobResult,
    JobSubmit,
    JobsUpdate,
    Message,
    MessageError,
    NodeProgress,
    OpenCluster,
    Reply,
    Submit,
    Task,
    decode,
    encode,
)
from fairpool.protocol import Connection, encode_frame_parts, encode_frames

LARGE = 64


def payload(tag: int, size: int) -> bytes:
    return (bytes([tag]) * 3 + bytes(range(256)) * (size // 256 + 1))[:size]


def carriers(size: int) -> list[Message]:
    """A message of every kind that carries tenant bytes, each with a payload of ``size`` bytes."""
    return [
        Submit("c1", [JobSubmit("c1.0", payload(1, size)), JobSubmit("c1.1", b"small")]),
        Dispatch([ClusterDef("c1", payload(2, size))], [Task("c1.0", "c1", payload(3, size), 5.0)]),
        NodeProgress([], [JobResult("c1.0", "FINISHED", payload(4, size))],
                     [JobProvisional("c1.1", payload(5, size), 1.0)], [FileChunk("c1.2", "f", 0, payload(6, size))]),
        JobsUpdate([], [JobResult("c1.0", "FINISHED", payload(7, size), stdout="out")]),
        OpenCluster("c1", "name", payload(8, size), nodes=["n*"]),
    ]


# --- decoding: views of the frame ---------------------------------------------------------------


def test_a_payload_that_is_most_of_its_frame_is_a_read_only_view_into_the_frame() -> None:
    message = NodeProgress([], [JobResult("c1.0", "FINISHED", payload(1, 10_000))])
    frame = bytearray(encode(message))
    got = decode_views(frame, len(frame) // 2)
    assert got == message
    view = got.results[0].payload  # type: ignore[union-attr]
    assert isinstance(view, memoryview) and view.readonly
    assert view.obj is frame  # no copy: the frame's own memory


def test_payloads_under_the_threshold_are_copied_out_so_that_they_keep_no_frame_alive() -> None:
    message = Submit("c1", [JobSubmit(f"c1.{i}", payload(i, 300)) for i in range(10)])
    frame = bytearray(encode(message))
    got = decode_views(frame, len(frame) // 2)
    assert got == message
    assert all(type(job.payload) is bytes for job in got.jobs)  # type: ignore[union-attr]


def test_every_message_decodes_with_views_to_what_decode_gives() -> None:
    for message in [*carriers(1000), Heartbeat(1.5), Reply(3, True, {"a": [1, b"raw", None]}),
                    Submit("c1", [JobSubmit("c1.0", b"", None)])]:
        data = encode(message)
        assert decode_views(bytearray(data), 1) == decode(data) == message
        assert type(decode_views(data, 1)) is type(message)


def test_a_small_frame_decodes_its_payloads_as_bytes() -> None:
    conn = Connection(large_frame=1 << 20)
    (got,) = conn.receive_data(bytes(encode_frames([carriers(1000)[1]])))
    assert type(got.tasks[0].payload) is bytes  # type: ignore[union-attr]


def test_a_large_frame_received_decodes_its_payload_as_a_view_of_the_frame() -> None:
    conn = Connection(large_frame=LARGE)
    message = Dispatch([], [Task("c1.0", "c1", payload(1, 5000))])
    data = bytes(encode_frames([message]))
    got = conn.receive_data(data[:10]) + conn.receive_data(data[10:])
    assert got == [message]
    assert isinstance(got[0].tasks[0].payload, memoryview)  # type: ignore[union-attr]


# --- encoding: large payloads beside the frame --------------------------------------------------


def test_the_pieces_joined_are_the_frames_encode_frames_writes() -> None:
    messages = [Heartbeat(1.0), *carriers(1000), Heartbeat(2.0), *carriers(10)]
    parts = encode_frame_parts(messages, LARGE)
    assert b"".join(parts) == encode_frames(messages)
    assert Connection(large_frame=LARGE).receive_data(b"".join(parts)) == messages


def test_a_large_payload_is_sent_as_the_object_itself_not_a_copy() -> None:
    data = payload(1, 5000)
    view = memoryview(bytearray(data)).toreadonly()
    parts = encode_frame_parts([Task("c1.0", "c1", data), JobResult("c1.0", "FINISHED", view)], LARGE)
    assert any(part is data for part in parts)
    assert any(part is view for part in parts)


def test_messages_without_a_large_payload_are_one_buffer() -> None:
    messages = [Heartbeat(1.0), *carriers(LARGE - 1)]
    parts = encode_frame_parts(messages, LARGE)
    assert len(parts) == 1 and parts[0] == encode_frames(messages)
    assert encode_frame_parts([], LARGE) == [b""]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(range(5)), st.integers(0, 400)), max_size=6), st.integers(1, 300))
def test_any_mix_of_payload_sizes_and_thresholds_encodes_the_same_bytes(picks: list[tuple[int, int]],
                                                                        large: int) -> None:
    messages = [carriers(size)[kind] for kind, size in picks]
    assert b"".join(encode_frame_parts(messages, large)) == encode_frames(messages)


def test_a_message_in_pieces_is_its_encoding_with_each_large_field_the_object_itself() -> None:
    for message in carriers(1000):
        pieces = encode_parts(message, LARGE)
        assert b"".join(pieces) == encode(message)
        assert all(type(piece) is bytearray for piece in pieces[::2])
        assert all(type(piece) is bytes and len(piece) == 1000 for piece in pieces[1::2])


def in_pieces(message: Message, cuts: list[int]) -> tuple[Message, list[memoryview]]:
    """``message`` with each of its payloads of ``LARGE`` bytes or more as ``Pieces``, cut at ``cuts``
    (offsets, taken modulo its size), and the buffers of those pieces."""
    lent: list[memoryview] = []

    def cut(value: bytes) -> Pieces:
        at = sorted({c % (len(value) + 1) for c in cuts} | {0, len(value)})
        pieces = Pieces([bytearray(value[a:b]) for a, b in zip(at, at[1:], strict=False)])
        lent.extend(pieces.parts)  # type: ignore[arg-type]
        return pieces

    def swap(value: object) -> object:
        if isinstance(value, bytes):
            return cut(value) if len(value) >= LARGE else value
        if isinstance(value, list):
            return [swap(item) for item in value]
        if isinstance(value, Message):
            return type(value)(*[swap(getattr(value, name)) for name in value.__struct_fields__])
        return value

    return swap(message), lent  # type: ignore[return-value]


def test_a_field_in_pieces_is_sent_as_its_joined_bytes_each_piece_as_it_is() -> None:
    for message in carriers(1000):
        pieced, lent = in_pieces(message, [1, 300, 301, 999])
        parts = encode_frame_parts([Heartbeat(1.0), pieced, Heartbeat(2.0)], LARGE)
        assert b"".join(parts) == encode_frames([Heartbeat(1.0), message, Heartbeat(2.0)])
        assert lent and all(any(part is piece for part in parts) for piece in lent)  # never copied


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(range(5)), st.integers(LARGE, 700), st.lists(st.integers(0, 700), max_size=5),
       st.integers(1, LARGE))
def test_any_cut_of_a_payload_into_pieces_decodes_as_the_payload(kind: int, size: int, cuts: list[int],
                                                                  large: int) -> None:
    message = carriers(size)[kind]
    pieced, _ = in_pieces(message, cuts)
    assert b"".join(encode_parts(pieced, large)) == encode(message)
    assert Connection(large_frame=large).receive_data(b"".join(encode_frame_parts([pieced], large))) == [message]


def outcome(decoder: Callable[[bytes], Message], data: bytes) -> Message | str:
    try:
        return decoder(data)
    except MessageError:
        return "refused"


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(range(5)), st.integers(0, 300), st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)),
                                                                max_size=4), st.integers(0, 40))
def test_a_mangled_frame_is_refused_or_decoded_alike_with_views_and_without(kind: int, size: int,
                                                                          flips: list[tuple[int, int]],
                                                                          cut: int) -> None:
    data = bytearray(encode(carriers(size)[kind]))
    for at, byte in flips:
        data[at % len(data)] = byte
    mangled = bytes(data[: max(1, len(data) - cut)])
    assert outcome(lambda d: decode_views(d, 0), mangled) == outcome(decode, mangled)

"""Fuzzing the frame decoder (``fairpool.protocol.Connection``): garbage in, ProtocolError or messages out.

Whatever bytes a peer sends, in whatever chunks, ``receive_data`` returns
well-formed messages or raises ``ProtocolError``; never another exception
(which would escape a daemon's connection handler), and never holds more
than one frame's worth of bytes (so a peer cannot make it buffer without
bound). Hypothesis drives arbitrary bytes and mutated valid frames; with
atheris installed, a coverage-guided run does the same in a subprocess
(``atheris_frames.py``). ``FAIRPOOL_FUZZ_EXAMPLES`` lengthens every run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fuzzprofiles import SOAK_EXAMPLES, fuzz_settings
from hypothesis import given
from hypothesis import strategies as st
from messagestrategies import any_message, mutate

from fairpool.messages import Message, MessageError, Reply, Request, decode
from fairpool.protocol import HEADER, PREAUTH_MAX_FRAME, Connection, ProtocolError, encode_frames

SMALL_FRAME = 4096  # small enough that random lengths are often "too large", big enough for real messages
LIMITS = st.sampled_from([SMALL_FRAME, PREAUTH_MAX_FRAME])


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given points (modulo its length) into non-empty chunks."""
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False) if b > a]


def feed_all(conn: Connection, chunks: list[bytes], *, end: bool) -> list[Message]:
    """Feed the chunks (then the end of stream); stop at the first ProtocolError, as a daemon does."""
    received: list[Message] = []
    try:
        for chunk in chunks:
            messages = conn.receive_data(chunk)
            assert all(isinstance(m, Message) for m in messages)
            received.extend(messages)
            # At most one incomplete frame is held: never more than the frame limit (plus its header).
            assert conn._frames.buffered < HEADER.size + conn.max_frame
        if end:
            assert conn.receive_data(b"") == []
    except ProtocolError as exc:
        assert str(exc)  # a reason for the log and the peer
    return received


@fuzz_settings(300)
@given(data=st.binary(max_size=2048), cuts=st.lists(st.integers(0, 4096), max_size=8), limit=LIMITS,
       end=st.booleans())
def test_arbitrary_bytes_give_messages_or_a_protocol_error(data: bytes, cuts: list[int], limit: int,
                                                           end: bool) -> None:
    feed_all(Connection(limit), chunked(data, cuts), end=end)


@fuzz_settings(200)
@given(bodies=st.lists(st.binary(max_size=300), min_size=1, max_size=4), cuts=st.lists(st.integers(0, 4096),
       max_size=6))
def test_well_framed_garbage_bodies_give_messages_or_a_protocol_error(bodies: list[bytes], cuts: list[int]) -> None:
    """Correct length prefixes around random bodies: the decoder, not the framer, must refuse them."""
    data = b"".join(HEADER.pack(len(body)) + body for body in bodies)
    feed_all(Connection(SMALL_FRAME), chunked(data, cuts), end=True)


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    messages = draw(st.lists(any_message(words=["c1", "c1.0", "n1"]), min_size=1, max_size=3))
    return mutate(draw, encode_frames(messages))


@fuzz_settings(400)
@given(data=mutated_frames(), cuts=st.lists(st.integers(0, 4096), max_size=6), limit=LIMITS)
def test_mutated_valid_frames_give_messages_or_a_protocol_error(data: bytes, cuts: list[int], limit: int) -> None:
    feed_all(Connection(limit), chunked(data, cuts), end=True)


@fuzz_settings(200)
@given(messages=st.lists(any_message(), min_size=1, max_size=5), cuts=st.lists(st.integers(0, 1 << 16),
       max_size=10))
def test_every_message_type_survives_framing_in_any_chunks(messages: list[Message], cuts: list[int]) -> None:
    """The other side of the coin: valid frames, cut anywhere, all come out, none invented."""
    data = encode_frames(messages)
    conn = Connection()
    received = feed_all(conn, chunked(data, cuts), end=True)
    assert [type(m) for m in received] == [type(m) for m in messages]
    assert encode_frames(received) == data  # field for field (NaN included), as the bytes say


@pytest.mark.parametrize("depth", [200, 5_000, 60_000])
def test_deeply_nested_plain_data_is_a_protocol_error_not_a_crash(depth: int) -> None:
    """Regression: ``[[[[...]]]]`` in an ``Any`` field used to raise RecursionError out of decode()."""
    body = b"\x94\xa5Reply\x01\xc3" + b"\x91" * depth + b"\xc0"  # Reply(1, True, [[[...None...]]])
    conn = Connection()
    try:
        messages = conn.receive_data(HEADER.pack(len(body)) + body)
    except ProtocolError as exc:
        assert "nested too deeply" in str(exc)
    else:
        assert len(messages) == 1 and isinstance(messages[0], Reply)


def test_deeply_nested_request_args_are_refused_by_decode() -> None:
    body = b"\x94\xa7Request\x01\xa6status\x81\xa1x" + b"\x91" * 100_000 + b"\xc0"
    with pytest.raises(MessageError, match="nested too deeply"):
        decode(body)
    assert isinstance(decode(b"\x94\xa7Request\x01\xa6status\x81\xa1x\x91\xc0"), Request)


# --- atheris: coverage-guided, in a subprocess (libFuzzer owns the process it runs in) ------------

ATHERIS_SCRIPT = Path(__file__).with_name("atheris_frames.py")


def test_atheris_coverage_guided_run_finds_no_crash(tmp_path: Path) -> None:
    pytest.importorskip("atheris", reason="atheris is not installed (pip install atheris: wheels for CPython <= 3.11)")
    runs = SOAK_EXAMPLES * 10 or 50_000
    env = dict(os.environ, PYTHONHASHSEED="0")
    result = subprocess.run(
        [sys.executable, str(ATHERIS_SCRIPT), f"-runs={runs}", "-max_len=4096", "-seed=1",
         f"-artifact_prefix={tmp_path}/", str(tmp_path / "corpus")],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
    )
    assert result.returncode == 0, f"atheris found a crash:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    assert "Done" in result.stderr, result.stderr[-3000:]

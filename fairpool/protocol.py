"""Sans-IO framing: bytes in, messages out; messages in, bytes out.

A frame is a 4-byte big-endian length followed by that many bytes of one
msgpack-encoded message (see ``fairpool.messages``). ``Connection`` owns no
socket: the trio shell (``fairpool.wire``) feeds it whatever the socket
returned and writes whatever it produces, so every rule here (size limits,
malformed input) is tested with plain synchronous tests.
"""

from __future__ import annotations

import struct

from fairpool.largefields import Buffer, decode_views, encode_parts, holds_large
from fairpool.messages import AnyMessage, Message, MessageError, decode, encode, encode_into

HEADER = struct.Struct(">I")
#: Before authentication a peer may only send a hello: keep what it can make us buffer small.
PREAUTH_MAX_FRAME = 64 * 1024
DEFAULT_MAX_FRAME = 256 * 1024 * 1024
#: A frame of at least this many bytes is gathered in a buffer of its own (see ``FrameDecoder``).
LARGE_FRAME = 1024 * 1024


class ProtocolError(Exception):
    """The peer broke the protocol; the connection must be closed. ``str()`` says how."""


class FrameTooLarge(ProtocolError):
    pass


def encode_frame(message: Message) -> bytes:
    body = encode(message)
    return HEADER.pack(len(body)) + body


def encode_frames(messages: list[Message] | tuple[Message, ...]) -> bytearray:
    """Several frames in one buffer: one ``send_all`` for a whole batch.

    Each message is encoded straight into the buffer after room for its
    header (filled in afterwards): a large payload is copied once, into the
    frame, and never again to join the frames up.
    """
    buffer = bytearray()
    for message in messages:
        start = len(buffer)
        encode_into(message, buffer, start + HEADER.size)
        HEADER.pack_into(buffer, start, len(buffer) - start - HEADER.size)
    return buffer


def encode_frame_parts(messages: list[Message] | tuple[Message, ...], large: int = LARGE_FRAME) -> list[Buffer]:
    """``encode_frames(messages)`` as pieces to send one after the other (``sendmsg``, ``writev``):
    the same bytes on the wire, but each payload field of ``large`` bytes or more is a piece of its
    own, the field's value itself, never copied into a frame (a ``fairpool.largefields.Pieces``:
    its buffers, each a piece).

    Such a message is encoded in pieces (``fairpool.largefields.encode_parts``): the same bytes,
    cut around its large fields. The frames between are joined into one piece.
    """
    parts: list[Buffer] = []
    chunks: list[Buffer] = []  # the small frames since the last large one: joined into one piece
    for message in messages:
        if not holds_large(message, large):
            body = encode(message)
            chunks += (HEADER.pack(len(body)), body)
            continue
        pieces = encode_parts(message, large)
        chunks += (HEADER.pack(sum(len(piece) for piece in pieces)), pieces[0])
        # (the first and last pieces are encoding: the frames around go on in them)
        parts.append(b"".join(chunks))
        parts += pieces[1:-1]
        chunks = [pieces[-1]]
    if chunks or not parts:
        parts.append(b"".join(chunks))
    return parts


class FrameDecoder:
    """Splits a byte stream into frame bodies, refusing frames over ``max_frame``.

    Small frames are copied out of the receive buffer once, as ``bytes``. A
    frame of ``LARGE_FRAME`` bytes or more that has not fully arrived gets a
    buffer of its own, of its exact size, the moment its header is read: what
    arrives for it is copied there once, and that buffer is the frame handed
    out (no growing buffer reallocated on the way, no slice copied out of it).
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME, large_frame: int = LARGE_FRAME) -> None:
        self.max_frame = max_frame
        self.large_frame = large_frame
        self._buffer = bytearray()
        self._large: bytearray | None = None  # the large frame being filled
        self._filled = 0  # how much of it has arrived

    @property
    def buffered(self) -> int:
        """Bytes received of frames not yet complete."""
        return len(self._buffer) + (HEADER.size + self._filled if self._large is not None else 0)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes | bytearray]:
        if type(data) is bytes and self._large is None and not self._buffer:
            return self._feed_whole(data)
        frames: list[bytes | bytearray] = []
        view = memoryview(data).cast("B")
        if self._large is not None:
            view = self._fill(view, frames)
            if not view:
                return frames
        buf = self._buffer
        buf += view
        pos = 0
        end = len(buf)
        while end - pos >= HEADER.size:
            (length,) = HEADER.unpack_from(buf, pos)
            if length > self.max_frame:
                raise FrameTooLarge(f"frame of {length} bytes exceeds the limit of {self.max_frame} bytes")
            start = pos + HEADER.size
            if end - start < length:
                if length >= self.large_frame:
                    # All that is left belongs to this frame: move it to the frame's own buffer.
                    self._large = bytearray(length)
                    self._filled = end - start
                    with memoryview(buf) as whole:  # (released before ``buf`` is cut below)
                        self._large[: self._filled] = whole[start:end]
                    pos = end
                break
            with memoryview(buf) as whole:
                frames.append(bytes(whole[start : start + length]))
            pos = start + length
        if pos:
            del buf[:pos]  # (from the front of a bytearray: no copy, its start moves)
        return frames

    def _feed_whole(self, data: bytes) -> list[bytes | bytearray]:
        """The common case: nothing pending and the data starts at a frame. Its whole frames are
        sliced out of it (one copy each, no buffer); the rest, if any, goes the general way."""
        frames: list[bytes | bytearray] = []
        end = len(data)
        pos = 0
        while end - pos >= HEADER.size:
            (length,) = HEADER.unpack_from(data, pos)
            if length > self.max_frame:
                raise FrameTooLarge(f"frame of {length} bytes exceeds the limit of {self.max_frame} bytes")
            start = pos + HEADER.size
            if end - start < length:
                break
            frames.append(data[start : start + length])
            pos = start + length
        if pos < end:
            frames += self.feed(memoryview(data)[pos:])
        return frames

    def unfilled(self) -> memoryview | None:
        """Where the rest of the large frame being gathered goes (for a ``recv_into``), if one is."""
        if self._large is None:
            return None
        return memoryview(self._large)[self._filled :]

    def filled(self, count: int) -> list[bytes | bytearray]:
        """``count`` more bytes of the large frame were written into ``unfilled()``: the frame, once whole."""
        large = self._large
        if large is None or not 0 < count <= len(large) - self._filled:
            raise ValueError(f"{count} bytes filled of a large frame that has {self.unfilled_bytes} to go")
        self._filled += count
        if self._filled < len(large):
            return []
        self._large = None
        self._filled = 0
        return [large]

    @property
    def unfilled_bytes(self) -> int:
        return len(self._large) - self._filled if self._large is not None else 0

    def _fill(self, view: memoryview, frames: list[bytes | bytearray]) -> memoryview:
        """Copy what ``view`` holds of the large frame into it; return what is left of ``view``."""
        large = self._large
        assert large is not None
        take = min(len(large) - self._filled, view.nbytes)
        large[self._filled : self._filled + take] = view[:take]
        self._filled += take
        if self._filled == len(large):
            frames.append(large)
            self._large = None
            self._filled = 0
        return view[take:]


class Connection:
    """One side of a framed message connection, without I/O."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME, large_frame: int = LARGE_FRAME) -> None:
        self._frames = FrameDecoder(max_frame, large_frame)
        self.closed = False

    @property
    def max_frame(self) -> int:
        return self._frames.max_frame

    @max_frame.setter
    def max_frame(self, value: int) -> None:
        self._frames.max_frame = value

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[AnyMessage]:
        """Feed received bytes (b"" means end of stream); return every complete message."""
        if not data:
            self.closed = True
            if self._frames.buffered:
                raise ProtocolError(f"connection closed inside a frame ({self._frames.buffered} bytes pending)")
            return []
        return self._decode(self._frames.feed(data))

    def receive_buffer(self) -> memoryview | None:
        """Where received bytes may be written directly (``recv_into``), then told to ``received_into``:
        the rest of a large frame, while one is being gathered (else None: use ``receive_data``)."""
        return self._frames.unfilled()

    def received_into(self, count: int) -> list[AnyMessage]:
        """``count`` (> 0) bytes were written into ``receive_buffer()``: every message now complete."""
        return self._decode(self._frames.filled(count))

    def _decode(self, frames: list[bytes | bytearray]) -> list[AnyMessage]:
        messages: list[AnyMessage] = []
        for body in frames:
            try:
                if len(body) >= self._frames.large_frame:
                    # The payload is a view of the frame (no copy), if it is most of it (else copied out).
                    messages.append(decode_views(body, len(body) // 2))
                else:
                    messages.append(decode(body))
            except MessageError as exc:
                raise ProtocolError(str(exc)) from None
        return messages

    def send(self, *messages: Message) -> bytearray:
        return encode_frames(messages)

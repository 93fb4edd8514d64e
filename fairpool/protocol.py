"""Sans-IO framing: bytes in, messages out; messages in, bytes out.

A frame is a 4-byte big-endian length followed by that many bytes of one
msgpack-encoded message (see ``fairpool.messages``). ``Connection`` owns no
socket: the trio shell (``fairpool.wire``) feeds it whatever the socket
returned and writes whatever it produces, so every rule here (size limits,
malformed input) is tested with plain synchronous tests.
"""

from __future__ import annotations

import struct

from fairpool.messages import AnyMessage, Message, MessageError, decode, encode

HEADER = struct.Struct(">I")
#: Before authentication a peer may only send a hello: keep what it can make us buffer small.
PREAUTH_MAX_FRAME = 64 * 1024
DEFAULT_MAX_FRAME = 256 * 1024 * 1024


class ProtocolError(Exception):
    """The peer broke the protocol; the connection must be closed. ``str()`` says how."""


class FrameTooLarge(ProtocolError):
    pass


def encode_frame(message: Message) -> bytes:
    body = encode(message)
    return HEADER.pack(len(body)) + body


def encode_frames(messages: list[Message] | tuple[Message, ...]) -> bytes:
    """Several frames in one buffer: one ``send_all`` for a whole batch."""
    parts: list[bytes] = []
    for message in messages:
        body = encode(message)
        parts.append(HEADER.pack(len(body)))
        parts.append(body)
    return b"".join(parts)


class FrameDecoder:
    """Splits a byte stream into frame bodies, refusing frames over ``max_frame``."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        buf = self._buffer
        buf += data
        frames: list[bytes] = []
        pos = 0
        end = len(buf)
        while end - pos >= 4:
            (length,) = HEADER.unpack_from(buf, pos)
            if length > self.max_frame:
                raise FrameTooLarge(f"frame of {length} bytes exceeds the limit of {self.max_frame} bytes")
            if end - pos - 4 < length:
                break
            frames.append(bytes(buf[pos + 4 : pos + 4 + length]))
            pos += 4 + length
        if pos:
            del buf[:pos]
        return frames


class Connection:
    """One side of a framed message connection, without I/O."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._frames = FrameDecoder(max_frame)
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
        messages: list[AnyMessage] = []
        for body in self._frames.feed(data):
            try:
                messages.append(decode(body))
            except MessageError as exc:
                raise ProtocolError(str(exc)) from None
        return messages

    def send(self, *messages: Message) -> bytes:
        return encode_frames(messages)

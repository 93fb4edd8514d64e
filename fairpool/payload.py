"""Tenant payloads as bytes: pickle protocol 5 with out-of-band buffers, and back.

A job's arguments (client -> node) and its result (node -> client) are
pickled with protocol 5 and a ``buffer_callback``: a large contiguous buffer
(a numpy array's data, a ``pickle.PickleBuffer``) is not written into the
pickle stream but laid after it, so the payload is built with one copy of
each buffer, and unpickled with ``buffers=`` as memoryview slices of the
received bytes: the rebuilt object uses that memory where it lies, with no
copy. Such an object is read-only (it is a view of immutable bytes; a numpy
array comes back with ``flags.writeable`` False: ``.copy()`` it to change
it), unless ``loads(..., writable=True)`` is asked for, which copies the
buffers instead.

The scheduler never looks inside (SPEC promise 5): to it a payload stays
opaque bytes. Layout, all integers little-endian::

    u8 version (1) | 3 zero bytes | u32 n buffers | u64 pickle length | n x u64 buffer length
    | zero padding | pickle | zero padding | buffer 1 | ... | zero padding | buffer n

The pickle and every buffer start on a multiple of ``ALIGN`` bytes from the
start of the payload, so that an array rebuilt on a buffer is aligned.
A payload without out-of-band buffers is the plain pickle: its first byte is
the PROTO opcode (0x80), never a layout version, and it is exactly what
earlier versions wrote and read. Small buffers (under ``MIN_OUT_OF_BAND``
bytes) stay in the pickle, where a copy costs less than the layout.

``dumps`` joins the layout into one ``bytes`` (a snapshot: the client's
arguments). ``dumps_parts`` leaves a large one in pieces, views of the
object's own buffers, that the wire encoder sends one after the other (a
worker's result: it is sent at once and then dropped, so no copy is needed).
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Callable
from typing import Any

import cloudpickle

from fairpool.largefields import Pieces
from fairpool.protocol import LARGE_FRAME

VERSION = 1
ALIGN = 64
#: Buffers smaller than this stay in-band.
MIN_OUT_OF_BAND = 64 * 1024
_HEAD = struct.Struct("<B3xIQ")
_LENGTH = struct.Struct("<Q")
_PROTO = 0x80


class PayloadError(ValueError):
    """Bytes that are not a payload of a known layout."""


def _aligned(offset: int) -> int:
    return -(-offset // ALIGN) * ALIGN


def _out_of_band(buffers: list[pickle.PickleBuffer]) -> Callable[[pickle.PickleBuffer], bool]:
    def callback(buffer: pickle.PickleBuffer) -> bool:
        try:
            size = buffer.raw().nbytes
        except BufferError:  # not contiguous: the pickler copies it in-band
            return True
        if size < MIN_OUT_OF_BAND:
            return True
        buffers.append(buffer)
        return False  # out of band

    return callback


def dumps(obj: Any, *, cloud: bool = True) -> bytes:
    """``obj`` as a payload: cloudpickle (``cloud``) or the C pickler, protocol 5, buffers laid after.

    The bytes are a snapshot: the one copy of each buffer (what the client sends must not change
    if the caller changes its arguments after ``submit``)."""
    data, views = _pickled(obj, cloud)
    return assemble(data, views) if views else data


def dumps_parts(obj: Any, *, cloud: bool = True, join_under: int = LARGE_FRAME) -> bytes | Pieces:
    """``dumps(obj)``, but a payload of ``join_under`` bytes or more as ``Pieces`` (its header, its
    pickle, the padding and the object's own buffers, as views: nothing copied), for an encoder of
    ``fairpool.largefields`` to send as they lie (the same bytes on the wire).

    The pieces are views of ``obj``'s memory: it must not change until they are sent (a worker
    sends a job's result before it runs another job). ``join_under`` must not be under the
    encoder's ``large`` (``fairpool.protocol.LARGE_FRAME`` by default), which every ``Pieces``
    must reach."""
    data, views = _pickled(obj, cloud)
    if not views:
        return data
    pieces = Pieces(layout(data, views))
    return bytes(pieces) if len(pieces) < join_under else pieces


def _pickled(obj: Any, cloud: bool) -> tuple[bytes, list[memoryview]]:
    """``obj``'s pickle (protocol 5) and its out-of-band buffers as contiguous byte views."""
    buffers: list[pickle.PickleBuffer] = []
    callback = _out_of_band(buffers)
    if cloud:
        data: bytes = cloudpickle.dumps(obj, protocol=5, buffer_callback=callback)
    else:
        data = pickle.dumps(obj, protocol=5, buffer_callback=callback)
    return data, [buffer.raw() for buffer in buffers]


def assemble(data: bytes, views: list[memoryview]) -> bytes:
    """The layout around a pickle ``data`` and its out-of-band buffers (contiguous byte views)."""
    return b"".join(layout(data, views))  # the one copy of each buffer


def layout(data: bytes, views: list[memoryview]) -> list[bytes | memoryview]:
    """The payload's pieces, in order: its header, and each of the pickle ``data`` and the ``views``
    after the zero padding that aligns it (the views themselves: nothing copied)."""
    head = _HEAD.pack(VERSION, len(views), len(data)) + b"".join(_LENGTH.pack(v.nbytes) for v in views)
    parts: list[bytes | memoryview] = [head]
    offset = len(head)
    for part in (memoryview(data), *views):
        start = _aligned(offset)
        if start > offset:
            parts.append(bytes(start - offset))
        parts.append(part)
        offset = start + part.nbytes
    return parts


def split(payload: bytes | bytearray | memoryview) -> tuple[memoryview, list[memoryview]]:
    """The pickle and the buffers of a payload, as views of it (a plain pickle: itself, no buffers)."""
    view = memoryview(payload)
    if not view.nbytes:
        raise PayloadError("an empty payload")
    if view[0] == _PROTO:
        return view, []
    if view[0] != VERSION:
        raise PayloadError(f"unknown payload layout {view[0]} (this version reads 1, or a plain pickle)")
    if view.nbytes < _HEAD.size:
        raise PayloadError("a payload cut short in its header")
    _, count, length = _HEAD.unpack_from(view, 0)
    table = _HEAD.size + count * _LENGTH.size
    if table > view.nbytes:
        raise PayloadError(f"a payload cut short: its header names {count} buffers")
    sizes = [length, *(_LENGTH.unpack_from(view, _HEAD.size + i * _LENGTH.size)[0] for i in range(count))]
    parts: list[memoryview] = []
    offset = table
    for size in sizes:
        start = _aligned(offset)
        if start + size > view.nbytes:
            raise PayloadError(f"a payload of {view.nbytes} bytes cut short: its layout needs {start + size}")
        parts.append(view[start : start + size])
        offset = start + size
    if offset != view.nbytes:
        raise PayloadError(f"a payload of {view.nbytes} bytes whose layout covers {offset}")
    return parts[0], parts[1:]


def loads(payload: bytes | bytearray | memoryview, *, writable: bool = False) -> Any:
    """The object of a payload (any layout this module wrote, or a plain pickle).

    Out-of-band buffers are handed to the unpickler as views of ``payload``
    (read-only if it is ``bytes``); with ``writable`` they are copied into
    bytearrays first, so that what was writable when pickled is so again.
    """
    if payload and payload[0] == _PROTO:
        return pickle.loads(payload)  # the common case: no buffers, nothing to split
    data, buffers = split(payload)
    if writable:
        return pickle.loads(data, buffers=[bytearray(b) for b in buffers])
    return pickle.loads(data, buffers=buffers)

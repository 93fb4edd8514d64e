"""Large payload fields on the wire without a copy of their own: decoded as views, sent as they are.

msgspec copies a ``bytes`` field out of the input it decodes, and into the
output it encodes. For a job's 200 MB argument or result both copies are
needless:

* ``decode_views`` decodes a large frame with twins of the message classes
  whose ``bytes`` fields are ``memoryview``s (msgspec then points them into
  the frame, no copy), and rebuilds the real classes around the views. Only
  a field that is most of its frame stays a view, so that a view never keeps
  much more than itself alive; the others are copied out as ``bytes``.
  Small frames keep the plain typed ``decode``.
* ``encode_parts`` encodes a message whose large fields are replaced by
  placeholders (``hollow``), and cuts the encoding where they lie: the
  pieces, with the fields themselves between them, joined are exactly the
  bytes ``encode`` writes (``fairpool.protocol.encode_frame_parts`` sends
  them one after the other).

So a payload field of a message may be a read-only ``memoryview`` rather
than ``bytes`` (both are bytes-like: ``len``, slicing, ``pickle.loads``,
``zlib.crc32`` and the encoder take either).

On the sending side only, a large field may also hold ``Pieces``: a value
in several buffers (a result's pickle and its out-of-band buffers, see
``fairpool.payload.dumps_parts``), never joined. ``encode_parts`` writes
their total length in the field's bin header and lays the buffers after it
in order: the bytes on the wire are those of the joined value, and the
receiver cannot tell. A ``Pieces`` is always sent as a large field, so it
must be at least the ``large`` its encoder is given (``dumps_parts`` makes
none under ``fairpool.protocol.LARGE_FRAME``).
"""

from __future__ import annotations

import functools
import operator
import os
import struct
from collections.abc import Iterable
from types import UnionType
from typing import Any, Union, get_args, get_origin

import msgspec

from fairpool.messages import AnyMessage, Message, MessageError, encode

Buffer = bytes | bytearray | memoryview


class Pieces:
    """A ``bytes`` field's value as buffers to send one after the other (``bytes(pieces)``: joined).

    It stands where a message has a ``bytes`` field (typed as one by a ``cast``: msgspec checks
    no type when a message is built) only on its way to ``encode_parts``; nothing decodes one.
    The buffers are not copied: whoever made them must not change them until they are sent.
    """

    __slots__ = ("parts", "nbytes")

    def __init__(self, parts: Iterable[Buffer]) -> None:
        # As flat byte views, so that ``len`` of each is its size in bytes.
        self.parts: tuple[Buffer, ...] = tuple(p if type(p) is bytes else memoryview(p).cast("B") for p in parts)
        self.nbytes = sum(len(p) for p in self.parts)

    def __len__(self) -> int:
        return self.nbytes

    def __bytes__(self) -> bytes:
        return b"".join(self.parts)


def is_pieces(value: object) -> bool:
    """Whether ``value`` (a ``bytes`` field, as typed) is a ``Pieces``."""
    return type(value) is Pieces


# --- decoding: views ---------------------------------------------------------------------------


def _view_type(tp: Any, twins: dict[type, type]) -> Any:
    """``tp`` with ``bytes`` made ``memoryview`` and every message class its twin."""
    if tp is bytes:
        return memoryview
    if isinstance(tp, type) and issubclass(tp, Message):
        return _twin(tp, twins)
    args = get_args(tp)
    if get_origin(tp) is list:
        return list[_view_type(args[0], twins)]  # type: ignore[misc]
    if get_origin(tp) in (Union, UnionType):
        return functools.reduce(operator.or_, (_view_type(arg, twins) for arg in args))
    return tp


def _twin(cls: type[Message], twins: dict[type, type]) -> type:
    twin = twins.get(cls)
    if twin is None:
        fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
        for f in msgspec.structs.fields(cls):
            if f.default_factory is not msgspec.NODEFAULT:
                fields.append((f.name, _view_type(f.type, twins), msgspec.field(default_factory=f.default_factory)))
            elif f.default is not msgspec.NODEFAULT:
                fields.append((f.name, _view_type(f.type, twins), f.default))
            else:
                fields.append((f.name, _view_type(f.type, twins)))
        twin = msgspec.defstruct(cls.__name__, fields, tag=cls.__struct_config__.tag, array_like=True, frozen=True)
        twins[cls] = twin
    return twin


_twins: dict[type, type] = {}
_view_decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(_view_type(AnyMessage, _twins))
_real_of: dict[type, type] = {twin: cls for cls, twin in _twins.items()}


def decode_views(data: bytes | bytearray | memoryview, keep: int) -> AnyMessage:
    """``decode(data)``, except that a ``bytes`` field of at least ``keep`` bytes is a read-only
    ``memoryview`` into ``data`` (no copy), which it keeps alive: the shorter ones are copied out.

    For a large frame whose payload is most of it: with ``keep`` at half the frame, at most one
    field holds on to the frame, and the frame is at most twice what that field needs.
    """
    try:
        return _real(_view_decoder.decode(data), keep)  # type: ignore[no-any-return]
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise MessageError(f"malformed message: {exc}") from None
    except RecursionError:
        raise MessageError("malformed message: nested too deeply") from None


def _real(value: Any, keep: int) -> Any:
    """The real message (or field value) for what the view decoder made."""
    kind = type(value)
    if kind is memoryview:
        return value.toreadonly() if value.nbytes >= keep else value.tobytes()
    real = _real_of.get(kind)
    if real is not None:
        return real(*[_real(getattr(value, name), keep) for name in value.__struct_fields__])
    if kind is list and value and (type(value[0]) in _real_of or type(value[0]) is memoryview):
        return [_real(item, keep) for item in value]
    return value


# --- encoding: the fields as they are -----------------------------------------------------------


def _carries(tp: Any, known: dict[type, tuple[str, ...]]) -> bool:
    """Whether a value of type ``tp`` may hold a ``bytes`` field (itself, or in a message or list)."""
    if tp is bytes:
        return True
    if isinstance(tp, type) and issubclass(tp, Message):
        return bool(_carrier_fields(tp, known))
    return any(_carries(arg, known) for arg in get_args(tp)) if get_origin(tp) in (list, Union, UnionType) else False


def _carrier_fields(cls: type[Message], known: dict[type, tuple[str, ...]]) -> tuple[str, ...]:
    if cls not in known:
        known[cls] = ()  # (no message contains itself; this only ends the recursion)
        known[cls] = tuple(f.name for f in msgspec.structs.fields(cls) if _carries(f.type, known))
    return known[cls]


_carriers: dict[type, tuple[str, ...]] = {}
for _cls in get_args(AnyMessage):
    _carrier_fields(_cls, _carriers)


def _is_flat(cls: Any) -> bool:
    """A message whose one carrier is a ``bytes`` field of its own."""
    fields = _carriers.get(cls, ())
    return len(fields) == 1 and {f.name: f.type for f in msgspec.structs.fields(cls)}[fields[0]] is bytes


def _plan(cls: type) -> tuple[tuple[str, str | None], ...]:
    """How to check a message of ``cls`` in a plain loop: (field, None) for a ``bytes`` field,
    (field, item's field) for a list of flat messages."""
    types = {f.name: f.type for f in msgspec.structs.fields(cls)}
    plan: list[tuple[str, str | None]] = []
    for name in _carriers[cls]:
        tp = types[name]
        if tp is bytes:
            plan.append((name, None))
        elif get_origin(tp) is list and _is_flat(get_args(tp)[0]):
            (item,) = _carriers[get_args(tp)[0]]
            plan.append((name, item))
        else:  # (found at import, by every test: a new layout is taught here, not guessed at)
            raise TypeError(f"{cls.__name__}.{name}: a payload field laid out as {tp!r} has no plan")
    return tuple(plan)


#: Per message type with a payload field, its ``_plan``: ``holds_large`` runs on every message
#: sent, and a plain loop over a known layout is several times faster than walking the types.
_plans: dict[type, tuple[tuple[str, str | None], ...]] = {cls: _plan(cls) for cls in _carriers if _carriers[cls]}


def holds_large(message: Message, large: int) -> bool:
    """Whether ``message`` holds a ``bytes`` field of ``large`` bytes or more (see ``hollow``)."""
    for name, item in _plans.get(type(message), ()):
        value = getattr(message, name)
        if item is None:
            if len(value) >= large:
                return True
            continue
        for each in value:
            if len(getattr(each, item)) >= large:
                return True
    return False


def hollow(message: Message, large: int) -> tuple[Message, list[tuple[bytes, bytes | memoryview | Pieces]]]:
    """``message`` with each ``bytes`` field of ``large`` bytes or more replaced by a random
    16-byte placeholder, and the (placeholder, field value) pairs: the message itself, and no
    pair, if it holds no such field. (``fairpool.protocol`` encodes the hollow message and sends
    the values where their placeholders lie, without copying them into the frame.)"""
    holes: list[tuple[bytes, bytes | memoryview | Pieces]] = []
    if not holds_large(message, large):
        return message, holes
    return _hollow(message, large, holes), holes


def _hollow(value: Any, large: int, holes: list[tuple[bytes, bytes | memoryview | Pieces]]) -> Any:
    fields = _carriers.get(type(value))
    if fields:
        changes: dict[str, Any] = {}
        for name in fields:
            old = getattr(value, name)
            new = _hollow(old, large, holes)
            if new is not old:
                changes[name] = new
        return msgspec.structs.replace(value, **changes) if changes else value
    if isinstance(value, (bytes, memoryview, Pieces)):
        # (msgpack bin 32: at most 4 GiB; a Pieces always goes in a hole: the encoder knows no such type)
        if (large <= len(value) or type(value) is Pieces) and len(value) < 1 << 32:
            token = os.urandom(16)
            holes.append((token, value))
            return token
        return value
    if type(value) is list and value and type(value[0]) in _carriers:
        items = [_hollow(item, large, holes) for item in value]
        return items if any(new is not old for new, old in zip(items, value, strict=True)) else value
    return value


#: msgpack's header of a 16-byte bin (a placeholder of ``hollow``).
_BIN8_16 = b"\xc4\x10"
_PLACEHOLDER = len(_BIN8_16) + 16


def _bin_header(length: int) -> bytes:
    """msgpack's header of a bin of ``length`` (< 4 GiB) bytes, as msgspec writes it."""
    if length < 1 << 8:
        return struct.pack(">BB", 0xC4, length)
    if length < 1 << 16:
        return struct.pack(">BH", 0xC5, length)
    return struct.pack(">BI", 0xC6, length)


def encode_parts(message: Message, large: int) -> list[Buffer]:
    """``encode(message)`` in pieces: ``[bytearray, field, bytearray, field, ..., bytearray]``, where each
    ``field`` is the value (the very object) of a ``bytes`` field of ``large`` bytes or more (a ``Pieces``:
    its buffers, one after the other), and each bytearray the encoding between two of them (a bin header
    at its end). Joined, exactly ``encode``'s (of the message with each ``Pieces`` joined). The first and
    the last piece are always such bytearrays."""
    shell, holes = hollow(message, large)
    body = encode(shell)
    cuts = sorted(((body.find(_BIN8_16 + token), value) for token, value in holes), key=operator.itemgetter(0))
    if cuts and (cuts[0][0] < 0 or len({at for at, _ in cuts}) != len(cuts)):
        raise MessageError("a payload placeholder is missing from its message's encoding")
    pieces: list[Buffer] = []
    pos = 0
    with memoryview(body) as whole:
        for at, value in cuts:
            pieces.append(bytearray(whole[pos:at]) + _bin_header(len(value)))
            if isinstance(value, Pieces):
                pieces += value.parts
            else:
                pieces.append(value)
            pos = at + _PLACEHOLDER
        pieces.append(bytearray(whole[pos:]))
    return pieces

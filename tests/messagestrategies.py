"""Hypothesis strategies for hostile input: every wire message with arbitrary fields, and mutated bytes.

``message_strategy(cls, words=...)`` builds a strategy for one message class
from its msgspec type information, so that a field added to a message is
fuzzed without anyone touching this file: ints over msgpack's whole range,
floats including NaN and infinities, any text or bytes, lists and optional
fields, nested structs, and plain data for ``Any`` fields. ``words`` mixes
names the target knows (cluster ids, job uids, node names, verbs) into every
string field, so that garbage reaches deep into handlers instead of
bouncing off the first lookup. ``mutate(draw, data)`` flips, inserts, deletes,
duplicates and truncates bytes of a valid encoding.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, get_args

import msgspec
from hypothesis import strategies as st

from fairpool.messages import AnyMessage, Message

ALL_MESSAGES: tuple[type[Message], ...] = tuple(sorted(get_args(AnyMessage), key=lambda c: c.__name__))

_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1
_EDGE_INTS = [0, 1, -1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, _INT64_MIN, _UINT64_MAX]
_EDGE_FLOATS = [0.0, -0.0, 1e-300, 1e300, float("inf"), float("-inf"), float("nan")]

_plain: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers(_INT64_MIN, _UINT64_MAX) | st.floats() | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


@functools.lru_cache(maxsize=64)
def plain_data(words: tuple[str, ...] = ()) -> st.SearchStrategy[Any]:
    """What an ``Any`` field may carry: msgpack's plain data, nested a little (strings: often ``words``)."""
    if not words:
        return _plain
    text = _strings(words)
    return st.recursive(
        st.none() | st.booleans() | st.integers(-3, 100) | st.integers(_INT64_MIN, _UINT64_MAX) | st.floats()
        | text | st.binary(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
        max_leaves=12,
    )


def _strings(words: Sequence[str], likely: Sequence[str] = ()) -> st.SearchStrategy[str]:
    anything = st.text(max_size=40)
    if not words and not likely:
        return anything
    choices: list[st.SearchStrategy[str]] = []
    if likely:  # names this very field holds (job uids for ``uid``...): drawn most often
        choices += [st.sampled_from(list(likely))] * 3
    known = st.sampled_from(list(words or likely))
    choices += [known, anything, st.builds(lambda w, s: w + s, known, st.text(max_size=4))]
    return st.one_of(choices)


Fields = tuple[tuple[str, tuple[str, ...]], ...]  # field name -> likely values (hashable, for the caches)


def _for_type(t: msgspec.inspect.Type, words: tuple[str, ...], payloads: tuple[bytes, ...], fields: Fields,
              hint: str = "") -> st.SearchStrategy[Any]:
    mi = msgspec.inspect
    if isinstance(t, mi.BoolType):
        return st.booleans()
    if isinstance(t, mi.IntType):
        return st.one_of(st.integers(-3, 64), st.sampled_from(_EDGE_INTS), st.integers(_INT64_MIN, _UINT64_MAX))
    if isinstance(t, mi.FloatType):
        edge = st.sampled_from(_EDGE_FLOATS)
        return st.one_of(st.floats(), edge, edge, st.floats(0, 2e9))
    if isinstance(t, mi.StrType):
        return _strings(words, dict(fields).get(hint, ()))
    if isinstance(t, mi.BytesType):
        raw = st.binary(max_size=64)
        return st.one_of(st.sampled_from(list(payloads)), raw) if payloads else raw
    if isinstance(t, mi.NoneType):
        return st.none()
    if isinstance(t, mi.ListType):
        return st.lists(_for_type(t.item_type, words, payloads, fields, hint), max_size=4)
    if isinstance(t, mi.DictType):
        return st.dictionaries(_for_type(t.key_type, words, payloads, fields, hint),
                               _for_type(t.value_type, words, payloads, fields, hint), max_size=4)
    if isinstance(t, mi.UnionType):
        return st.one_of([_for_type(member, words, payloads, fields, hint) for member in t.types])
    if isinstance(t, mi.StructType):
        return _message_strategy(t.cls, words, payloads, fields)
    if isinstance(t, mi.AnyType):
        return plain_data(words)
    raise TypeError(f"no strategy for a message field of type {t!r}")  # a new kind of field: add it here


def _fields(fields: Mapping[str, Sequence[str]] | None) -> Fields:
    return tuple(sorted((name, tuple(values)) for name, values in (fields or {}).items()))


def message_strategy(cls: type[Message], *, words: Sequence[str] = (), payloads: Sequence[bytes] = (),
                     fields: Mapping[str, Sequence[str]] | None = None) -> st.SearchStrategy[Message]:
    """Instances of ``cls`` with every field arbitrary (optional fields sometimes left at their default).

    ``words``: strings to mix into every str field; ``fields``: strings to draw most often for the
    fields (and list items) of that name, e.g. ``{"uid": job_uids, "uids": job_uids}``.
    """
    return _message_strategy(cls, tuple(words), tuple(payloads), _fields(fields))


@functools.lru_cache(maxsize=512)  # building them is slow; composites ask again on every draw
def _message_strategy(cls: type[Message], words: tuple[str, ...], payloads: tuple[bytes, ...],
                      fields: Fields) -> st.SearchStrategy[Message]:
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    required: dict[str, st.SearchStrategy[Any]] = {}
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for field in info.fields:
        strategy = _for_type(field.type, words, payloads, fields, field.name)
        (required if field.required else optional)[field.name] = strategy
    return st.fixed_dictionaries(required, optional=optional).map(lambda kwargs: cls(**kwargs))


def any_message(*, words: Sequence[str] = (), payloads: Sequence[bytes] = (),
                kinds: Sequence[type[Message]] = ALL_MESSAGES,
                fields: Mapping[str, Sequence[str]] | None = None) -> st.SearchStrategy[Message]:
    """A message of any of ``kinds`` (default: every message type); see ``message_strategy``."""
    return _any_message(tuple(words), tuple(payloads), tuple(kinds), _fields(fields))


@functools.lru_cache(maxsize=64)
def _any_message(words: tuple[str, ...], payloads: tuple[bytes, ...], kinds: tuple[type[Message], ...],
                 fields: Fields) -> st.SearchStrategy[Message]:
    return st.one_of([_message_strategy(cls, words, payloads, fields) for cls in kinds])


_OPS = st.sampled_from(["flip", "set", "insert", "delete", "duplicate", "truncate"])
_EDITS = st.integers(1, 4)
_BITS = st.integers(0, 7)
_SPAN = st.integers(1, 16)
_INSERTED = st.binary(min_size=1, max_size=8)
_SPECIAL_BYTES = st.sampled_from([0x00, 0x7F, 0x80, 0x90, 0xC0, 0xC1, 0xCC, 0xD9, 0xDC, 0xDD, 0xFF])
_POSITION = st.integers(0, 1 << 20)


def mutate(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a few random byte-level edits (inside an ``@st.composite``): what a broken peer sends."""
    buf = bytearray(data)
    for _ in range(draw(_EDITS)):
        op = draw(_OPS)
        at = draw(_POSITION) % max(len(buf), 1)
        if op == "flip" and buf:
            buf[at] ^= 1 << draw(_BITS)
        elif op == "set" and buf:
            buf[at] = draw(_SPECIAL_BYTES)
        elif op == "insert":
            buf[at:at] = draw(_INSERTED)
        elif op == "delete" and buf:
            del buf[at:at + draw(_SPAN)]
        elif op == "duplicate" and buf:
            buf[at:at] = buf[at:at + draw(_SPAN)]
        elif op == "truncate":
            del buf[at:]
    return bytes(buf)

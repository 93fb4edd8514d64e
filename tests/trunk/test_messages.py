"""Wire messages (fairpool.messages): every message round-trips; garbage is a MessageError."""

from __future__ import annotations

import types
import typing
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fairpool import messages
from fairpool.messages import AnyMessage, Heartbeat, Message, MessageError, decode, encode

MESSAGE_TYPES: tuple[type[Message], ...] = typing.get_args(AnyMessage)


def _all_subclasses(cls: type[Message]) -> set[type[Message]]:
    found: set[type[Message]] = set()
    sub: type[Message]
    for sub in cls.__subclasses__():
        found |= {sub, *_all_subclasses(sub)}
    return found


def strategy_for(tp: Any) -> st.SearchStrategy[Any]:
    """A strategy for a msgspec field type, derived from the type itself."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(strategy_for(arg) for arg in typing.get_args(tp)))
    if origin is list:
        (item,) = typing.get_args(tp)
        return st.lists(strategy_for(item), max_size=3)
    if origin is dict:
        key, value = typing.get_args(tp)
        return st.dictionaries(strategy_for(key), strategy_for(value), max_size=3)
    if tp is Any:  # plain data, as msgpack carries it
        scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=10)
        return st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                            | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=5)
    if tp is type(None):
        return st.none()
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.integers(min_value=-(2**63), max_value=2**64 - 1)  # msgpack's integer range
    if tp is float:
        return st.floats(allow_nan=False)
    if tp is str:
        return st.text(max_size=20)
    if tp is bytes:
        return st.binary(max_size=40)
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        fields = {f.name: strategy_for(f.type) for f in msgspec.structs.fields(tp)}
        return st.builds(tp, **fields)
    raise TypeError(f"no strategy for field type {tp!r}: extend strategy_for")


def test_every_message_class_is_decodable() -> None:
    defined = {cls for cls in _all_subclasses(Message) if cls.__module__ == messages.__name__}
    assert defined == set(MESSAGE_TYPES)


@pytest.mark.parametrize("cls", MESSAGE_TYPES, ids=lambda cls: cls.__name__)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_message_round_trips(cls: type[Message], data: st.DataObject) -> None:
    message = data.draw(strategy_for(cls))
    assert decode(encode(message)) == message


def test_messages_are_tagged_by_class_name() -> None:
    assert msgspec.msgpack.decode(encode(Heartbeat(2.5))) == ["Heartbeat", 2.5]


def test_messages_are_frozen() -> None:
    with pytest.raises(AttributeError):
        Heartbeat(1.0).at = 2.0  # type: ignore[misc]


def test_message_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="malformed message"):
        decode(b"\xc1")


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(body=st.binary(max_size=80))
def test_arbitrary_bytes_decode_to_a_message_or_raise_message_error(body: bytes) -> None:
    try:
        message = decode(body)
    except MessageError:
        return
    assert isinstance(message, MESSAGE_TYPES)

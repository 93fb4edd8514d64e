"""Coverage-guided fuzzing of the frame decoder with atheris (libFuzzer); run by test_fuzz_frames.py.

    python tests/trunk/atheris_frames.py -runs=100000 -max_len=4096 CORPUS_DIR

The input is split into chunks by its first bytes, then fed to a
``Connection`` with a small frame limit: anything but messages or a
``ProtocolError`` is a crash, which libFuzzer reports (exit code != 0)
with the input that caused it. The corpus starts from valid frames of every
message type (written into the first directory argument, if it is
empty), so that mutations reach the message decoder, not only the length
check.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, get_args

import atheris

with atheris.instrument_imports():
    import msgspec

    from fairpool.messages import AnyMessage, Message
    from fairpool.protocol import HEADER, Connection, ProtocolError, encode_frame

SMALL_FRAME = 4096


def one_input(data: bytes) -> None:
    if not data:
        return
    cuts = sorted({b % (len(data) + 1) for b in data[:3]})
    conn = Connection(SMALL_FRAME)
    start = 0
    try:
        for cut in [*cuts, len(data)]:
            if cut > start:
                for message in conn.receive_data(data[start:cut]):
                    if not isinstance(message, Message):
                        raise AssertionError(f"decoded a non-message {message!r}")
                if conn._frames.buffered >= HEADER.size + SMALL_FRAME:
                    raise AssertionError(f"buffered {conn._frames.buffered} bytes past the frame limit")
                start = cut
        conn.receive_data(b"")
    except ProtocolError:
        pass


def _sample(t: msgspec.inspect.Type) -> Any:
    """A simple valid value of a field's type."""
    mi = msgspec.inspect
    simple = {mi.BoolType: True, mi.IntType: 1, mi.FloatType: 1.5, mi.StrType: "c1.0", mi.BytesType: b"\x80\x04N.",
              mi.NoneType: None, mi.AnyType: {"k": [1, "v"]}}
    if type(t) in simple:
        return simple[type(t)]
    if isinstance(t, mi.ListType):
        return [_sample(t.item_type)]
    if isinstance(t, mi.DictType):
        return {_sample(t.key_type): _sample(t.value_type)}
    if isinstance(t, mi.UnionType):
        return _sample(t.types[0])
    if isinstance(t, mi.StructType):
        return t.cls(**{f.name: _sample(f.type) for f in t.fields})
    raise TypeError(f"no sample for {t!r}")


def write_seeds(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    if any(directory.iterdir()):
        return
    for cls in get_args(AnyMessage):
        (directory / cls.__name__).write_bytes(encode_frame(_sample(msgspec.inspect.type_info(cls))))


def main() -> None:
    corpus = [arg for arg in sys.argv[1:] if not arg.startswith("-")]
    if corpus:
        write_seeds(Path(corpus[0]))
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

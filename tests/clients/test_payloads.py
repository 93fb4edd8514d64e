"""Payloads (``fairpool.payload``): pickle protocol 5 with out-of-band buffers, both ways.

Large buffers are laid after the pickle and come back as views of the
received bytes (no copy); small objects stay plain pickles, byte for byte
what earlier versions wrote; a payload over its limit is refused with its
size and the limit, on the client (arguments) and on the node (results).
"""

from __future__ import annotations

import ctypes
import pickle
import struct
from pathlib import Path

import cloudpickle
import pytest

from fairpool.clients.errors import ArgumentsError
from fairpool.clients.spec import pack_arguments
from fairpool.clusterspec import ClusterSpec, encode_spec
from fairpool.largefields import Pieces
from fairpool.messages import JobResult, NodeProgress, Task
from fairpool.nodes.jobs import ClusterRuntime
from fairpool.payload import (
    ALIGN,
    MIN_OUT_OF_BAND,
    VERSION,
    PayloadError,
    dumps,
    dumps_parts,
    loads,
    split,
)
from fairpool.protocol import LARGE_FRAME, Connection, encode_frame_parts

BIG = 4 * MIN_OUT_OF_BAND


class Blob:
    """Bytes that pickle out of band under protocol 5, as a numpy array does."""

    def __init__(self, data: bytearray | memoryview) -> None:
        self.data = data

    def __reduce_ex__(self, protocol: int):  # type: ignore[no-untyped-def]
        if protocol >= 5:
            return Blob, (pickle.PickleBuffer(self.data),)
        return Blob, (bytes(self.data),)


def blob(size: int, seed: int = 1) -> Blob:
    return Blob(bytearray((i * seed) % 251 for i in range(size)))


def test_a_large_buffer_is_laid_after_the_pickle_and_comes_back_as_a_view_of_the_payload() -> None:
    original = blob(BIG)
    payload = dumps((original, "label"))
    assert payload[0] == VERSION
    back, label = loads(payload)
    assert label == "label" and bytes(back.data) == bytes(original.data)
    assert isinstance(back.data, memoryview) and back.data.obj is payload  # no copy was made
    assert back.data.readonly  # a view of immutable bytes


def test_writable_asks_for_copies_that_can_be_changed() -> None:
    payload = dumps(blob(BIG))
    back = loads(payload, writable=True)
    back.data[0] = 7
    assert back.data[0] == 7 and payload[0] == VERSION


def test_a_read_only_buffer_stays_read_only_even_when_copies_are_asked_for() -> None:
    back = loads(dumps(Blob(memoryview(bytes(BIG)))), writable=True)
    assert back.data.readonly


def test_the_pickle_and_every_buffer_start_aligned_in_the_payload() -> None:
    sizes = (BIG + 3, BIG + 5, BIG)
    payload = bytearray(dumps([blob(size, seed) for seed, size in enumerate(sizes, 1)]))
    data, buffers = split(payload)  # views of a writable copy: ctypes can tell where they start
    base = ctypes.addressof(ctypes.c_char.from_buffer(payload))
    offsets = [ctypes.addressof(ctypes.c_char.from_buffer(part)) - base for part in [data, *buffers]]
    assert [offset % ALIGN for offset in offsets] == [0, 0, 0, 0]
    assert [bytes(b) for b in buffers] == [bytes(blob(size, seed).data) for seed, size in enumerate(sizes, 1)]


def test_small_objects_stay_plain_pickles_exactly_as_before() -> None:
    value = {"a": [1, 2.5, "x"], "b": bytearray(b"small"), "c": blob(MIN_OUT_OF_BAND - 1)}
    payload = dumps(value["a"])
    assert payload == cloudpickle.dumps(value["a"])
    small = dumps(value["c"])
    assert small[0] == 0x80 and bytes(loads(small).data) == bytes(value["c"].data)  # in-band: a plain pickle


def test_old_payloads_written_by_cloudpickle_still_load() -> None:
    old = cloudpickle.dumps(((blob(BIG),), {"k": 1}))
    (args, kwargs) = loads(old)
    assert bytes(args[0].data) == bytes(blob(BIG).data) and kwargs == {"k": 1}


@pytest.mark.parametrize("damage", ["cut", "version", "count", "trailing"])
def test_a_damaged_payload_is_refused_with_a_payload_error(damage: str) -> None:
    payload = bytearray(dumps(blob(BIG)))
    if damage == "cut":
        payload = payload[:-10]
    elif damage == "version":
        payload[0] = 9
    elif damage == "count":
        struct.pack_into("<I", payload, 4, 1000)
    else:
        payload += b"\0" * ALIGN
    with pytest.raises(PayloadError):
        loads(bytes(payload))


def test_numpy_arrays_travel_out_of_band_and_come_back_equal() -> None:
    numpy = pytest.importorskip("numpy")
    array = numpy.arange(BIG, dtype=numpy.float64).reshape(-1, 8)
    back = loads(dumps(array))
    assert back.dtype == array.dtype and back.shape == array.shape and (back == array).all()
    assert not back.flags.writeable and back.flags.aligned


def test_pack_arguments_lays_large_buffers_out_of_band() -> None:
    payload = pack_arguments((blob(BIG),), {"n": 3}, 1 << 30)
    assert payload[0] == VERSION
    (arg,), kwargs = loads(payload)
    assert bytes(arg.data) == bytes(blob(BIG).data) and kwargs == {"n": 3}


def test_arguments_over_the_limit_are_refused_naming_the_size_and_the_limit() -> None:
    payload = pack_arguments((blob(BIG),), {}, 1 << 30)
    with pytest.raises(ArgumentsError) as refused:
        pack_arguments((blob(BIG),), {}, BIG // 2, "the scheduler's max_payload_size")
    assert str(refused.value) == (f"the job's arguments pickle to {len(payload)} bytes, more than the scheduler's "
                                  f"max_payload_size ({BIG // 2} bytes)")


def _echo_cluster(tmp_path: Path, max_payload: int) -> ClusterRuntime:
    code = cloudpickle.dumps((lambda x: x, None, None))
    tmp_path.mkdir(exist_ok=True)
    return ClusterRuntime("c1", encode_spec(ClusterSpec("function", code=code)), tmp_path, max_payload)


def test_a_result_comes_back_out_of_band(tmp_path: Path) -> None:
    cluster = _echo_cluster(tmp_path, 0)
    result = cluster.run(Task("c1.1", "c1", pack_arguments((blob(BIG),), {}, 1 << 30)))
    assert result.status == "FINISHED" and result.payload[0] == VERSION
    assert bytes(loads(result.payload).data) == bytes(blob(BIG).data)


def test_a_result_over_the_schedulers_limit_fails_the_job_saying_its_size_and_the_limit(tmp_path: Path) -> None:
    cluster = _echo_cluster(tmp_path, BIG // 2)
    result = cluster.run(Task("c1.1", "c1", pack_arguments((blob(BIG),), {}, 1 << 30)))
    size = len(dumps(blob(BIG), cloud=False))
    assert result.status == "FAILED"
    assert result.reason == (f"the job's result is {size} bytes, over the scheduler's limit of {BIG // 2} bytes "
                             "(max_payload_size)")
    assert isinstance(loads(result.payload), RuntimeError)  # what result() raises, with the same words


# --- a result in pieces (the worker's send path) ---------------------------------------------------


def test_a_large_payload_in_pieces_is_the_joined_payload_byte_for_byte() -> None:
    obj = (blob(LARGE_FRAME, 3), "label", blob(BIG, 5))
    pieces = dumps_parts(obj, cloud=False)
    assert type(pieces) is Pieces and len(pieces) == len(dumps(obj, cloud=False))
    assert bytes(pieces) == dumps(obj, cloud=False)


def test_a_payload_in_pieces_lends_the_objects_own_buffers_without_copying_them() -> None:
    original = blob(2 * LARGE_FRAME)
    pieces = dumps_parts(original, cloud=False)
    assert type(pieces) is Pieces
    lent = [part for part in pieces.parts if isinstance(part, memoryview) and part.obj is original.data]
    assert len(lent) == 1 and lent[0].nbytes == len(original.data)
    original.data[0] ^= 0xFF  # the very memory, not a copy of it
    assert lent[0][0] == original.data[0]


def test_a_payload_under_the_large_frame_size_is_joined_into_bytes() -> None:
    assert type(dumps_parts(blob(BIG), cloud=False)) is bytes
    assert dumps_parts(blob(BIG), cloud=False) == dumps(blob(BIG), cloud=False)
    assert type(dumps_parts("small")) is bytes


def test_a_result_in_pieces_reaches_the_receiver_as_the_payload_it_would_have_been() -> None:
    original = blob(2 * LARGE_FRAME, 7)
    pieces = dumps_parts(original, cloud=False)
    result = JobResult("c1.1", "FINISHED", pieces, "out")  # type: ignore[arg-type]
    received = Connection().receive_data(b"".join(encode_frame_parts([NodeProgress([], [result])])))
    (progress,) = received
    assert isinstance(progress, NodeProgress) and progress.results[0].stdout == "out"
    assert bytes(progress.results[0].payload) == dumps(original, cloud=False)
    assert bytes(loads(progress.results[0].payload).data) == bytes(original.data)


def test_a_large_result_leaves_the_job_in_pieces_and_loads_as_the_value(tmp_path: Path) -> None:
    cluster = _echo_cluster(tmp_path, 0)
    sent = blob(2 * LARGE_FRAME, 11)
    result = cluster.run(Task("c1.1", "c1", pack_arguments((sent,), {}, 1 << 30)))
    assert result.status == "FINISHED" and type(result.payload) is Pieces
    assert len(result.payload) == len(dumps(sent, cloud=False))
    assert bytes(loads(bytes(result.payload)).data) == bytes(sent.data)


def test_a_large_result_over_the_limit_fails_the_job_saying_its_size(tmp_path: Path) -> None:
    cluster = _echo_cluster(tmp_path, LARGE_FRAME)
    sent = blob(2 * LARGE_FRAME)
    result = cluster.run(Task("c1.1", "c1", pack_arguments((sent,), {}, 1 << 30)))
    assert result.status == "FAILED" and type(result.payload) is bytes
    assert result.reason == (f"the job's result is {len(dumps(sent, cloud=False))} bytes, over the scheduler's "
                             f"limit of {LARGE_FRAME} bytes (max_payload_size)")

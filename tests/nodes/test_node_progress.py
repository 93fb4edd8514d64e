"""HeldProgress: what a node holds for the scheduler, in order, in frames of bounded size."""

from __future__ import annotations

from fairpool.messages import FileChunk, JobProvisional, JobResult, JobStarted
from fairpool.nodes import progress
from fairpool.nodes.progress import HeldProgress


def chunk(uid: str, offset: int, size: int, last: bool = False) -> FileChunk:
    return FileChunk(uid, "f.bin", offset, b"x" * size, last)


def test_nothing_held_means_nothing_to_send() -> None:
    assert HeldProgress().take() == []


def test_everything_held_goes_in_one_message_in_its_fields() -> None:
    held = HeldProgress()
    held.add([JobStarted("j1", "n1", 1.0)], [], [JobProvisional("j1", b"p", 2.0)], [chunk("j1", 0, 3, True)])
    held.add([], [JobResult("j1", "FINISHED")])
    (message,) = held.take()
    assert message.started == []  # its result says when it started: no separate news needed
    assert [p.payload for p in message.provisional] == [b"p"]
    assert [c.offset for c in message.files] == [0]
    assert [r.uid for r in message.results] == ["j1"]
    assert held.take() == []


def test_large_file_data_is_split_and_results_come_last(monkeypatch) -> None:
    monkeypatch.setattr(progress, "MAX_PROGRESS_FILE_BYTES", 100)
    held = HeldProgress()
    held.add([], [], [], [chunk("j1", i * 60, 60, last=i == 4) for i in range(5)])
    held.add([], [JobResult("j1", "FINISHED")])
    messages = held.take()
    assert len(messages) == 6  # 60 bytes of data each: two never fit under 100; then the result
    assert [c.offset for m in messages for c in m.files] == [0, 60, 120, 180, 240]
    assert all(not m.results for m in messages[:-1])
    assert [r.uid for r in messages[-1].results] == ["j1"]


def test_after_a_disconnect_recent_provisional_results_and_files_are_held_again_first() -> None:
    held = HeldProgress()
    held.add([], [], [JobProvisional("j1", b"1", 1.0)], [chunk("j1", 0, 1, True)])
    held.take()
    held.add([], [JobResult("j1", "FINISHED")], [JobProvisional("j2", b"2", 2.0)])
    held.connection_lost()
    (message,) = held.take()
    assert [p.uid for p in message.provisional] == ["j1", "j2"]
    assert [c.uid for c in message.files] == ["j1"]
    assert [r.uid for r in message.results] == ["j1"]


def test_acknowledged_progress_is_not_held_again() -> None:
    held = HeldProgress()
    held.add([], [], [JobProvisional("j1", b"1", 1.0)])
    held.take()
    held.acknowledged(held.mark())
    held.connection_lost()
    assert held.take() == []


def test_a_start_without_its_result_yet_is_sent() -> None:
    held = HeldProgress()
    held.add([JobStarted("j1", "n1", 1.0), JobStarted("j2", "n1", 1.5)], [JobResult("j1", "FINISHED")])
    (message,) = held.take()
    assert [s.uid for s in message.started] == ["j2"]
    assert [r.uid for r in message.results] == ["j1"]

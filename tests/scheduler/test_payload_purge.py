"""Purging the payload store: what died (acknowledged, expired, forgotten) leaves the disk at compaction.

A ``History`` (payloadhistory.py) drives a ``SchedulerState`` with big
payloads through a real writer and store; compaction must delete the
segments nothing lives in, empty the mostly dead ones into the current
segment, keep the mostly live ones as they are, and replay to the same
state. ``journal inspect`` shows the references and the store.
"""

from __future__ import annotations

from pathlib import Path

from payloadhistory import History, big, disk_use, reopen, view

from fairpool.scheduler.journal import HEADER, JOURNAL_NAME
from fairpool.scheduler.journalinspect import inspect_journal, render
from fairpool.scheduler.payloadstore import PAYLOADS_DIR, segment_files

# --- purging ------------------------------------------------------------------------------------------


def test_acknowledged_payloads_are_deleted_with_their_segments_at_compaction(tmp_path: Path) -> None:
    history = History(tmp_path, segment_bytes=4096)
    conn = history.open_cluster("c1", spec_size=200)
    node = history.node("n1", cpus=4)
    ran: list[str] = []
    for batch in range(10):
        history.submit(conn, "c1", [500] * 8, first=8 * batch)
        ran += history.run_all(node, "n1", size=500)
        history.commit()
    history.ack(conn, ran)
    history.commit()
    used, segments = disk_use(tmp_path), len(segment_files(tmp_path / PAYLOADS_DIR))
    assert segments > 10
    history.writer.compact()
    # What lives is the cluster's spec: copied out of the first segment into a new one, all others gone.
    assert list(segment_files(tmp_path / PAYLOADS_DIR).values()) == [tmp_path / PAYLOADS_DIR / f"seg-{segments + 1:06d}.dat"]
    assert history.store.size == HEADER.size + 200
    assert disk_use(tmp_path) < used / 20
    state, _store = reopen(tmp_path)
    assert view(state) == view(history.state)


def test_live_payloads_of_a_mostly_dead_segment_move_and_the_segment_goes(tmp_path: Path) -> None:
    history = History(tmp_path)
    conn = history.open_cluster("c1", spec_size=40)
    uids = history.submit(conn, "c1", [100] * 20)
    history.cancel(conn, uids[:19])
    history.ack(conn, uids[:19])
    history.commit()
    history.writer.compact()
    assert sorted(segment_files(tmp_path / PAYLOADS_DIR)) == [2]
    state, _store = reopen(tmp_path)
    assert view(state) == view(history.state)
    assert state.jobs[uids[19]].payload == big("args:" + uids[19], 100)


def test_a_mostly_live_segment_is_kept_as_it_is(tmp_path: Path) -> None:
    history = History(tmp_path)
    conn = history.open_cluster("c1", spec_size=40)
    uids = history.submit(conn, "c1", [100] * 20)
    history.cancel(conn, uids[:5])
    history.ack(conn, uids[:5])
    history.commit()
    size = history.store.size
    history.writer.compact()
    assert (sorted(segment_files(tmp_path / PAYLOADS_DIR)), history.store.size) == ([1], size)


def test_a_closed_clusters_spec_is_purged_once_the_cluster_is_forgotten(tmp_path: Path) -> None:
    history = History(tmp_path)
    conn = history.open_cluster("c1", spec_size=500)
    uids = history.submit(conn, "c1", [100] * 2)
    history.cancel(conn, uids)
    history.ack(conn, uids)
    history.close(conn, "c1")
    history.commit()
    assert "c1" not in history.state.clusters
    history.writer.compact()
    assert (segment_files(tmp_path / PAYLOADS_DIR), history.store.size) == ({}, 0)


def test_results_purged_after_the_retention_time_leave_the_store(tmp_path: Path) -> None:
    history = History(tmp_path, result_retention=60.0)
    conn = history.open_cluster("c1", spec_size=40)
    node = history.node("n1", cpus=2)
    history.submit(conn, "c1", [100] * 4)
    history.run_all(node, "n1", size=1000)
    history.disconnect(conn)  # nobody comes for the results
    history.commit()
    assert history.store.live_bytes() > 4 * 1000
    history.tick(120.0)
    history.commit()
    assert history.state.jobs == {}
    history.writer.compact()
    assert history.store.size == 0


# --- inspect ----------------------------------------------------------------------------------------------


def test_inspect_shows_payload_references_and_the_stores_size(tmp_path: Path) -> None:
    history = History(tmp_path, segment_bytes=1000)
    conn = history.open_cluster("c1", spec_size=200)
    history.submit(conn, "c1", [300] * 4)
    history.commit()
    history.close_files()
    inspection = inspect_journal(tmp_path / JOURNAL_NAME)
    doc = inspection.to_dict()
    files = segment_files(tmp_path / PAYLOADS_DIR)
    assert doc["payloads"]["bytes"] == sum(p.stat().st_size for p in files.values())
    assert doc["payloads"]["segments"] == {p.name: p.stat().st_size for p in files.values()}
    assert (doc["payloads"]["refs"], doc["payloads"]["bad"]) == (5, [])
    assert [r["refs"] for r in doc["records"]] == [["1:0+200"], ["1:208+300", "1:516+300", "2:0+300", "2:308+300"]]
    text = render(inspection)
    assert "refs=1:208+300,1:516+300,2:0+300 +1 more" in text
    assert f"payloads {tmp_path / PAYLOADS_DIR} (2 segments, {doc['payloads']['bytes']} bytes" in text
    assert not inspection.corrupt


def test_inspect_reports_a_payload_that_does_not_read_back_as_corruption(tmp_path: Path) -> None:
    history = History(tmp_path)
    conn = history.open_cluster("c1", spec_size=200)
    history.submit(conn, "c1", [300])
    history.commit()
    history.close_files()
    segment = tmp_path / PAYLOADS_DIR / "seg-000001.dat"
    data = bytearray(segment.read_bytes())
    data[-5] ^= 0xFF
    segment.write_bytes(bytes(data))
    inspection = inspect_journal(tmp_path / JOURNAL_NAME)
    assert inspection.corrupt and inspection.corrupt_offset is None
    assert [ref for ref, _error in inspection.payloads.bad] == ["1:208+300"]  # type: ignore[union-attr]
    assert f"BAD PAYLOAD 1:208+300: payload store {segment} is corrupt at offset 208: checksum mismatch" in render(
        inspection)


def test_a_store_grown_past_the_limit_calls_for_a_compaction_though_the_log_is_small(tmp_path: Path) -> None:
    history = History(tmp_path, compact_bytes=10_000)
    conn = history.open_cluster("c1", spec_size=40)
    history.submit(conn, "c1", [1000] * 5)
    history.commit()
    assert not history.writer.should_compact()
    history.submit(conn, "c1", [1000] * 6, first=5)
    history.commit()
    assert history.journal.size < 10_000 < history.store.size
    assert history.writer.should_compact()
    history.writer.compact()
    assert not history.writer.should_compact()  # everything lives: not again before the store doubles

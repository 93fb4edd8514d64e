"""A job's output, bounded while it runs: head, tail, the marker, exact counts, cut characters."""

from __future__ import annotations

import re
import sys
import tracemalloc
from pathlib import Path

import pytest
from nodeharness import function_cluster, install, program_cluster, task, value

from fairpool import nodeconfig
from fairpool.clusterspec import DependFile
from fairpool.config import ConfigError, load_node_config
from fairpool.nodes.jobs import ClusterRuntime
from fairpool.nodes.outputcap import DEFAULT_MAX_OUTPUT, MIN_MAX_OUTPUT, CappedText, OutputCap

MARKER = re.compile(r"\n\[\.\.\. (\d+) bytes of output dropped: the node keeps at most (\d+) bytes of a job's "
                    r"(stdout|stderr); see max_output \.\.\.\]\n")


def split(text: str) -> tuple[str, int, str]:
    """(head, bytes dropped, tail) of a capped output that has a marker."""
    match = MARKER.search(text)
    assert match is not None, text[:200]
    return text[: match.start()], int(match.group(1)), text[match.end():]


def test_output_within_the_limit_is_kept_whole_without_marker():
    cap = OutputCap(1024)
    cap.feed(b"a" * 600)
    cap.feed(b"b" * 424)
    assert cap.getvalue() == "a" * 600 + "b" * 424
    assert cap.total == 1024 and cap.dropped == 0


def test_output_over_the_limit_keeps_head_and_tail_with_exact_dropped_count():
    cap = OutputCap(1024)
    data = bytes(range(48, 58)) * 1000  # 10_000 bytes of digits
    for start in range(0, len(data), 7):
        cap.feed(data[start:start + 7])
    head, dropped, tail = split(cap.getvalue())
    assert head.encode() == data[:512]
    assert tail.encode() == data[-512:]
    assert dropped == len(data) - 1024 == cap.dropped
    assert cap.total == len(data)


def test_marker_names_the_stream_and_the_limit():
    cap = OutputCap(2048, "stderr")
    cap.feed(b"x" * 5000)
    match = MARKER.search(cap.getvalue())
    assert match is not None and match.group(2) == "2048" and match.group(3) == "stderr"


def test_one_huge_write_keeps_only_its_end_in_the_tail():
    cap = OutputCap(1024)
    cap.feed(b"h" * 100)
    cap.feed(b"m" * 1_000_000 + b"END")
    head, dropped, tail = split(cap.getvalue())
    assert head == "h" * 100 + "m" * 412
    assert tail.endswith("END") and len(tail) == 512
    assert dropped == 1_000_103 - 1024


def test_tail_memory_stays_bounded_however_much_is_fed():
    cap = OutputCap(4096)
    for _ in range(100_000):
        cap.feed(b"0123456789" * 3)
        assert len(cap.tail) <= 2 * cap.tail_limit
    assert len(cap.head) == 2048


def test_capped_text_memory_stays_bounded_while_printing_megabytes():
    out = CappedText(64 * 1024)
    tracemalloc.start()
    try:
        for i in range(200_000):  # ~ 5 MB of lines
            print(f"line {i:>8} of the job's chatter", file=out)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024
    head, _dropped, tail = split(out.getvalue())
    assert head.startswith("line        0 of")
    assert tail.endswith("line   199999 of the job's chatter\n")


@pytest.mark.parametrize("offset", range(4))
def test_multibyte_characters_cut_at_head_or_tail_are_left_out_not_garbled(offset):
    out = CappedText(1024)
    out.write("a" * offset + "€" * 3000 + "z" * offset)  # "€" is 3 bytes in UTF-8
    head, dropped, tail = split(out.getvalue())
    assert "\ufffd" not in head and "\ufffd" not in tail
    assert head == "a" * offset + "€" * ((512 - offset) // 3)
    assert tail.endswith("z" * offset) and set(tail.rstrip("z")) == {"€"}
    total = offset * 2 + 3 * 3000
    assert dropped == total - len(head.encode()) - len(tail.encode())


def test_lone_surrogates_and_non_str_writes():
    out = CappedText(1024)
    assert out.write("bad \udc80 char") == len("bad \udc80 char")
    assert out.getvalue() == "bad ? char"
    with pytest.raises(TypeError):
        out.write(b"bytes")  # type: ignore[arg-type]


def test_a_limit_below_the_minimum_is_refused():
    with pytest.raises(ValueError, match="at least 1024"):
        OutputCap(100)


# --- the setting -----------------------------------------------------------------------


def test_node_max_output_defaults_and_parses_sizes():
    assert load_node_config(None, {}).max_output == DEFAULT_MAX_OUTPUT
    assert nodeconfig.MIN_MAX_OUTPUT == MIN_MAX_OUTPUT  # the setting's floor is the capture's
    assert load_node_config(None, {"max_output": "1M"}).max_output == 1024 * 1024
    assert load_node_config(None, {"max_output": "256K"}).max_output == 256 * 1024


@pytest.mark.parametrize("bad", ["0", 0, "100", "lots"])
def test_node_max_output_refuses_zero_tiny_and_junk(bad):
    with pytest.raises(ConfigError, match="max.output"):
        load_node_config(None, {"max_output": bad})


def test_node_max_output_must_fit_in_a_message():
    with pytest.raises(ConfigError, match="quarter of max_frame_size"):
        load_node_config(None, {"max_output": "1M", "max_frame_size": "2M"})


# --- jobs, run in this process -------------------------------------------------------------


def flood(lines):
    for i in range(lines):
        print(f"out line {i}")
        print(f"err line {i}", file=sys.stderr)
    return lines


def noisy_setup():
    print("setup says hi")


@pytest.fixture
def base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # a function job's cluster chdirs into its working directory
    monkeypatch.setattr(sys, "path", list(sys.path))
    path = tmp_path / "clusters"
    path.mkdir()
    return path


def test_function_job_output_is_capped_on_both_streams(base):
    cluster = function_cluster("c1", flood, noisy_setup)
    install(base, cluster)
    runtime = ClusterRuntime("c1", cluster.spec, base / "c1", max_output=4096)
    result = runtime.run(task("j1", "c1", 100_000))
    assert result.status == "FINISHED" and value(result) == 100_000
    for text, stream in ((result.stdout, "out"), (result.stderr, "err")):
        head, dropped, tail = split(text)
        assert len(head.encode()) + len(tail.encode()) <= 4096
        assert dropped > 1_000_000
        assert tail.endswith(f"{stream} line 99999\n")
    assert result.stdout.startswith("setup says hi\nout line 0\n")
    assert result.stderr.startswith("err line 0\n")


def test_program_job_output_is_capped_on_both_streams(base):
    script = b'#!/bin/sh\ni=0\nwhile [ $i -lt 20000 ]; do echo "out $i"; echo "err $i" >&2; i=$((i+1)); done\nexit 4\n'
    files = [DependFile("loud.sh", script, 0o755)]
    cluster = program_cluster("p1", "loud.sh", files)
    install(base, cluster, files)
    runtime = ClusterRuntime("p1", cluster.spec, base / "p1", max_output=2048)
    result = runtime.run(task("j1", "p1"))
    assert result.status == "FINISHED" and result.exit_code == 4
    for text, stream in ((result.stdout, "out"), (result.stderr, "err")):
        head, dropped, tail = split(text)
        assert head.startswith(f"{stream} 0\n{stream} 1\n")
        assert tail.endswith(f"{stream} 19999\n")
        assert dropped == sum(len(f"{stream} {i}\n") for i in range(20000)) - len(head) - len(tail)

"""split_news: a batch of job news cut into messages of bounded size, in an order consumers rely on."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fairpool.messages import FileChunk, JobProvisional, JobResult, JobStarted
from fairpool.newsbatch import news_size, split_news

_items = st.lists(st.tuples(st.sampled_from(["started", "result", "provisional", "file"]),
                            st.integers(0, 5), st.integers(0, 300)), max_size=40)


def _batch(items: list[tuple[str, int, int]]) -> tuple[list[JobStarted], list[JobResult],
                                                        list[JobProvisional], list[FileChunk]]:
    started: list[JobStarted] = []
    results: list[JobResult] = []
    provisional: list[JobProvisional] = []
    files: list[FileChunk] = []
    for n, (kind, job, size) in enumerate(items):
        uid = f"j{job}"
        if kind == "started":
            started.append(JobStarted(f"s{n}", "n1", 1.0))
        elif kind == "result":
            results.append(JobResult(f"{uid}.{n}", "FINISHED", b"r" * size))
        elif kind == "provisional":
            provisional.append(JobProvisional(f"{uid}.{n}", b"p" * size, 1.0))
        else:
            files.append(FileChunk(f"{uid}.{n}", "out.txt", n, b"f" * size, False))
    return started, results, provisional, files


@settings(max_examples=300, deadline=None)
@given(items=_items, budget=st.integers(1, 2000))
def test_the_parts_hold_the_batch_in_order_each_within_the_budget_or_alone(
        items: list[tuple[str, int, int]], budget: int) -> None:
    started, results, provisional, files = _batch(items)
    parts = split_news(started, results, provisional, files, budget)
    assert [s for p in parts for s in p[0]] == started
    assert [r for p in parts for r in p[1]] == results
    assert [v for p in parts for v in p[2]] == provisional
    assert [f for p in parts for f in p[3]] == files
    for part in parts:
        assert any(part) or not items, "no empty message"
        # within the budget (the tasks started aside: they go with the first results), or one item alone
        assert news_size([], *part[1:]) <= budget or sum(len(group) for group in part[1:]) == 1


@settings(max_examples=300, deadline=None)
@given(items=_items, budget=st.integers(1, 2000))
def test_a_jobs_files_and_provisional_results_never_come_after_a_result(
        items: list[tuple[str, int, int]], budget: int) -> None:
    started, results, provisional, files = _batch(items)
    parts = split_news(started, results, provisional, files, budget)
    first_result = min((n for n, p in enumerate(parts) if p[1]), default=len(parts))
    last_news = max((n for n, p in enumerate(parts) if p[2] or p[3]), default=-1)
    assert last_news <= first_result  # (in the same part, a consumer applies them before its results)


def test_a_batch_that_fits_is_one_message_as_it_was() -> None:
    started, results, provisional, files = _batch([("started", 0, 0), ("result", 1, 10), ("file", 2, 10)])
    assert split_news(started, results, provisional, files, 10_000) == [(started, results, provisional, files)]


def test_large_results_go_one_per_message() -> None:
    results = [JobResult(f"j{n}", "FINISHED", b"x" * 1000) for n in range(4)]
    parts = split_news([JobStarted("s", "n1", 1.0)], results, [], [], budget=1500)
    assert [len(p[1]) for p in parts] == [1, 1, 1, 1]
    assert parts[0][0] == [JobStarted("s", "n1", 1.0)]  # the tasks started go with the first results

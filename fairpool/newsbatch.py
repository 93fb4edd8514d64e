"""Splitting a batch of job news into messages of bounded size.

A node reports its jobs' news to the scheduler (``NodeProgress``) and the
scheduler to a client (``JobsUpdate``) in batches: tasks started, results,
provisional results and file chunks. After an outage a batch holds
everything that piled up -- a hundred results of 100 MB each -- and as one
frame it would exceed the receiver's ``max_frame_size``: refused, the
connection dropped, the same batch sent again on reconnecting, forever.

``split_news`` cuts a batch into parts of about ``budget`` bytes each (an
item larger than the budget goes alone: it fits a frame, since payloads are
limited to less than one). Order is kept the way the consumers rely on: file
chunks first, then provisional results, then the results, so that a job's
files and provisional results never arrive after its result; the tasks
started go with the first part of results.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from fairpool.messages import FileChunk, JobProvisional, JobResult, JobStarted

#: Bytes of payloads, outputs and file data per message, by default: far below any frame limit.
NEWS_BUDGET = 16 * 1024 * 1024
#: What a news item costs beyond its data (uid, status, times, framing).
ITEM_OVERHEAD = 64

News = tuple[list[JobStarted], list[JobResult], list[JobProvisional], list[FileChunk]]
_T = TypeVar("_T")


def result_size(result: JobResult) -> int:
    return (len(result.payload) + len(result.stdout) + len(result.stderr) + len(result.traceback)
            + len(result.reason) + ITEM_OVERHEAD)


def provisional_size(value: JobProvisional) -> int:
    return len(value.payload) + ITEM_OVERHEAD


def chunk_size(chunk: FileChunk) -> int:
    return len(chunk.data) + len(chunk.name) + ITEM_OVERHEAD


def news_size(started: Sequence[JobStarted], results: Sequence[JobResult],
              provisional: Sequence[JobProvisional], files: Sequence[FileChunk]) -> int:
    return (len(started) * ITEM_OVERHEAD + sum(map(result_size, results))
            + sum(map(provisional_size, provisional)) + sum(map(chunk_size, files)))


def _cut(items: list[_T], cost: Callable[[_T], int], budget: int) -> list[list[_T]]:
    parts: list[list[_T]] = []
    part: list[_T] = []
    used = 0
    for item in items:
        size = cost(item)
        if part and used + size > budget:
            parts.append(part)
            part, used = [], 0
        part.append(item)
        used += size
    if part:
        parts.append(part)
    return parts


def split_news(started: list[JobStarted], results: list[JobResult], provisional: list[JobProvisional],
               files: list[FileChunk], budget: int = NEWS_BUDGET) -> list[News]:
    """The batch as one part if it fits ``budget``, else as several, in the order to send them."""
    if news_size(started, results, provisional, files) <= budget:
        return [(started, results, provisional, files)]
    parts: list[News] = [([], [], [], chunks) for chunks in _cut(files, chunk_size, budget)]
    parts += [([], [], values, []) for values in _cut(provisional, provisional_size, budget)]
    result_parts = _cut(results, result_size, budget)
    if started or result_parts:
        first = result_parts[0] if result_parts else []
        parts.append((started, first, [], []))
        parts += [([], more, [], []) for more in result_parts[1:]]
    return parts

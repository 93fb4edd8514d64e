"""A job's captured output, bounded while the job runs: its head, its tail and what was dropped.

A job that prints gigabytes must not take the worker's memory, nor the
node's, the scheduler's, the journal's or the client's, with it. Like the
batch systems users know (Slurm and HTCondor truncate, Ray keeps a tail), a
node keeps at most ``max_output`` bytes of each stream of a job (its
``max_output`` setting, ``DEFAULT_MAX_OUTPUT`` unless set): the first half
as it came, the last half in a tail buffer that keeps only the newest bytes,
so that both how a job started and the error it ended with are seen. What
fell between them is replaced by one marker line saying how many bytes were
dropped and which setting to raise.

``OutputCap`` counts and keeps bytes (a program's pipes feed it);
``CappedText`` is the text stream a function job's ``sys.stdout`` and
``sys.stderr`` become. Byte counts are of the UTF-8 encoding. A multi-byte
character cut at the head's end or the tail's start is left out (counted
as dropped) rather than shown as garbage.
"""

from __future__ import annotations

import io

#: Bytes of a job's stdout (and, apart, of its stderr) a node keeps by default: 64 KiB head + 64 KiB tail.
DEFAULT_MAX_OUTPUT = 128 * 1024
#: The least ``max_output`` may be: room for a useful head and tail.
MIN_MAX_OUTPUT = 1024
#: A long string is encoded this many characters at a time, so a huge print is never encoded whole.
_CHUNK_CHARS = 1 << 20


def marker(dropped: int, limit: int, stream: str) -> str:
    """The line that stands where ``dropped`` bytes of the job's ``stream`` were left out."""
    return (f"\n[... {dropped} bytes of output dropped: the node keeps at most {limit} bytes of a job's "
            f"{stream}; see max_output ...]\n")


def _complete_head(head: bytes) -> bytes:
    """``head`` without a UTF-8 sequence cut short at its end."""
    for back in range(1, min(4, len(head)) + 1):
        byte = head[-back]
        if byte < 0x80:
            return head  # ASCII: nothing cut
        if byte >= 0xC0:  # the lead byte of the last sequence: is it whole?
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return head if back >= need else head[:-back]
    return head


def _complete_tail(tail: bytes) -> bytes:
    """``tail`` without the continuation bytes of a sequence whose start was dropped."""
    skip = 0
    while skip < min(3, len(tail)) and 0x80 <= tail[skip] < 0xC0:
        skip += 1
    return tail[skip:]


class OutputCap:
    """Bytes of one output stream: the first ``limit // 2`` kept, then only the newest ones.

    Memory stays under ``2 * limit`` however much is fed; ``total`` counts every byte.
    """

    def __init__(self, limit: int = DEFAULT_MAX_OUTPUT, stream: str = "stdout") -> None:
        if limit < MIN_MAX_OUTPUT:
            raise ValueError(f"max_output must be at least {MIN_MAX_OUTPUT} bytes, got {limit}")
        self.limit = limit
        self.stream = stream
        self.head_limit = limit // 2
        self.tail_limit = limit - self.head_limit
        self.head = bytearray()
        self.tail = bytearray()  # trimmed to its newest tail_limit bytes once it doubles
        self.total = 0

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        size = len(data)
        if not size:
            return
        self.total += size
        room = self.head_limit - len(self.head)
        if room >= size:
            self.head += data
            return
        view = memoryview(data)
        if room > 0:
            self.head += view[:room]
            view = view[room:]
        if len(view) >= self.tail_limit:
            self.tail[:] = view[len(view) - self.tail_limit:]
            return
        self.tail += view
        if len(self.tail) > 2 * self.tail_limit:  # amortised: one cut per tail_limit bytes fed
            del self.tail[: len(self.tail) - self.tail_limit]

    @property
    def dropped(self) -> int:
        """Bytes fed but not kept (0 while everything fits)."""
        kept = len(self.head) + min(len(self.tail), self.tail_limit)
        return self.total - kept

    def getvalue(self) -> str:
        """The kept output as text: all of it, or head + marker + tail."""
        if not self.total:
            return ""
        if self.total <= self.limit:
            return (bytes(self.head) + bytes(self.tail)).decode(errors="replace")
        head = _complete_head(bytes(self.head))
        tail = _complete_tail(bytes(self.tail[-self.tail_limit:]))
        dropped = self.total - len(head) - len(tail)
        return (head.decode(errors="replace") + marker(dropped, self.limit, self.stream)
                + tail.decode(errors="replace"))


class CappedText(io.TextIOBase):
    """A write-only text stream over an ``OutputCap``: what ``sys.stdout`` is while a job runs."""

    def __init__(self, limit: int = DEFAULT_MAX_OUTPUT, stream: str = "stdout") -> None:
        super().__init__()
        self.cap = OutputCap(limit, stream)

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        # "replace": a lone surrogate would not survive the trip to the client either
        if len(text) <= _CHUNK_CHARS:
            data = text.encode("utf-8", "replace")
            cap = self.cap
            if len(cap.head) + len(data) <= cap.head_limit:  # (the common case, kept short: jobs print a lot)
                cap.head += data
                cap.total += len(data)
            else:
                cap.feed(data)
        else:
            for start in range(0, len(text), _CHUNK_CHARS):
                self.cap.feed(text[start:start + _CHUNK_CHARS].encode("utf-8", "replace"))
        return len(text)

    def getvalue(self) -> str:
        return self.cap.getvalue()

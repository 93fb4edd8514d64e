"""Service windows: whether a node takes new jobs at a given local time, and when that changes.

A node started with ``--serve-hours 18:00-08:00`` (``serve_hours`` in its
config) takes jobs only inside its windows; outside them it tells the
scheduler it takes none and lets its running jobs finish. The windows come
from ``fairpool.config`` already parsed, as ``(start, end)`` minutes of the
day: ``start`` in 0..1439, ``end`` in 1..1440 (1440 is "24:00"); a window
whose end is not after its start runs past midnight. Start is inclusive,
end exclusive. No windows at all means always serving.

Pure: every function takes the time it is asked about (a naive local
``datetime``), so the daemon and the tests agree on what any moment means.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

Window = tuple[int, int]
MINUTES_PER_DAY = 24 * 60
#: Boundaries are looked for this many days ahead: windows repeat daily, so two full days suffice.
_DAYS_AHEAD = 3


def _minute_of_day(at: datetime) -> float:
    return at.hour * 60 + at.minute + at.second / 60 + at.microsecond / 60_000_000


def inside(window: Window, minute: float) -> bool:
    """Whether ``minute`` (of the day, fractional) falls in ``window``."""
    start, end = window
    if start < end:
        return start <= minute < end
    return minute >= start or minute < end  # runs past midnight


def serving(windows: Sequence[Window], at: datetime) -> bool:
    """Whether a node with these windows takes new jobs at ``at`` (no windows: always)."""
    if not windows:
        return True
    minute = _minute_of_day(at)
    return any(inside(window, minute) for window in windows)


def next_change(windows: Sequence[Window], at: datetime) -> datetime | None:
    """The first moment after ``at`` when ``serving`` flips; None if it never does."""
    if not windows:
        return None
    now = serving(windows, at)
    midnight = at.replace(hour=0, minute=0, second=0, microsecond=0)
    boundaries = sorted({midnight + timedelta(days=day, minutes=edge)
                         for day in range(_DAYS_AHEAD) for window in windows for edge in window})
    for boundary in boundaries:
        # overlapping windows: a boundary inside another window changes nothing
        if boundary > at and serving(windows, boundary) != now:
            return boundary
    return None


def describe(windows: Sequence[Window]) -> str:
    """The windows as a user writes them: ``"18:00-08:00,12:00-13:00"`` ("always" if none)."""
    if not windows:
        return "always"
    return ",".join(f"{_clock(start)}-{_clock(end)}" for start, end in windows)


def _clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"

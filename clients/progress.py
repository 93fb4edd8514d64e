"""A text progress bar for waiting on many jobs (``cluster.wait(progress=True)``)."""

from __future__ import annotations

PROGRESS_EVERY = 0.25  # seconds between redraws
WIDTH = 30


def progress_line(done: int, total: int) -> str:
    """``[#########.....]  37/100 jobs ended (37%)``"""
    fraction = done / total if total else 1.0
    filled = round(WIDTH * fraction)
    return f"[{'#' * filled}{'.' * (WIDTH - filled)}] {done:>{len(str(total))}}/{total} jobs ended ({fraction:.0%})"

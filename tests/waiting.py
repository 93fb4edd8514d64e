"""Waiting for a condition under a deadline, in place of sleeps: ``wait_for`` (sync) and ``async_wait_for`` (trio).

Tests import them as ``from conftest import wait_for`` (conftest re-exports
them) or from here. A timeout is an ``AssertionError`` naming what was awaited:
``message``, else the predicate's source.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any, TypeVar

import trio

POLL = 0.02

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 20.0, interval: float = POLL,
             message: str | None = None) -> T:
    """Poll ``predicate`` until it returns something truthy (returned) or ``timeout`` passes (AssertionError)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting until {message or _describe(predicate)}")
        time.sleep(interval)


async def async_wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = POLL,
                         message: str | None = None) -> Any:
    """``wait_for`` for trio tests; ``predicate`` may be sync or async."""
    deadline = trio.current_time() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if trio.current_time() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting until {message or _describe(predicate)}")
        await trio.sleep(interval)


def _describe(predicate: Callable[..., Any]) -> str:
    try:
        return inspect.getsource(predicate).strip()
    except (OSError, TypeError):
        return repr(predicate)

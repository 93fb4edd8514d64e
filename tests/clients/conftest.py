"""Client test fixtures: the fake scheduler of ``clientfake``, fast timings, a secret file.

``clientfake`` is importable under --import-mode=importlib too: this directory is
appended to sys.path (appended, so ``from conftest import ...`` keeps finding
tests/conftest.py).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.append(_HERE)

from clientfake import FAST_TIMING, SECRET, FakeScheduler  # noqa: E402

from fairpool.clients import connection  # noqa: E402


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Recover files land in the working directory: keep them out of the checkout.
    monkeypatch.chdir(tmp_path)
    for name in ("FAIRPOOL_SCHEDULER", "FAIRPOOL_SECRET_FILE", "FAIRPOOL_TENANT", "FAIRPOOL_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fast_timing(monkeypatch: pytest.MonkeyPatch) -> connection.ConnectionTiming:
    monkeypatch.setattr(connection, "DEFAULT_TIMING", FAST_TIMING)
    return FAST_TIMING


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    path.write_bytes(SECRET + b"\n")
    return path


@pytest.fixture
def make_fake(fast_timing: connection.ConnectionTiming) -> Iterator[Callable[..., FakeScheduler]]:
    started: list[FakeScheduler] = []

    def make(**options: Any) -> FakeScheduler:
        fake = FakeScheduler(**options).start()
        started.append(fake)
        return fake

    yield make
    for fake in started:
        fake.stop()


@pytest.fixture
def fake(make_fake: Callable[..., FakeScheduler]) -> FakeScheduler:
    return make_fake()

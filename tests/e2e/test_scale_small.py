"""The scale benchmark in small (``bench/scale.py``): correctness only, never wall-clock.

Twenty simulated nodes (real protocol peers, in one process) and four client
processes of different tenants against a real scheduler: every job is done,
every result is right, and each job ran exactly once -- no job lost, none
run twice, none run that nobody submitted.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.timeout(180)

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load_scale() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fairpool_bench_scale", BENCH / "scale.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_twenty_simulated_nodes_and_four_clients_run_every_job_exactly_once(tmp_path: Path) -> None:
    scale = _load_scale()
    report = scale.run_scale(nodes=20, clients=4, jobs=150, batch=30, workdir=tmp_path, deadline=150)
    assert report.jobs == 4 * 150
    assert report.wrong_or_failed == 0
    assert report.never_ran == 0 and report.ran_twice == 0 and report.ran_unsubmitted == 0
    assert report.nodes_lost == []
    assert report.correct

"""The policies compiled with mypyc behave as the pure ones: their tests, run against a compiled build.

A regular install compiles ``fairpool.policies`` (setup.py); the test suite
itself runs on an editable install, which does not. Compiled code differs in
ways the pure tests cannot see (a fixed-shape tuple is unboxed, so two copies
of one entry are no longer the same object; a class must allow interpreted
subclasses for a third-party policy to build on it), so this builds the
policies as setup.py does, in a scratch copy of the package, and runs the
policy, simulator and scheduler-state tests against it in a child pytest.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SUITES = ["tests/policies", "tests/scheduler/test_simulator.py", "tests/scheduler/test_state.py",
          "tests/scheduler/test_state_jobs.py", "tests/scheduler/test_fairness.py"]

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("mypyc") is None, reason="mypyc is not installed"),
    pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None, reason="no C compiler"),
    pytest.mark.timeout(600),
]


def test_the_policy_tests_pass_against_the_compiled_policies(tmp_path: Path) -> None:
    # a regular install into a scratch folder, through setup.py as a user's ``pip install .``
    built = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                            "--no-build-isolation", "--target", str(tmp_path), str(REPO)],
                           capture_output=True, text=True, timeout=540)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]

    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    check = subprocess.run([sys.executable, "-c", "import fairpool.policies as p; print(p.compiled())"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert check.stdout.strip() == "True", check.stdout + check.stderr + built.stderr[-3000:]

    # the pytest script, not ``python -m pytest``: -m would put the repository (whose fairpool/
    # holds only the trunk modules) ahead of the compiled copy on sys.path
    pytest_script = Path(sys.executable).with_name("pytest")
    run = subprocess.run([str(pytest_script), "-q", "-x", "-p", "no:cacheprovider",
                          f"--ignore={Path(__file__).relative_to(REPO)}", *SUITES],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=540)
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]
    assert " passed" in run.stdout

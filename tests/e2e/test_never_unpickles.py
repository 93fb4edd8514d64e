"""SPEC promise 5, with malicious pickles: the scheduler never unpickles, on any path.

A cluster whose computation, arguments, provisional result and result are
pickles with a ``__reduce__`` that creates a marker file named after the
process unpickling them (``unpickled-TAG-PID``) goes through every path of a
real scheduler: submitted and journaled while no node is up, the scheduler
killed -9 and restarted (the journal replayed, the spec and arguments read
back from disk), listed and shown to an admin, dispatched to a node that
joins only then, and the results carried back to the client. The node's
workers and the client unpickle (that is their job: markers with their pids
appear, which proves the markers work); no marker ever carries the pid of a
scheduler process. One of the payloads is a classic hand-made pickle that
calls ``eval``, loadable by the plain ``pickle`` module anywhere.

Statically: no module of the scheduler, its policies or the trunk modules it
imports imports a pickle-like module or calls a ``loads``; and a real
scheduler process never imports cloudpickle or dill (its import log, from
``PYTHONPROFILEIMPORTTIME``, says so).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from conftest import admin_json, wait_for

from fairpool import JobStatus, SharedJobCluster, provisional_result

pytestmark = pytest.mark.timeout(180)

REPO = Path(__file__).resolve().parents[2]
# Modules whose presence in the scheduler would mean it can unpickle tenant data.
PICKLERS = frozenset({"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "marshal", "shelve", "copyreg",
                      "jsonpickle", "joblib", "pickletools"})
NEVER_IMPORTED = ("cloudpickle", "dill", "jsonpickle", "joblib")

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the node has no copy of this test module


def _touch_marker(directory: str, tag: str, value: Any) -> Any:
    """What unpickling a ``Marked`` runs, in whichever process does it."""
    import os as _os

    with open(_os.path.join(directory, f"unpickled-{tag}-{_os.getpid()}"), "w"):
        pass
    return value


class Marked:
    """A value (or a callable) whose pickle leaves a marker file behind when it is loaded."""

    def __init__(self, directory: str, tag: str, value: Any) -> None:
        self.directory, self.tag, self.value = directory, tag, value

    def __call__(self, *args: Any) -> Any:
        return self.value(*args)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_touch_marker, (self.directory, self.tag, self.value))


class EvalMarked:
    """The classic attack: ``builtins.eval`` of a string, by reference: any ``pickle.loads`` runs it."""

    def __init__(self, directory: str, tag: str, value: int) -> None:
        self.expression = (f"(__import__('os').close(__import__('os').open({directory!r} + '/unpickled-{tag}-' "
                           f"+ str(__import__('os').getpid()), 0o101)), {value})[1]")

    def __reduce__(self) -> tuple[Any, ...]:
        return (eval, (self.expression,))


def markers(directory: Path) -> dict[str, set[int]]:
    """Tag -> the pids of the processes that unpickled a payload of that tag."""
    found: dict[str, set[int]] = {}
    for path in directory.glob("unpickled-*"):
        _, tag, pid = path.name.rsplit("-", 2) if path.name.count("-") >= 2 else (None, path.name, "0")
        found.setdefault(tag, set()).add(int(pid))
    return found


@pytest.fixture(autouse=True)
def import_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """Daemons started by this module's tests log every module they import (stderr)."""
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")


def imported_modules(log: str) -> set[str]:
    return {line.rsplit("|", 1)[1].strip() for line in log.splitlines() if line.startswith("import time:")}


def test_scheduler_never_unpickles_on_submit_replay_dispatch_or_result_paths(scheduler, start_node, cluster_kwargs,
                                                                            tmp_path, wait_for_log):
    marks = tmp_path / "markers"
    marks.mkdir()
    directory = str(marks)

    def compute(n):
        provisional_result(Marked(directory, "provisional", n))
        return Marked(directory, "result", n * 3)

    scheduler_pids = {scheduler.pid}
    with SharedJobCluster(Marked(directory, "spec", compute), **cluster_kwargs) as cluster:
        jobs = [cluster.submit(Marked(directory, "args", 14)), cluster.submit(EvalMarked(directory, "eval", 5))]
        wait_for(lambda: all(job.status is JobStatus.QUEUED for job in jobs), message="both jobs are QUEUED")
        listed = admin_json(scheduler, "jobs")
        assert {job["uid"] for job in listed} >= {job.uid for job in jobs}
        admin_json(scheduler, "jobs", "show", jobs[0].uid)

        scheduler.restart(kill=True)  # -9: the journal is replayed, spec and arguments read back from disk
        scheduler_pids.add(scheduler.pid)
        wait_for(lambda: len(admin_json(scheduler, "jobs")) >= 2, message="the jobs are back after the replay")
        # Provisional results are not journaled: they reach a client that is connected when they
        # come, so the client must be back before the job runs.
        wait_for_log(scheduler, "cluster reattached", timeout=60)

        start_node(cpus=1, name="n1")  # only now: the jobs are dispatched from the replayed state
        assert [job.result(timeout=90) for job in jobs] == [42, 15]
        assert jobs[0].provisional == 14

    found = markers(marks)
    # The markers work: the node's worker unpickled spec, arguments (both kinds); this client the results.
    assert found.get("spec") and found.get("args") and found.get("eval"), found
    assert found.get("result") == {os.getpid()}, found
    assert os.getpid() not in found["args"] | found["eval"] | found["spec"]
    # ...and no scheduler process ever did.
    for tag, pids in found.items():
        assert not pids & scheduler_pids, f"the scheduler (pids {sorted(scheduler_pids)}) unpickled the {tag} payload"
    modules = imported_modules(scheduler.log())
    assert modules, "no import log from the scheduler (PYTHONPROFILEIMPORTTIME)"
    assert not modules & set(NEVER_IMPORTED), f"the scheduler imported {sorted(modules & set(NEVER_IMPORTED))}"


# --- statically -------------------------------------------------------------------------------------


def scheduler_source_files() -> list[Path]:
    """scheduler/, policies/, and every trunk module a scheduler process imports."""
    code = ("import json, sys, fairpool.cli, fairpool.scheduler.daemon\n"
            "print(json.dumps(sorted(m.__file__ for n, m in list(sys.modules.items())\n"
            "    if n.startswith('fairpool') and getattr(m, '__file__', None))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60,
                         cwd=REPO)
    files = {Path(f).resolve() for f in json.loads(out.stdout)}
    files |= {p.resolve() for folder in ("scheduler", "policies") for p in (REPO / folder).rglob("*.py")}
    return sorted(f for f in files if f.suffix == ".py")


def pickle_uses(path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        elif isinstance(node, ast.Call):
            # __import__("pickle"), importlib.import_module("pickle"), x.loads(...) / x.load(...) on a pickler
            names = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            func = node.func
            if (isinstance(func, ast.Attribute) and func.attr in ("loads", "load", "Unpickler")
                    and isinstance(func.value, ast.Name) and func.value.id in PICKLERS):
                yield f"{path.name}:{node.lineno}: {func.value.id}.{func.attr}()"
            if not (isinstance(func, ast.Name) and func.id == "__import__"
                    or isinstance(func, ast.Attribute) and func.attr == "import_module"):
                continue
        else:
            continue
        for name in names:
            if name.split(".")[0] in PICKLERS:
                yield f"{path.name}:{node.lineno}: {name}"


def test_no_scheduler_module_can_unpickle():
    files = scheduler_source_files()
    assert any(f.name == "state.py" for f in files) and any(f.name == "protocol.py" for f in files)
    uses = [use for path in files for use in pickle_uses(path)]
    assert uses == [], "pickle machinery in the scheduler's code:\n" + "\n".join(uses)


def test_the_static_check_would_catch_an_unpickler(tmp_path):
    """The checker itself: each way of reaching a pickler is found."""
    bad = tmp_path / "bad.py"
    bad.write_text("import pickle\nfrom cloudpickle import loads\nimport importlib\n"
                   "importlib.import_module('marshal')\n__import__('dill')\npickle.loads(b'')\n")
    assert len(list(pickle_uses(bad))) == 5


def test_a_scheduler_process_does_not_import_cloudpickle():
    code = ("import sys, fairpool.cli, fairpool.scheduler.daemon\n"
            f"print(sorted(set({NEVER_IMPORTED!r}) & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60,
                         cwd=REPO)
    assert out.stdout.strip() == "[]"

"""Packing computations, depends and arguments (fairpool.clients.spec): no scheduler needed."""

from __future__ import annotations

import importlib
import json
import os
import stat
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from types import ModuleType

import cloudpickle
import pytest

from fairpool.clients.errors import ArgumentsError, ComputationError
from fairpool.clients.spec import is_user_module, pack_arguments, pack_spec
from fairpool.clusterspec import decode_spec, encode_spec

# Runs in a fresh interpreter whose sys.path lacks the user's module directory:
# loads the packed code, runs setup if any, then calls the computation.
NODE_SCRIPT = """
import json, sys, cloudpickle
computation, setup, cleanup = cloudpickle.loads(open(sys.argv[1], "rb").read())
if setup is not None:
    setup()
print(json.dumps(computation(*json.loads(sys.argv[2]))))
"""


def run_on_fake_node(tmp_path: Path, code: bytes, *args: object) -> object:
    blob = tmp_path / f"code-{uuid.uuid4().hex}.bin"
    blob.write_bytes(code)
    elsewhere = tmp_path / "node-cwd"
    elsewhere.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", NODE_SCRIPT, str(blob), json.dumps(list(args))],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write a module into tmp_path/mods and import it under a unique name."""
    created: list[str] = []

    def make(source: str) -> ModuleType:
        name = f"fp_usermod_{uuid.uuid4().hex[:12]}"
        moddir = tmp_path / "mods"
        moddir.mkdir(exist_ok=True)
        (moddir / f"{name}.py").write_text(source)
        monkeypatch.syspath_prepend(str(moddir))
        created.append(name)
        return importlib.import_module(name)

    yield make
    for name in created:
        if name in cloudpickle.list_registry_pickle_by_value():
            cloudpickle.unregister_pickle_by_value(sys.modules[name])
        sys.modules.pop(name, None)


USER_SOURCE = """
FACTOR = 7

class Box:
    def __init__(self, value):
        self.value = value

def helper(x):
    return Box(x * FACTOR).value
"""


def test_module_in_depends_is_shipped_by_value(tmp_path: Path, user_module) -> None:
    mod = user_module(USER_SOURCE)
    spec = pack_spec(mod.helper, depends=[mod])
    assert spec.kind == "function"
    assert run_on_fake_node(tmp_path, spec.code, 6) == 42


def test_module_of_a_function_in_depends_is_shipped_by_value(tmp_path: Path, user_module) -> None:
    mod = user_module(USER_SOURCE)
    helper = mod.helper

    def compute(x):
        return helper(x) + 1

    spec = pack_spec(compute, depends=[helper])
    assert run_on_fake_node(tmp_path, spec.code, 2) == 15


def test_setup_globals_are_visible_to_the_computation(tmp_path: Path, user_module) -> None:
    mod = user_module(
        "def setup():\n    global STATE\n    STATE = 100\n\ndef compute(x):\n    return x + STATE\n"
    )
    spec = pack_spec(mod.compute, depends=[mod], setup=mod.setup)
    assert run_on_fake_node(tmp_path, spec.code, 1) == 101


def test_lambda_and_closure_round_trip() -> None:
    offset = 10

    def closure(x):
        return x + offset

    for fn, expected in ((lambda x: x * 3, 12), (closure, 14)):
        computation, setup, cleanup = cloudpickle.loads(pack_spec(fn).code)
        assert computation(4) == expected
        assert setup is None and cleanup is None


def test_unpicklable_computation_is_a_clear_error() -> None:
    lock = threading.Lock()

    def uses_lock(x):
        with lock:
            return x

    with pytest.raises(ComputationError, match="cannot pickle the computation .*uses_lock"):
        pack_spec(uses_lock)


def test_non_callable_computation_is_refused() -> None:
    with pytest.raises(ComputationError, match="callable or the path of a program"):
        pack_spec(42)  # type: ignore[arg-type]


def test_depends_file_travels_with_name_bytes_and_mode(tmp_path: Path) -> None:
    data = tmp_path / "table.csv"
    data.write_bytes(b"a,b\n1,2\n")
    data.chmod(0o640)
    spec = pack_spec(len, depends=[str(data)])
    (only,) = spec.files
    assert (only.name, only.data, only.mode) == ("table.csv", b"a,b\n1,2\n", 0o640)
    assert decode_spec(encode_spec(spec)) == spec


def test_missing_depends_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(ComputationError, match=r"depends file .*nope\.txt' does not exist"):
        pack_spec(len, depends=[missing])


def test_directory_in_depends_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ComputationError, match="is a directory"):
        pack_spec(len, depends=[tmp_path])


def test_two_depends_files_with_one_name_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in ("a", "b"):
        (tmp_path / d / "same.txt").write_text(d)
    with pytest.raises(ComputationError, match="same.txt"):
        pack_spec(len, depends=[tmp_path / "a" / "same.txt", tmp_path / "b" / "same.txt"])


def test_program_path_becomes_an_executable_program_file(tmp_path: Path) -> None:
    script = tmp_path / "work.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    extra = tmp_path / "input.txt"
    extra.write_text("x")
    spec = pack_spec(str(script), depends=[extra])
    assert spec.kind == "program" and spec.program == "work.sh" and spec.code == b""
    program = spec.files[0]
    assert program.data == script.read_bytes()
    assert program.mode & stat.S_IXUSR
    assert [f.name for f in spec.files] == ["work.sh", "input.txt"]
    assert decode_spec(encode_spec(spec)) == spec  # the node's own validation accepts it


def test_missing_program_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ComputationError, match=r"program .*missing\.sh' does not exist"):
        pack_spec(tmp_path / "missing.sh")


def test_program_with_setup_is_refused(tmp_path: Path) -> None:
    script = tmp_path / "p.sh"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(ComputationError, match="not to a program"):
        pack_spec(script, setup=print)


def test_installed_stdlib_main_and_fairpool_modules_are_not_shipped(user_module) -> None:
    import json as stdlib_module

    import trio

    import fairpool.messages

    for module in (stdlib_module, trio, fairpool.messages, sys.modules["__main__"], sys):
        assert not is_user_module(module), module
    assert is_user_module(user_module("X = 1\n"))


def test_plain_arguments_pickle_exactly_like_cloudpickle() -> None:
    args, kwargs = (1, 2.5, "s", b"b", None, True), {"k": 3}
    assert pack_arguments(args, kwargs, 1 << 20) == cloudpickle.dumps((args, kwargs))


def test_arguments_with_functions_go_through_cloudpickle() -> None:
    payload = pack_arguments((lambda x: x + 1,), {}, 1 << 20)
    (fn,), _ = cloudpickle.loads(payload)
    assert fn(1) == 2


def test_unpicklable_or_oversized_arguments_are_refused() -> None:
    with pytest.raises(ArgumentsError, match="cannot pickle"):
        pack_arguments((threading.Lock(),), {}, 1 << 20)
    with pytest.raises(ArgumentsError, match="more than one message may carry"):
        pack_arguments((b"x" * 2000,), {}, 1000)

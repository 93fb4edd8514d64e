"""Packing what nodes need: the ``ClusterSpec`` (computation, depends, setup, cleanup) and job arguments.

A Python computation is pickled together with ``setup`` and ``cleanup`` in
one ``cloudpickle.dumps`` call, so that on the node the three share one
globals dict (what ``setup`` sets, jobs see). The user's own modules -- those
named in ``depends``, those defining a function or class in ``depends``, and
those defining the computation, setup or cleanup -- are registered with
cloudpickle to be pickled *by value*, so they need not be installed on the
nodes; the standard library, installed packages and fairpool itself are
expected there and go by reference. Files in ``depends`` travel as bytes and
land in the job's working directory. A computation given as a file path is a
program: the file itself is shipped with its mode, made executable.

Each job's arguments are pickled in the submitting thread by
``pack_arguments``; plain scalars take the stdlib pickler, which is several
times faster than cloudpickle and produces the same bytes for them; anything
else goes through ``fairpool.payload`` (cloudpickle, protocol 5, large
buffers such as a numpy array's data out of band: not copied into the pickle).

Everything is checked here, in the user's process, before anything connects:
a missing file or an unpicklable function is a ``ComputationError`` naming it.
"""

from __future__ import annotations

import inspect
import os
import pickle
import site
import stat
import sys
import sysconfig
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import cloudpickle

from fairpool.clients.errors import ArgumentsError, ComputationError
from fairpool.clusterspec import ClusterSpec, DependFile, is_safe_file_name
from fairpool.payload import dumps as dump_payload

Computation = Callable[..., Any] | str | os.PathLike[str]

#: Types whose pickle by the stdlib is exactly cloudpickle's (no code, no classes by value).
_PLAIN_TYPES = frozenset({int, float, str, bytes, bool, type(None), complex})


def pack_arguments(args: tuple[Any, ...], kwargs: dict[str, Any], limit: int,
                   limit_name: str = "one message may carry") -> bytes:
    """The job payload: ``(args, kwargs)`` pickled (``fairpool.payload``: large buffers out of band);
    ArgumentsError if it cannot be pickled or is over ``limit`` bytes (``limit_name`` says whose)."""
    plain = _PLAIN_TYPES
    try:
        if all(type(a) in plain for a in args) and all(type(v) in plain for v in kwargs.values()):
            payload = pickle.dumps((args, kwargs), cloudpickle.DEFAULT_PROTOCOL)
        else:
            payload = dump_payload((args, kwargs))
    except Exception as exc:
        raise ArgumentsError(f"cannot pickle the job's arguments: {exc}") from exc
    if len(payload) > limit:
        raise ArgumentsError(
            f"the job's arguments pickle to {len(payload)} bytes, more than {limit_name} ({limit} bytes)"
        )
    return payload


def pack_spec(
    computation: Computation,
    depends: Iterable[Any] = (),
    setup: Callable[..., Any] | None = None,
    cleanup: Callable[..., Any] | None = None,
) -> ClusterSpec:
    """The ClusterSpec for ``computation``; raises ComputationError with the reason."""
    depends = list(depends)
    for role, fn in (("setup", setup), ("cleanup", cleanup)):
        if fn is not None and not callable(fn):
            raise ComputationError(f"{role} must be a callable, not {fn!r}")
    if isinstance(computation, str | os.PathLike):
        return _pack_program(computation, depends, setup, cleanup)
    if not callable(computation):
        raise ComputationError(
            f"the computation must be a callable or the path of a program, not {computation!r}"
        )
    return _pack_function(computation, depends, setup, cleanup)


def _pack_function(
    computation: Callable[..., Any],
    depends: list[Any],
    setup: Callable[..., Any] | None,
    cleanup: Callable[..., Any] | None,
) -> ClusterSpec:
    files: list[DependFile] = []
    modules: list[ModuleType] = []
    for dep in depends:
        if isinstance(dep, str | os.PathLike):
            files.append(read_depend_file(dep))
        elif isinstance(dep, ModuleType):
            modules.append(dep)
        elif inspect.isclass(dep) or callable(dep):
            module = _defining_module(dep)
            if module is not None:
                modules.append(module)
        else:
            raise ComputationError(
                f"cannot ship {dep!r} in depends: expected a module, function, class or file path"
            )
    for fn in (computation, setup, cleanup):
        module = _defining_module(fn) if fn is not None else None
        if module is not None:
            modules.append(module)
    for module in modules:
        ship_by_value(module)
    try:
        code = cloudpickle.dumps((computation, setup, cleanup))
    except Exception as exc:
        raise ComputationError(f"cannot pickle the computation {_describe(computation)}: {exc}") from exc
    _check_unique(files)
    return ClusterSpec("function", code=code, files=files)


def _pack_program(
    path: str | os.PathLike[str],
    depends: list[Any],
    setup: Callable[..., Any] | None,
    cleanup: Callable[..., Any] | None,
) -> ClusterSpec:
    if setup is not None or cleanup is not None:
        raise ComputationError(
            "setup and cleanup run Python code in the node's workers: "
            "they apply to a Python computation, not to a program"
        )
    program = _read_file(path, "program")
    # Whatever its mode here, the node must be able to execute it.
    program = DependFile(program.name, program.data, program.mode | stat.S_IRUSR | stat.S_IXUSR)
    files = [program]
    for dep in depends:
        if not isinstance(dep, str | os.PathLike):
            raise ComputationError(
                f"a program computation can depend only on files, not on {dep!r}"
            )
        files.append(read_depend_file(dep))
    _check_unique(files)
    return ClusterSpec("program", program=program.name, files=files)


def read_depend_file(path: str | os.PathLike[str]) -> DependFile:
    """A file of ``depends`` as it travels: base name, bytes and permission bits.

    It lands on the node under its base name, in the job's working directory:
    a name the node would refuse is refused here, before anything connects.
    """
    return _read_file(path, "depends file")


def _read_file(path: str | os.PathLike[str], role: str) -> DependFile:
    p = Path(path)
    try:
        st = p.stat()  # a symbolic link ships what it points to, under the link's name
        if stat.S_ISDIR(st.st_mode):
            raise ComputationError(f"{role} {os.fspath(path)!r} is a directory: only files can be shipped")
        if not stat.S_ISREG(st.st_mode):
            # a FIFO or a device would block or never end: not something to ship
            raise ComputationError(f"{role} {os.fspath(path)!r} is not a regular file: only files can be shipped")
        if not is_safe_file_name(p.name):
            raise ComputationError(
                f"{role} {os.fspath(path)!r}: its name {p.name!r} cannot name a file in the job's working "
                "directory on the node (it lands there under its base name: no '/', '\\' or NUL)"
            )
        data = p.read_bytes()
    except FileNotFoundError:
        raise ComputationError(f"{role} {os.fspath(path)!r} does not exist") from None
    except OSError as exc:
        raise ComputationError(f"cannot read {role} {os.fspath(path)!r}: {exc.strerror or exc}") from None
    return DependFile(p.name, data, stat.S_IMODE(st.st_mode))


def _check_unique(files: list[DependFile]) -> None:
    seen: set[str] = set()
    for f in files:
        if f.name in seen:
            raise ComputationError(
                f"two depends files are named {f.name!r}: they would overwrite each other on the node"
            )
        seen.add(f.name)


def ship_by_value(module: ModuleType) -> bool:
    """Have cloudpickle pickle ``module``'s functions and classes by value, if it is the user's own.

    The registration is process-wide and deliberately kept: job arguments that
    are instances of the module's classes must travel by value too.
    """
    if not is_user_module(module):
        return False
    if module.__name__ not in cloudpickle.list_registry_pickle_by_value():
        cloudpickle.register_pickle_by_value(module)
    return True


def is_user_module(module: ModuleType) -> bool:
    """True for a module a node cannot be expected to import: not __main__, stdlib, installed or fairpool."""
    name = module.__name__
    if name == "__main__":
        return False  # cloudpickle already pickles __main__'s functions by value
    top = name.partition(".")[0]
    if top in sys.stdlib_module_names or top in sys.builtin_module_names or top == "fairpool":
        return False
    if sys.modules.get(name) is not module:
        return False  # cloudpickle can only ship modules importable by their name here
    location = getattr(module, "__file__", None) or next(iter(getattr(module, "__path__", [])), None)
    if not location:
        return False
    real = os.path.realpath(location)
    parts = Path(real).parts
    if "site-packages" in parts or "dist-packages" in parts:
        return False
    return not real.startswith(_library_prefixes())


@cache
def _library_prefixes() -> tuple[str, ...]:
    paths = {sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    paths.update(site.getsitepackages())
    user_site = site.getusersitepackages()
    if isinstance(user_site, str):
        paths.add(user_site)
    return tuple(os.path.join(os.path.realpath(p), "") for p in paths if p)


def _defining_module(obj: Any) -> ModuleType | None:
    name = getattr(obj, "__module__", None)
    if not isinstance(name, str):
        name = getattr(type(obj), "__module__", None)
    return sys.modules.get(name) if isinstance(name, str) else None


def _describe(obj: Any) -> str:
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    return repr(name) if isinstance(name, str) else repr(obj)

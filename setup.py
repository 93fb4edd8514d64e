"""Build: the policies (``policies/`` -> ``fairpool.policies``) compiled with mypyc, when it can be.

Everything else is in pyproject.toml. The scheduler's decisions run through
``fairpool.policies`` (pure, typed, mypy --strict), and compiled they cost
about two thirds as much (``bench/decisions.py``). The compiled modules sit
beside their sources in the installed package and are imported first.

- A regular install (``pip install .``) compiles them; with no C compiler, or
  if compiling fails for any reason, it warns and installs the pure modules,
  which behave the same.
- An editable install (``pip install -e .``) does not: a compiled module would
  shadow the source a developer is editing. So the test suite runs the pure
  modules, and ``tests/policies/test_compiled.py`` runs the policy tests
  against a compiled build as well.
- ``FAIRPOOL_PURE=1`` skips compiling.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
STAGE = Path("build") / "mypyc-src"  # relative: mypyc names its C files after the paths it is given


def stage_policies() -> list[str]:
    """Copy the policies into a ``fairpool/policies`` tree: mypyc names modules after their paths."""
    package = HERE / STAGE / "fairpool" / "policies"
    shutil.rmtree(HERE / STAGE, ignore_errors=True)
    package.mkdir(parents=True)
    (package.parent / "__init__.py").write_text("")
    sources = []
    for source in sorted((HERE / "policies").glob("*.py")):
        shutil.copy2(source, package / source.name)
        if source.name != "__init__.py":  # the package itself stays pure: it reports the build
            sources.append(str(STAGE / "fairpool" / "policies" / source.name))
    return sources


# The setuptools commands that build extensions; pip also runs this file for metadata only
# (dist_info, egg_info), where compiling would be wasted.
BUILDS = {"bdist_wheel", "build", "build_ext", "install"}


def native_extensions() -> list:
    if os.environ.get("FAIRPOOL_PURE") == "1" or "editable_wheel" in sys.argv:
        return []
    if not BUILDS.intersection(sys.argv):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("fairpool: mypyc is not available: the policies stay pure Python", file=sys.stderr)
        return []
    try:
        return mypycify(stage_policies(), opt_level="3", group_name="fairpool.policies")
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - any failure means the pure build
        print(f"fairpool: compiling the policies failed ({exc!r}): they stay pure Python", file=sys.stderr)
        return []


class OptionalBuildExt(build_ext):
    """Build the compiled policies if the machine can; otherwise leave the pure ones alone."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - no compiler, a compiler error: the pure build
            for output in self.get_outputs():
                Path(output).unlink(missing_ok=True)  # half a compiled package would not import
            print(f"fairpool: building the compiled policies failed ({exc}): they stay pure Python",
                  file=sys.stderr)


setup(ext_modules=native_extensions(), cmdclass={"build_ext": OptionalBuildExt})

"""A regular install of this checkout (bench/.venv-compiled): the policies compiled, as users get them.

fairpool's own venv is an editable install, whose policies stay pure Python
(setup.py: a compiled module would shadow the source being edited). A
benchmark run with ``--compiled`` re-executes itself with this venv's python,
after reinstalling the checkout into it, so that it measures the current
code as ``pip install .`` builds it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
VENV_DIR = BENCH / ".venv-compiled"
_REEXEC = "FAIRPOOL_BENCH_COMPILED"  # set in the re-executed process: do not build again


def reexec_compiled(script: str, argv: list[str]) -> None:
    """Install the checkout into the venv and run ``script argv`` there instead (does not return)."""
    if os.environ.get(_REEXEC) == "1":
        return
    python = VENV_DIR / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV_DIR)], check=True)
    print(f"installing this checkout into {VENV_DIR} (the policies compiled) ...", flush=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--force-reinstall", "--no-deps",
                    str(BENCH.parent)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(BENCH.parent)], check=True)
    os.environ[_REEXEC] = "1"
    os.execv(str(python), [str(python), script, *argv])


def policies_build() -> str:
    """How the policies being measured were built, for the report."""
    from fairpool.policies import compiled

    return "compiled (mypyc)" if compiled() else "pure Python (an editable install; --compiled: as pip install .)"

"""The peers' own virtualenv (bench/.venv-peers): dispy and Dask, never in fairpool's venv.

Created by the benchmark on first use from PyPI with pinned versions (the
ones the published figures were measured with), and reinstalled whenever the
pins below change. fairpool's own environment never imports dispy or dask:
the peers are measured by helper scripts run with this venv's python.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

VENV_DIR = Path(__file__).resolve().parent / ".venv-peers"

# The whole resolved set, so that a later run measures the same code.
PEER_REQUIREMENTS: tuple[str, ...] = (
    "dispy==4.15.2",
    "pycos==4.12.2",
    "psutil==7.2.2",
    "dask[distributed]==2026.8.0",
    "distributed==2026.8.0",
    "click==8.5.1",
    "cloudpickle==3.1.3",
    "fsspec==2026.9.0",
    "importlib_metadata==10.2.0",
    "Jinja2==3.1.6",
    "locket==1.0.0",
    "MarkupSafe==3.0.4",
    "msgpack==1.2.4",
    "packaging==26.4",
    "partd==1.4.2",
    "PyYAML==6.0.4",
    "sortedcontainers==2.4.0",
    "tblib==3.2.2",
    "toolz==1.2.0",
    "tornado==6.6.1",
    "zict==3.0.0",
    "zipp==4.1.2",
)


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_peers_venv(venv: Path = VENV_DIR, *, quiet: bool = False) -> Path:
    """Return the peers venv's python, creating and installing the venv if needed."""
    marker = venv / "bench-requirements.txt"
    wanted = "\n".join(PEER_REQUIREMENTS) + "\n"
    python = _python(venv)
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    if not quiet:
        print(f"setting up the peers venv {venv} (dispy, dask) from PyPI ...", flush=True)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    done = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "-q",
            *PEER_REQUIREMENTS,
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise RuntimeError("pip install for the peers venv failed:\n" + "\n".join(lines[-15:]))
    marker.write_text(wanted)
    return python

"""Policy tests: make the discrete-event driver (``policysim``) importable under --import-mode=importlib."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    # appended, not prepended: ``from conftest import ...`` must keep finding tests/conftest.py
    sys.path.append(_HERE)

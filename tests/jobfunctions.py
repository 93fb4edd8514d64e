"""Functions end-to-end tests run as jobs on real nodes: a small computation and a gate.

A client ships its computation's own module by value, but not the modules
that computation's globals come from; this module registers itself with
cloudpickle so that a test module's job calling ``wait_for_gate`` still
unpickles on a node, which cannot import anything under ``tests/``.
"""

from __future__ import annotations

import os
import sys
import time

import cloudpickle


def double(x: int) -> int:
    return x * 2


def wait_for_gate(gate: str, timeout: float) -> str:
    """Block until the test creates ``gate`` (a file), then return ``"released"``.

    ``timeout`` bounds a job the test forgot to release (TimeoutError), so that
    no worker outlives its test by more than that.
    """
    deadline = time.monotonic() + timeout
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nobody created {gate}")
        time.sleep(0.01)
    return "released"


cloudpickle.register_pickle_by_value(sys.modules[__name__])

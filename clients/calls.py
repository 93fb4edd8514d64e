"""The computation of an executor's cluster: call a pickled function (on a node).

``ClusterExecutor`` (``fairpool.clients.executor``) opens a cluster whose one
computation is ``run``: each job carries its function pickled once on the
client (bytes, so the job's arguments keep the fast pickling path) and its
arguments. This module is imported on the nodes by reference, so it imports
nothing of the client library; a function unpickled once is kept for the
next jobs of the same worker (``load``). ``ChunkOf`` runs a function over a
chunk of argument tuples (``Executor.map(..., chunksize=N)``).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=32)
def load(fn: bytes) -> Callable[..., Any]:
    loaded: Callable[..., Any] = pickle.loads(fn)
    return loaded


def run(fn: bytes, /, *args: Any, **kwargs: Any) -> Any:
    """Call the pickled function ``fn`` with the job's arguments."""
    return load(fn)(*args, **kwargs)


class ChunkOf:
    """``fn`` applied to each argument tuple of a chunk: one job for several calls."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __call__(self, chunk: list[tuple[Any, ...]]) -> list[Any]:
        fn = self.fn
        return [fn(*args) for args in chunk]

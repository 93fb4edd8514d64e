"""What a node needs to run a cluster's jobs, as the client packs it.

The client encodes a ``ClusterSpec`` (msgpack, not pickle) and the scheduler
forwards the bytes untouched. The node decodes it to write the ``depends``
files into the cluster's working directory; only the node's worker processes
unpickle ``code``.
"""

from __future__ import annotations

import msgspec


class DependFile(msgspec.Struct, frozen=True, array_like=True):
    name: str  # a plain file name: no directories, no '..'
    data: bytes
    mode: int = 0o644


class ClusterSpec(msgspec.Struct, frozen=True, array_like=True):
    kind: str  # "function" | "program"
    # kind == "function": cloudpickle of (computation, setup, cleanup), pickled together
    # so that the three share one globals dict on the node (setup's globals reach jobs).
    code: bytes = b""
    # kind == "program": the file name (among ``files``) to execute.
    program: str = ""
    files: list[DependFile] = []


class SpecError(ValueError):
    pass


def encode_spec(spec: ClusterSpec) -> bytes:
    return msgspec.msgpack.encode(spec)


def decode_spec(data: bytes) -> ClusterSpec:
    try:
        spec = msgspec.msgpack.decode(data, type=ClusterSpec)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise SpecError(f"malformed cluster spec: {exc}") from None
    if spec.kind not in ("function", "program"):
        raise SpecError(f"unknown computation kind {spec.kind!r}")
    for f in spec.files:
        if not is_safe_file_name(f.name):
            raise SpecError(f"refused depends file name {f.name!r}: it must be a plain file name")
    if spec.kind == "program" and spec.program not in {f.name for f in spec.files}:
        raise SpecError(f"program {spec.program!r} is not among the cluster's files")
    return spec


def is_safe_file_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and "\0" not in name

"""The recover file: what a later process needs to find a cluster's jobs again.

``fairpool-<cluster_id>.recover`` (JSON) is written in the working directory
once the scheduler has opened the cluster, and removed by ``close()`` only
when every job ended and every result reached this process. Reattaching and
``recover_jobs`` read it back.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

PREFIX = "fairpool-"
SUFFIX = ".recover"


@dataclass(frozen=True)
class RecoverInfo:
    cluster_id: str
    scheduler: str  # HOST:PORT
    tenant: str
    secret_file: str
    created: float  # time.time()

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> RecoverInfo:
        data = json.loads(text)
        return cls(
            cluster_id=str(data["cluster_id"]),
            scheduler=str(data["scheduler"]),
            tenant=str(data["tenant"]),
            secret_file=str(data["secret_file"]),
            created=float(data["created"]),
        )


def recover_path(cluster_id: str, directory: str | os.PathLike[str] = ".") -> Path:
    return Path(directory) / f"{PREFIX}{cluster_id}{SUFFIX}"


def write_recover_file(info: RecoverInfo, directory: str | os.PathLike[str] = ".") -> Path:
    """Write atomically (temp file + rename): a crash never leaves a half-written file."""
    path = recover_path(info.cluster_id, directory)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(info.to_json())
    os.replace(tmp, path)
    return path


def read_recover_file(path: str | os.PathLike[str]) -> RecoverInfo:
    return RecoverInfo.from_json(Path(path).read_text())

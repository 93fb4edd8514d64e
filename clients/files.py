"""Files jobs send (``fairpool.send_file``), written under the cluster's ``dest_path``.

``FileReceiver.receive(chunk)`` runs on the connection thread for each
``FileChunk`` of the cluster's jobs, in order, before the results of the same
update, so a job's files are in place when its result is. A file is written
to a hidden temporary file beside its target (at each chunk's offset, so a
chunk sent again after a reconnect rewrites the same bytes) and renamed over
the target when its last chunk arrives: nobody sees half a file.

The names come from jobs, i.e. from other machines: a name that is absolute,
or that leaves ``dest_path`` after normalization -- through ``..`` or through
a symbolic link on the way -- is refused (logged, its chunks ignored). The
temporary file is created with O_EXCL | O_NOFOLLOW and the rename replaces a
link at the target rather than writing through it. Nothing here raises: a
file that cannot be written is logged and its job goes on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import uuid
from dataclasses import dataclass
from pathlib import Path

from fairpool.messages import FileChunk

logger = logging.getLogger("fairpool.clients")


class FileRefused(ValueError):
    """A job named a file that may not be written here."""


@dataclass
class _Transfer:
    fd: int
    temp: str
    target: str


class FileReceiver:
    def __init__(self, dest_path: str | os.PathLike[str]) -> None:
        self.dest_path = Path(dest_path).absolute()
        self._transfers: dict[tuple[str, str], _Transfer] = {}
        self.received: list[Path] = []  # files completed, in order (for logs and tests)

    def receive(self, chunk: FileChunk) -> None:
        key = (chunk.uid, chunk.name)
        transfer = self._transfers.get(key)
        if chunk.offset == 0:
            if transfer is not None:  # the file sent again from its start (e.g. after a reconnect)
                self._abandon(key)
            transfer = self._start(chunk)
            if transfer is None:
                return
            self._transfers[key] = transfer
        elif transfer is None:
            # its start was refused, or the file is complete and this is a resent chunk
            logger.debug("job %s: ignoring a chunk of %r at offset %d", chunk.uid, chunk.name, chunk.offset)
            return
        try:
            os.pwrite(transfer.fd, chunk.data, chunk.offset)
            if chunk.last:
                os.close(transfer.fd)
                transfer.fd = -1
                os.replace(transfer.temp, transfer.target)
                del self._transfers[key]
                self.received.append(Path(transfer.target))
                logger.debug("job %s: received file %s", chunk.uid, transfer.target)
        except OSError as exc:
            logger.warning("job %s: cannot write the file %r it sent: %s", chunk.uid, chunk.name, exc)
            self._abandon(key)

    def close(self) -> None:
        """Remove the temporary files of transfers that will not complete."""
        for key in list(self._transfers):
            self._abandon(key)

    def _start(self, chunk: FileChunk) -> _Transfer | None:
        try:
            target = self.target(chunk.name)
        except FileRefused as exc:
            logger.warning("job %s: refused the file it sent: %s", chunk.uid, exc)
            return None
        except OSError as exc:
            logger.warning("job %s: cannot place the file %r it sent: %s", chunk.uid, chunk.name, exc)
            return None
        directory, base = os.path.split(target)
        temp = os.path.join(directory, f".{base}.{uuid.uuid4().hex[:12]}.part")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            logger.warning("job %s: cannot write the file %r it sent: %s", chunk.uid, chunk.name, exc)
            return None
        return _Transfer(fd, temp, target)

    def _abandon(self, key: tuple[str, str]) -> None:
        transfer = self._transfers.pop(key, None)
        if transfer is None:
            return
        with contextlib.suppress(OSError):
            if transfer.fd >= 0:
                os.close(transfer.fd)
        with contextlib.suppress(OSError):
            os.unlink(transfer.temp)

    def target(self, name: str) -> str:
        """Where ``name`` lands: a path under dest_path, its directories created; FileRefused if it may not."""
        if not isinstance(name, str) or not name or "\0" in name:
            raise FileRefused(f"{name!r} is not a file name")
        normal = posixpath.normpath(name)
        if posixpath.isabs(name) or os.path.isabs(name) or normal in (".", "..") or normal.startswith("../"):
            raise FileRefused(f"{name!r} is not a relative path under dest_path")
        root = os.path.realpath(self.dest_path)
        os.makedirs(root, exist_ok=True)
        *directories, base = normal.split("/")
        for part in (*directories, base):
            # names travel with '/' only; where this OS has other separators or drives, a part
            # holding one ("..\\x", "C:x") would lead somewhere os.path.join cannot tell
            if (os.altsep and os.altsep in part) or os.sep in part or os.path.splitdrive(part)[0]:
                raise FileRefused(f"{name!r} is not a relative path under dest_path")
        current = root
        for part in directories:
            current = os.path.join(current, part)
            if os.path.lexists(current):
                # a link on the way may point anywhere: follow it only if it stays under dest_path
                real = os.path.realpath(current)
                if not _inside(real, root):
                    raise FileRefused(f"{name!r} leads out of dest_path (through {current!r})")
                if not os.path.isdir(real):
                    raise FileRefused(f"{name!r}: {current!r} is not a directory")
                current = real
            else:
                os.mkdir(current)
        return os.path.join(current, base)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(os.path.join(root, ""))

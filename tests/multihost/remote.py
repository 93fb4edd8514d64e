"""A Python process in another network namespace that a test drives line by line.

A client of a namespaced scheduler must itself run inside a namespace, so it
cannot live in the test's process. ``RemotePython(host)`` starts
``python -u -c AGENT`` there (``ip netns exec``); ``exec(code)`` runs
statements in the agent's ``__main__``-like globals, ``eval(expr)`` returns a
JSON-able value (anything else comes back as its ``repr``). Functions defined
there are in ``__main__``, so cloudpickle ships them to nodes by value.

Every call has a deadline; an error in the agent comes back as
``RemoteError`` carrying its traceback. The agent's own prints go to its
stderr file (shown by ``output()``), keeping stdout for replies. ``close()``
(also on ``with`` exit) ends it: EOF, then SIGKILL after a grace.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from multihost.netns import Host

AGENT = textwrap.dedent("""
    import json, os, sys, traceback
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    sys.stdout = sys.stderr  # the code's prints must not mix with replies
    env = {"__name__": "__main__", "__builtins__": __builtins__}
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["mode"] == "eval":
                value = eval(request["code"], env)
            else:
                exec(request["code"], env)
                value = None
            reply = {"ok": True, "value": value}
            text = json.dumps(reply, default=repr)
        except BaseException:
            text = json.dumps({"ok": False, "error": traceback.format_exc()})
        replies.write(text + "\\n")
""")


class RemoteError(Exception):
    """The code raised in the agent; the message is its traceback."""


class RemotePython:
    def __init__(self, host: Host, log_dir: Path, label: str, cwd: Path | None = None) -> None:
        self.host = host
        self.label = label
        self.stderr_path = log_dir / f"{label}.stderr"
        work = cwd or log_dir / label
        work.mkdir(parents=True, exist_ok=True)
        with open(self.stderr_path, "ab") as err:
            self.process = host.popen([sys.executable, "-u", "-c", AGENT], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=err, cwd=work,
                                      env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True)
        self._buffer = b""

    def exec(self, code: str, timeout: float = 30.0) -> None:
        self._call("exec", textwrap.dedent(code), timeout)

    def eval(self, expr: str, timeout: float = 30.0) -> Any:
        return self._call("eval", expr, timeout)

    def _call(self, mode: str, code: str, timeout: float) -> Any:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps({"mode": mode, "code": code}) + "\n").encode())
        self.process.stdin.flush()
        reply = json.loads(self._readline(timeout, code))
        if not reply["ok"]:
            raise RemoteError(f"in {self.label}:\n{reply['error']}")
        return reply["value"]

    def _readline(self, timeout: float, code: str) -> bytes:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.label} did not answer within {timeout:g}s: {code.strip()[:200]}\n"
                                   f"{self.output()[-3000:]}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise RemoteError(f"{self.label} exited ({self.process.poll()}):\n{self.output()[-3000:]}")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def output(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def close(self, grace: float = 5.0) -> None:
        if self.process.poll() is None:
            try:
                assert self.process.stdin is not None
                self.process.stdin.close()
            except OSError:
                pass
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> RemotePython:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

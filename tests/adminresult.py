"""What one ``fairpool admin`` run gave back: exit code, stdout and stderr, read as the tests need."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass
class AdminResult:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        assert self.code == 0, f"exit {self.code}: {self.err}"
        return json.loads(self.out)

    def error_line(self) -> str:
        lines = self.err.strip().splitlines()
        assert len(lines) == 1, f"expected one line on stderr, got:\n{self.err}"
        return lines[0]

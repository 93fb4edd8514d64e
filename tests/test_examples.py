"""Every script in examples/ runs as a newcomer would run it, and says what it promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

EXPECTED = {
    "setup_globals.py": "squares: [9, 49, 144]",
    "program.py": "exit code 3, output 'hello from a program'",
    "provisional.py": "final loss: 0.0625",
    "send_file.py": "received: report weekly",
    "executor.py": "squares: [0, 1, 4, 9, 16, 25]",
    "async_client.py": "done:",
}


def test_every_example_is_checked() -> None:
    assert {p.name for p in EXAMPLES.glob("*.py")} == set(EXPECTED)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name: str, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(EXAMPLES / name)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=110)
    assert result.returncode == 0, result.stderr
    assert EXPECTED[name] in result.stdout
    assert "Traceback" not in result.stderr

"""The systemd units: ``systemd-analyze verify`` passes without a warning, and they say what the daemons do.

``verify`` insists that ExecStart names an executable file, and the units
name where docs/deploy.md installs fairpool (``/opt/fairpool/bin/fairpool``).
So the test verifies copies, in a temporary directory, whose ExecStart points
at this venv's ``fairpool`` instead; nothing else is changed. By hand:

    sed "s#^ExecStart=/opt/fairpool/bin/fairpool#ExecStart=$PWD/.venv/bin/fairpool#" \\
        systemd/fairpool-node.service > /tmp/fairpool-node.service
    systemd-analyze verify /tmp/fairpool-node.service

``systemd-analyze`` comes with Debian's ``systemd`` package.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import FAIRPOOL

REPO = Path(__file__).resolve().parent.parent
UNITS = ("fairpool-scheduler.service", "fairpool-node.service")
DROP_IN = "node-unprivileged.conf"  # for fairpool-node.service: no root
INSTALLED = "/opt/fairpool/bin/fairpool"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def unit_settings(text: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as {section: {key: [values, in order]}} (keys may repeat in units)."""
    sections: dict[str, dict[str, list[str]]] = {}
    section: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        section.setdefault(key.strip(), []).append(value.strip())
    return sections


def service(unit: str) -> dict[str, list[str]]:
    return unit_settings((REPO / "systemd" / unit).read_text())["Service"]


def verify(paths: list[Path]) -> None:
    """``systemd-analyze verify`` these unit files: exit 0 and not a word about them."""
    assert SYSTEMD_ANALYZE is not None
    done = subprocess.run([SYSTEMD_ANALYZE, "verify", *map(str, paths)], capture_output=True, text=True,
                          timeout=120)
    output = done.stdout + done.stderr
    # (verify also loads the units these name, such as network-online.target: only ours count)
    ours = [line for line in output.splitlines() if "fairpool" in line]
    assert done.returncode == 0 and not ours, output


def installable_copy(name: str, directory: Path) -> Path:
    """The file from systemd/ in ``directory``, starting this venv's fairpool instead of the installed one."""
    text = (REPO / "systemd" / name).read_text()
    assert f"ExecStart={INSTALLED} " in text, f"{name} no longer starts {INSTALLED}: update this test"
    copy = directory / name
    copy.write_text(text.replace(f"ExecStart={INSTALLED} ", f"ExecStart={FAIRPOOL} "))
    return copy


needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None or not FAIRPOOL.exists(),
    reason="systemd-analyze is not installed (Debian package: systemd), or the venv has no fairpool script")


@needs_systemd_analyze
def test_units_verify_without_warnings(tmp_path: Path) -> None:
    verify([installable_copy(unit, tmp_path) for unit in UNITS])


@needs_systemd_analyze
def test_node_unit_with_the_unprivileged_drop_in_verifies_without_warnings(tmp_path: Path) -> None:
    unit = installable_copy("fairpool-node.service", tmp_path)
    drop_ins = tmp_path / "fairpool-node.service.d"  # verify reads drop-ins beside the unit it is given
    drop_ins.mkdir()
    installable_copy(DROP_IN, drop_ins)
    verify([unit])


@pytest.mark.parametrize("unit", UNITS)
def test_unit_is_notify_with_a_watchdog_and_restarts_on_failure(unit: str) -> None:
    settings = service(unit)
    assert settings["Type"] == ["notify"]
    assert settings["NotifyAccess"] == ["main"]  # the daemon, never a job, speaks for the service
    assert settings["Restart"] == ["on-failure"]
    assert settings["WatchdogSec"] and settings["WatchdogSec"][0] != "0"


@pytest.mark.parametrize(("unit", "state_dir"), [
    ("fairpool-scheduler.service", "fairpool"),
    ("fairpool-node.service", "fairpool-node"),
])
def test_unit_has_its_own_state_dir_and_shares_the_config_dir(unit: str, state_dir: str) -> None:
    settings = service(unit)
    assert settings["StateDirectory"] == [state_dir]
    assert settings["ConfigurationDirectory"] == ["fairpool"]
    assert settings["WorkingDirectory"] == [f"/var/lib/{state_dir}"]


def test_scheduler_runs_as_its_own_user_without_capabilities() -> None:
    settings = service("fairpool-scheduler.service")
    assert settings["User"] == ["fairpool"]
    assert settings["CapabilityBoundingSet"] == [""]
    assert settings["StateDirectoryMode"] == ["0700"]


def test_node_runs_jobs_as_a_dedicated_user_with_only_the_capabilities_for_that() -> None:
    settings = service("fairpool-node.service")
    assert "User" not in settings  # root: it starts its workers as the job user
    assert settings["ExecStart"][0].endswith(" --run-as fairpool-job")
    assert set(settings["CapabilityBoundingSet"][0].split()) == {
        "CAP_SETUID", "CAP_SETGID", "CAP_CHOWN", "CAP_FOWNER", "CAP_DAC_OVERRIDE", "CAP_KILL"}
    assert settings["AmbientCapabilities"] == [""]  # jobs get none
    assert settings["StateDirectoryMode"] == ["0711"]  # the job user passes through to its working dir


@pytest.mark.parametrize("unit", UNITS)
def test_unit_is_hardened(unit: str) -> None:
    settings = service(unit)
    for key, value in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("PrivateTmp", "yes"),
                       ("ProtectHome", "yes"), ("RestrictSUIDSGID", "yes"), ("ProtectKernelModules", "yes"),
                       ("ProtectKernelTunables", "yes"), ("ProtectControlGroups", "yes")]:
        assert settings.get(key) == [value], f"{unit}: {key}={value} expected"


def test_node_unit_leaves_jobs_what_they_need() -> None:
    settings = service("fairpool-node.service")
    assert "PrivateDevices" not in settings and "DeviceAllow" not in settings  # GPUs
    assert "ProtectClock" not in settings  # it implies DeviceAllow=char-rtc on many systemd versions
    assert "ProtectProc" not in settings  # the node reads /proc for a job's leftover processes
    assert "MemoryDenyWriteExecute" not in settings  # JIT compilers
    assert "SystemCallFilter" not in settings and "RestrictAddressFamilies" not in settings
    assert settings["OOMPolicy"] == ["continue"]  # one job's OOM kill does not stop the node
    assert settings["TasksMax"] == ["infinity"]
    assert settings["KillMode"] == ["mixed"]  # SIGTERM to the node, which stops its workers itself


def test_unprivileged_drop_in_runs_the_node_as_its_own_user_without_run_as() -> None:
    settings = unit_settings((REPO / "systemd" / DROP_IN).read_text())["Service"]
    assert settings["User"] == ["fairpool-node"]
    assert settings["ExecStart"][0] == ""  # (cleared first, or it would add a second command)
    assert "--run-as" not in settings["ExecStart"][1]
    assert settings["CapabilityBoundingSet"] == [""]


def test_scheduler_reload_sends_sighup() -> None:
    assert service("fairpool-scheduler.service")["ExecReload"] == ["/bin/kill -HUP $MAINPID"]

"""End to end: ``fairpool admin --tls-ca/--tls-cert/--tls-key`` against a scheduler serving mutual TLS.

The certificate proves who the admin CLI is (no secret file): an admin
certificate may use every verb, a tenant's certificate acts as the tenant it
names and may use ``jobs`` and ``why`` only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fairpool import certs
from fairpool.cli import main
from fairpool.tls import TlsFiles

# in_tmp_dir: there is no ./.fairpool/secret to find by accident.
pytestmark = [pytest.mark.timeout(90), pytest.mark.usefixtures("in_tmp_dir", "no_fairpool_env")]


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, TlsFiles]:
    directory = tmp_path / "pki"
    certs.init_ca(directory)
    return {"scheduler": certs.issue("scheduler", "pool", directory=directory).files,
            "admin": certs.issue("admin", "ops", directory=directory).files,
            "alice": certs.issue("client", "alice", directory=directory).files}


@pytest.fixture
def tls_scheduler(scheduler, pki):
    scheduler.stop()
    files = pki["scheduler"]
    scheduler.args += ["--tls-ca", str(files.ca), "--tls-cert", str(files.cert), "--tls-key", str(files.key)]
    scheduler.start()
    return scheduler


def admin(capsys: Any, scheduler: Any, files: TlsFiles, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["admin", "--scheduler", scheduler.address, "--tls-ca", str(files.ca), "--tls-cert", str(files.cert),
                 "--tls-key", str(files.key), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_an_admin_certificate_is_the_admin_credential(capsys, tls_scheduler, pki):
    code, out, err = admin(capsys, tls_scheduler, pki["admin"], "--json", "status")
    assert code == 0, err
    assert {"nodes", "queued", "running", "finished", "policy"} <= json.loads(out).keys()


def test_a_tenant_certificate_sees_its_jobs_and_may_not_use_admin_verbs(capsys, tls_scheduler, pki):
    code, out, err = admin(capsys, tls_scheduler, pki["alice"], "--json", "jobs")
    assert code == 0 and json.loads(out) == [], err
    code, out, err = admin(capsys, tls_scheduler, pki["alice"], "nodes", "drain", "n1")
    assert code == 1 and out == ""
    assert "'nodes.drain' needs the admin credential" in err and "tenant 'alice'" in err


def test_the_environment_supplies_the_tls_files(capsys, monkeypatch, tls_scheduler, pki):
    files = pki["admin"]
    monkeypatch.setenv("FAIRPOOL_SCHEDULER", tls_scheduler.address)
    for part, path in (("CA", files.ca), ("CERT", files.cert), ("KEY", files.key)):
        monkeypatch.setenv(f"FAIRPOOL_TLS_{part}", str(path))
    capsys.readouterr()
    assert main(["admin", "--json", "nodes"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_without_a_certificate_a_tls_scheduler_is_not_reached(capsys, tls_scheduler):
    capsys.readouterr()
    code = main(["admin", "--scheduler", tls_scheduler.address, "--secret-file", str(tls_scheduler.secret_file),
                 "--timeout", "10", "status"])
    out, err = capsys.readouterr()
    assert code == 1 and out == "" and len(err.strip().splitlines()) == 1, err
    assert "requires TLS" in err

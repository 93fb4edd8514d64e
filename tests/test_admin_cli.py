"""``fairpool admin`` without a scheduler: usage errors, unreachable or unauthenticated schedulers,
and ``journal inspect`` reading journals written here (intact, torn tail, corrupt middle)."""

from __future__ import annotations

import importlib.util
import json
import socket
from pathlib import Path

import pytest

from fairpool.admin import resolve_credentials
from fairpool.certs import init_ca, issue
from fairpool.cli import main
from fairpool.messages import JobResult, JobSubmit
from fairpool.scheduler.journal import JOURNAL_NAME, JournalFile, frame, read_journal
from fairpool.scheduler.journalrecords import (
    RAcked,
    RAssigned,
    RClusterClosed,
    RClusterOpened,
    RJobsQueued,
    RPolicy,
    RResults,
    encode_record,
)
from fairpool.tokens import new_token

AT = 1_700_000_000.0
SECRETS = (b"SPEC-SECRET", b"PAYLOAD-SECRET", b"RESULT-SECRET", b"STDOUT-SECRET")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for var in ("FAIRPOOL_SCHEDULER", "FAIRPOOL_SECRET_FILE", "FAIRPOOL_TENANT", "FAIRPOOL_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)  # the default ./.fairpool/secret must not be found by accident


def admin(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["admin", *args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{text}"
    return lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def secret_file(tmp_path) -> Path:
    path = tmp_path / "secret"
    path.write_text("s3cret\n")
    return path


# --- usage errors: exit 2, one line --------------------------------------------------------


def test_admin_without_verb_prints_help_and_exits_2(capsys):
    code, out, err = admin(capsys)
    assert code == 2 and out == ""
    assert "status" in err and "journal" in err


def test_malformed_scheduler_flag_exits_2_with_one_line(capsys):
    code, out, err = admin(capsys, "--scheduler", "nonsense", "status")
    assert code == 2 and out == ""
    assert "bad value for --scheduler" in one_line(err) and "no port" in err


def test_malformed_scheduler_variable_exits_2_naming_it(capsys, monkeypatch, secret_file):
    monkeypatch.setenv("FAIRPOOL_SCHEDULER", "127.0.0.1:notaport")
    code, _out, err = admin(capsys, "--secret-file", str(secret_file), "status")
    assert code == 2
    assert "FAIRPOOL_SCHEDULER" in one_line(err)


def test_unknown_verb_exits_2_with_one_line(capsys):
    code, _out, err = admin(capsys, "frobnicate")
    assert code == 2
    assert "invalid choice: 'frobnicate'" in one_line(err)


def test_missing_verb_argument_exits_2_with_one_line(capsys):
    code, _out, err = admin(capsys, "nodes", "show")
    assert code == 2
    assert "required: NAME" in one_line(err)


def test_connection_flag_after_the_verb_exits_2(capsys):
    code, _out, err = admin(capsys, "status", "--scheduler", "127.0.0.1:1")
    assert code == 2
    assert "unrecognized arguments: --scheduler" in one_line(err)


def test_unknown_job_status_filter_exits_2(capsys):
    code, _out, err = admin(capsys, "jobs", "--status", "sleeping")
    assert code == 2
    assert "unknown status 'sleeping'" in one_line(err)


def test_job_limit_below_one_exits_2(capsys):
    code, _out, err = admin(capsys, "jobs", "list", "--limit", "0")
    assert code == 2
    assert "--limit" in one_line(err)


def test_token_without_tenant_exits_2(capsys, secret_file):
    code, _out, err = admin(capsys, "--secret-file", str(secret_file), "--token", "t0k", "jobs")
    assert code == 2
    assert "--token goes with --tenant" in one_line(err)


def test_simulate_with_missing_workload_file_exits_2(capsys, tmp_path):
    config = tmp_path / "policy.toml"
    config.write_text('policy = "fifo"\n')
    code, _out, err = admin(capsys, "policy", "simulate", "--config", str(config), "--workload", "nope.toml")
    assert code == 2
    assert "bad value for --workload: no such file 'nope.toml'" in one_line(err)


# --- runtime failures: exit 1, one line ------------------------------------------------------


def test_unreachable_scheduler_exits_1_with_one_line(capsys, secret_file):
    port = free_port()
    code, out, err = admin(capsys, "--scheduler", f"127.0.0.1:{port}", "--secret-file", str(secret_file), "status")
    assert code == 1 and out == ""
    assert one_line(err) == f"fairpool admin status: cannot reach the fairpool scheduler at 127.0.0.1:{port}: " \
                            "Connection refused"


def test_missing_secret_file_exits_1_naming_it(capsys):
    code, _out, err = admin(capsys, "--scheduler", "127.0.0.1:1", "status")
    assert code == 1
    assert "secret file '.fairpool/secret' does not exist" in one_line(err)


def test_malformed_token_exits_2_naming_the_flag(capsys):
    code, out, err = admin(capsys, "--tenant", "alice", "--token", "t0k", "jobs")
    assert code == 2 and out == ""
    assert "bad value for --token: not a fairpool token" in one_line(err)


def test_malformed_token_variable_exits_2_naming_it(capsys, monkeypatch):
    monkeypatch.setenv("FAIRPOOL_TENANT", "alice")
    monkeypatch.setenv("FAIRPOOL_TOKEN", "fpt_short")
    code, _out, err = admin(capsys, "jobs")
    assert code == 2
    assert "bad value for FAIRPOOL_TOKEN: not a fairpool token" in one_line(err)


def test_token_and_secret_file_together_exit_2(capsys, secret_file):
    code, _out, err = admin(capsys, "--secret-file", str(secret_file), "--tenant", "alice", "--token", new_token(),
                            "jobs")
    assert code == 2
    assert "--secret-file and --token are two credentials" in one_line(err)


def test_tenant_token_needs_no_secret_file(capsys):
    port = free_port()
    code, _out, err = admin(capsys, "--scheduler", f"127.0.0.1:{port}", "--tenant", "alice", "--token", new_token(),
                            "jobs")
    assert code == 1  # it got as far as connecting: no secret file was looked for
    assert one_line(err).startswith(f"fairpool admin jobs: cannot reach the fairpool scheduler at 127.0.0.1:{port}")


def test_tenant_token_from_the_environment_needs_no_secret_file(capsys, monkeypatch):
    port = free_port()
    monkeypatch.setenv("FAIRPOOL_SCHEDULER", f"127.0.0.1:{port}")
    monkeypatch.setenv("FAIRPOOL_TENANT", "alice")
    monkeypatch.setenv("FAIRPOOL_TOKEN", new_token())
    code, _out, err = admin(capsys, "why", "some-job")
    assert code == 1
    assert "cannot reach the fairpool scheduler" in one_line(err)


@pytest.mark.parametrize("verb", [["nodes", "drain", "n1"], ["tenants", "set", "bob", "--weight", "3"], ["status"],
                                  ["tenants", "add", "bob"], ["policy", "set", "fifo"], ["journal", "compact"]])
def test_admin_verb_with_a_tenant_token_exits_1_before_connecting(capsys, verb):
    port = free_port()  # nothing listens: a connection attempt would say "cannot reach"
    code, out, err = admin(capsys, "--scheduler", f"127.0.0.1:{port}", "--tenant", "alice", "--token", new_token(),
                           *verb)
    assert code == 1 and out == ""
    line = one_line(err)
    assert "needs the admin credential" in line and "tenant 'alice'" in line and "cannot reach" not in line


def test_token_variable_without_a_tenant_is_named_when_the_secret_is_missing(capsys, monkeypatch):
    monkeypatch.setenv("FAIRPOOL_TOKEN", new_token())
    code, _out, err = admin(capsys, "--scheduler", "127.0.0.1:1", "status")
    assert code == 1
    line = one_line(err)
    assert "secret file '.fairpool/secret' does not exist" in line and "FAIRPOOL_TOKEN is set" in line


def test_tls_flags_must_come_as_all_three(capsys, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    code, _out, err = admin(capsys, "--tls-ca", str(ca), "status")
    assert code == 2
    line = one_line(err)
    assert "TLS needs a CA certificate, a certificate and its key" in line
    assert "--tls-cert (or FAIRPOOL_TLS_CERT)" in line and "--tls-key (or FAIRPOOL_TLS_KEY)" in line


def test_tls_file_that_does_not_exist_exits_2_naming_it(capsys, tmp_path, monkeypatch):
    for part in ("ca", "cert"):
        (tmp_path / f"{part}.pem").write_text("x")
    monkeypatch.setenv("FAIRPOOL_TLS_CA", str(tmp_path / "ca.pem"))
    code, _out, err = admin(capsys, "--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", "nokey.pem", "status")
    assert code == 2
    assert "bad value for --tls-key: no such file 'nokey.pem'" in one_line(err)


def test_an_admin_certificate_without_secret_or_token_authenticates_as_the_admin(tmp_path):
    init_ca(tmp_path)
    files = issue("admin", "ops", directory=tmp_path).files
    creds = resolve_credentials(tls_ca=files.ca, tls_cert=files.cert, tls_key=files.key, environ={})
    assert (creds.auth, creds.role, creds.tenant, creds.secret, creds.secret_file) == ("tls", "admin", "", b"", None)
    assert creds.tls == files


def test_a_tenant_certificate_without_tenant_flag_acts_as_the_tenant_it_names(tmp_path):
    init_ca(tmp_path)
    files = issue("client", "alice", directory=tmp_path).files
    creds = resolve_credentials(tls_ca=files.ca, tls_cert=files.cert, tls_key=files.key, environ={})
    assert (creds.auth, creds.role, creds.tenant) == ("tls", "client", "alice")


def test_a_certificate_file_that_is_not_one_exits_2(capsys, tmp_path):
    for part in ("ca", "cert", "key"):
        (tmp_path / f"{part}.pem").write_text("not a certificate")
    code, _out, err = admin(capsys, "--tls-ca", str(tmp_path / "ca.pem"), "--tls-cert", str(tmp_path / "cert.pem"),
                            "--tls-key", str(tmp_path / "key.pem"), "status")
    assert code == 2
    assert "bad value for --tls-cert" in one_line(err)


def test_token_credentials_never_show_the_token():
    token = new_token()
    creds = resolve_credentials(tenant="alice", token=token, environ={})
    assert (creds.auth, creds.role, creds.tenant, creds.token) == ("token", "client", "alice", token)
    assert token not in repr(creds) and token not in creds.proof()


HAS_SIMULATOR = importlib.util.find_spec("fairpool.scheduler.simulator") is not None


@pytest.mark.skipif(HAS_SIMULATOR, reason="the simulator is installed")
def test_simulate_without_the_simulator_exits_1_saying_so(capsys, tmp_path):
    config, workload = tmp_path / "policy.toml", tmp_path / "workload.toml"
    config.write_text('policy = "fifo"\n')
    workload.write_text("")
    code, _out, err = admin(capsys, "policy", "simulate", "--config", str(config), "--workload", str(workload))
    assert code == 1
    assert "simulator (fairpool.scheduler.simulator) is not part of this installation yet" in one_line(err)


@pytest.fixture
def simulation_files(tmp_path) -> tuple[str, str]:
    config, workload = tmp_path / "policy.toml", tmp_path / "workload.toml"
    config.write_text('policy = "fair-share"\n[tenants.alice]\nweight = 2\n')
    workload.write_text('duration = "20s"\nseed = 1\n[[node]]\nname = "n"\ncpus = 2\n'
                        '[[stream]]\ntenant = "alice"\narrive = "backlog"\njobs = 40\nruntime = "1s"\n'
                        '[[stream]]\ntenant = "bob"\narrive = "backlog"\njobs = 40\nruntime = "1s"\n')
    return str(config), str(workload)


@pytest.mark.skipif(not HAS_SIMULATOR, reason="the simulator is not installed yet")
def test_simulate_prints_the_report_without_a_scheduler(capsys, simulation_files):
    config, workload = simulation_files
    code, out, err = admin(capsys, "policy", "simulate", "--config", config, "--workload", workload)
    assert code == 0, err
    assert "alice" in out and "bob" in out


@pytest.mark.skipif(not HAS_SIMULATOR, reason="the simulator is not installed yet")
def test_simulate_json_is_the_reports_dict(capsys, simulation_files):
    config, workload = simulation_files
    code, out, err = admin(capsys, "policy", "simulate", "--config", config, "--workload", workload, "--json")
    assert code == 0, err
    assert isinstance(json.loads(out), dict)


@pytest.mark.skipif(not HAS_SIMULATOR, reason="the simulator is not installed yet")
def test_simulate_with_a_garbage_config_exits_2_with_one_line(capsys, simulation_files, tmp_path):
    _config, workload = simulation_files
    garbage = tmp_path / "garbage.toml"
    garbage.write_text("policy = = 1\n")
    code, _out, err = admin(capsys, "policy", "simulate", "--config", str(garbage), "--workload", workload)
    assert code == 2
    assert "is not valid TOML" in one_line(err)


# --- journal inspect -------------------------------------------------------------------------


def sample_records() -> list:
    return [
        RClusterOpened("c1", "alice", "compute", SECRETS[0], False, 0, AT),
        RJobsQueued("c1", [JobSubmit("c1.1", SECRETS[1]), JobSubmit("c1.2", SECRETS[1])], [1, 2], AT),
        RAssigned("n1", "session-1", ["c1.1", "c1.2"]),
        RResults([JobResult("c1.1", "FINISHED", SECRETS[2], stdout=SECRETS[3].decode(), node="n1")]),
        RAcked(["c1.1"]),
        RPolicy("fair-share"),
        RClusterClosed("c1"),
    ]


@pytest.fixture
def state_dir(tmp_path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    journal = JournalFile(path / JOURNAL_NAME, fsync=False)
    journal.append(sample_records())
    journal.close()
    return path


def inspect(capsys, state_dir: Path, *extra: str) -> tuple[int, str, str]:
    return admin(capsys, "journal", "inspect", "--state-dir", str(state_dir), *extra)


def test_inspect_lists_every_record_with_offset_and_kind(capsys, state_dir):
    code, out, err = inspect(capsys, state_dir)
    assert code == 0 and err == ""
    offsets = read_journal(state_dir / JOURNAL_NAME).offsets
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [int(r[0]) for r in rows] == offsets
    assert [r[2] for r in rows] == ["cluster-opened", "jobs-queued", "assigned", "results", "acked", "policy",
                                   "cluster-closed"]
    assert "tenant=alice" in out and "node=n1" in out and "name=fair-share" in out


def test_inspect_shows_payload_sizes_never_payload_bytes(capsys, state_dir):
    code, out, _err = inspect(capsys, state_dir)
    assert code == 0
    assert f"spec_bytes={len(SECRETS[0])}" in out and f"payload_bytes={2 * len(SECRETS[1])}" in out
    assert not any(secret.decode() in out for secret in SECRETS)


def test_inspect_json_is_one_document_with_records_and_counts(capsys, state_dir):
    code, out, _err = inspect(capsys, state_dir, "--json")
    doc = json.loads(out)
    assert code == 0
    assert doc["total"] == 7 and doc["torn"] is None and doc["corrupt"] is None
    assert doc["counts"]["jobs-queued"] == 1
    queued = doc["records"][1]
    assert queued["kind"] == "jobs-queued" and queued["uids"] == ["c1.1", "c1.2"]
    assert not any(secret.decode() in out for secret in SECRETS)


def test_inspect_json_flag_may_come_before_the_verb(capsys, state_dir):
    code, out, _err = admin(capsys, "--json", "journal", "--state-dir", str(state_dir))
    assert code == 0
    assert json.loads(out)["total"] == 7


def test_inspect_limit_shows_the_last_records(capsys, state_dir):
    code, out, _err = inspect(capsys, state_dir, "--limit", "2", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["total"] == 7
    assert [r["kind"] for r in doc["records"]] == ["policy", "cluster-closed"]


def test_inspect_torn_tail_shows_every_intact_record_and_the_tail(capsys, state_dir):
    path = state_dir / JOURNAL_NAME
    intact = path.stat().st_size
    with open(path, "ab") as f:
        f.write(frame(encode_record(RAcked(["c1.2"])))[:-3])  # a crash mid-write
    code, out, _err = inspect(capsys, state_dir)
    assert code == 0  # the scheduler cuts a torn tail itself: not corruption
    assert "cluster-closed" in out
    assert f"torn tail: {path.stat().st_size - intact} bytes at offset {intact}" in out


def test_inspect_corrupt_middle_shows_records_up_to_it_then_exits_1(capsys, state_dir):
    path = state_dir / JOURNAL_NAME
    offsets = read_journal(path).offsets
    data = bytearray(path.read_bytes())
    data[offsets[3] + 8 + 2] ^= 0xFF  # inside the 4th record's body: its checksum fails
    path.write_bytes(bytes(data))
    code, out, _err = inspect(capsys, state_dir)
    assert code == 1
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [r[2] for r in rows] == ["cluster-opened", "jobs-queued", "assigned"]
    assert out.strip().splitlines()[-1].startswith(f"CORRUPT: journal {path} is corrupt at offset {offsets[3]}")


def test_inspect_corrupt_middle_json_names_the_offset(capsys, state_dir):
    path = state_dir / JOURNAL_NAME
    offsets = read_journal(path).offsets
    data = bytearray(path.read_bytes())
    data[offsets[1] + 8 + 2] ^= 0xFF
    path.write_bytes(bytes(data))
    code, out, _err = inspect(capsys, state_dir, "--json")
    doc = json.loads(out)
    assert code == 1
    assert doc["corrupt"]["offset"] == offsets[1] and "checksum mismatch" in doc["corrupt"]["error"]
    assert [r["kind"] for r in doc["records"]] == ["cluster-opened"]


def test_inspect_without_a_journal_exits_1_with_one_line(capsys, tmp_path):
    code, out, err = inspect(capsys, tmp_path / "nowhere")
    assert code == 1 and out == ""
    assert f"no journal at {tmp_path / 'nowhere' / JOURNAL_NAME}" in one_line(err)

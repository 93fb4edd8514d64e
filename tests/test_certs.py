"""``fairpool certs init|issue`` (fairpool.certs, fairpool.certscli) and the ``tls`` config key they feed."""

from __future__ import annotations

import ipaddress
import stat
import tomllib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from fairpool import certs
from fairpool.cli import main
from fairpool.config import ConfigError, load_node_config, load_scheduler_config
from fairpool.handshake import CertIdentity
from fairpool.tls import TlsFiles


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{text}"
    return lines[0]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture
def ca_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    directory = tmp_path / "certs"
    assert main(["certs", "init", "--dir", str(directory)]) == 0
    capsys.readouterr()
    return directory


# --- init ------------------------------------------------------------------------------------------


def test_init_makes_a_ca_with_a_private_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "certs"
    assert main(["certs", "init", "--dir", str(directory), "--days", "30"]) == 0
    out = capsys.readouterr().out
    assert str((directory / "ca.key").absolute()) in out and "mode 0600" in out
    assert mode(directory / "ca.key") == 0o600
    assert mode(directory) == 0o700
    ca = load(directory / "ca.crt")
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0
    assert 29 <= (ca.not_valid_after_utc - ca.not_valid_before_utc).days <= 30


def test_init_never_overwrites_a_ca_without_force(ca_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = (ca_dir / "ca.key").read_bytes()
    assert main(["certs", "init", "--dir", str(ca_dir)]) == 1
    assert "a CA exists already" in one_line(capsys.readouterr().err)
    assert (ca_dir / "ca.key").read_bytes() == key
    assert main(["certs", "init", "--dir", str(ca_dir), "--force"]) == 0
    assert (ca_dir / "ca.key").read_bytes() != key
    assert mode(ca_dir / "ca.key") == 0o600


def test_init_refuses_a_validity_below_one_day(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["certs", "init", "--dir", str(tmp_path / "c"), "--days", "0"]) == 2
    assert one_line(capsys.readouterr().err) == (
        "fairpool certs init: error: bad validity 0: expected a number of days >= 1")
    assert not (tmp_path / "c").exists()


# --- issue -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["scheduler", "node", "client", "admin"])
def test_issue_writes_a_certificate_and_a_0600_key_per_role(ca_dir: Path, role: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["certs", "issue", role, "someone", "--dir", str(ca_dir)]) == 0
    out = capsys.readouterr().out
    cert_path, key_path = ca_dir / f"{role}-someone.crt", ca_dir / f"{role}-someone.key"
    assert mode(key_path) == 0o600
    cert = load(cert_path)
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert key.public_key() == cert.public_key()
    cert.verify_directly_issued_by(load(ca_dir / "ca.crt"))
    assert certs.certificate_identity(cert_path) == CertIdentity(role, "someone")
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH if role == "scheduler" else ExtendedKeyUsageOID.CLIENT_AUTH]
    assert str(cert_path.absolute()) in out and str(key_path.absolute()) in out


def test_a_scheduler_certificate_names_localhost_by_default(ca_dir: Path) -> None:
    issued = certs.issue("scheduler", "pool", directory=ca_dir)
    alt = load(issued.files.cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert alt.get_values_for_type(x509.DNSName) == ["localhost"]
    assert alt.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    assert alt.get_values_for_type(x509.UniformResourceIdentifier) == ["fairpool:role:scheduler"]


def test_a_scheduler_certificate_names_the_hosts_given(ca_dir: Path) -> None:
    assert main(["certs", "issue", "scheduler", "pool", "--dir", str(ca_dir),
                 "--host", "Pool.Example.org", "--host", "10.1.2.3"]) == 0
    alt = load(ca_dir / "scheduler-pool.crt").extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert alt.get_values_for_type(x509.DNSName) == ["pool.example.org"]
    assert alt.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.1.2.3")]


def test_the_printed_snippet_pastes_into_a_config_file(ca_dir: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["certs", "issue", "node", "n1", "--dir", str(ca_dir)]) == 0
    line = next(x.strip() for x in capsys.readouterr().out.splitlines() if x.strip().startswith("tls = "))
    config_file = tmp_path / "node.toml"
    config_file.write_text(line + "\n")
    config = load_node_config(config_file, {})
    assert config.tls == TlsFiles((ca_dir / "ca.crt").absolute(), (ca_dir / "node-n1.crt").absolute(),
                                  (ca_dir / "node-n1.key").absolute())


def test_a_client_certificate_tells_how_to_connect_as_its_tenant(ca_dir: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["certs", "issue", "client", "alice", "--dir", str(ca_dir)]) == 0
    out = capsys.readouterr().out
    assert "It proves tenant 'alice'" in out and "SharedJobCluster(compute, scheduler=..., tls={" in out


def test_issue_never_overwrites_without_force(ca_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["certs", "issue", "node", "n1", "--dir", str(ca_dir)]) == 0
    before = (ca_dir / "node-n1.key").read_bytes()
    capsys.readouterr()
    assert main(["certs", "issue", "node", "n1", "--dir", str(ca_dir)]) == 1
    assert "exists already" in one_line(capsys.readouterr().err)
    assert (ca_dir / "node-n1.key").read_bytes() == before
    assert main(["certs", "issue", "node", "n1", "--dir", str(ca_dir), "--force"]) == 0
    assert (ca_dir / "node-n1.key").read_bytes() != before
    assert mode(ca_dir / "node-n1.key") == 0o600


@pytest.mark.parametrize(("args", "message"), [
    (["wizard", "merlin"], "unknown role 'wizard' (expected one of scheduler, node, client, admin)"),
    (["client", "a b"], "bad name 'a b'"),
    (["client", "../escape"], "bad name '../escape'"),
    (["node", "n1", "--host", "example.org"], "--host is for scheduler certificates only"),
    (["scheduler", "s", "--host", "bad host!"], "bad host 'bad host!'"),
    (["node", "n1", "--days", "0"], "bad validity 0"),
    (["node", "n1", "--days", "soon"], "argument --days: invalid int value: 'soon'"),
    (["node"], "the following arguments are required: NAME"),
])
def test_bad_arguments_exit_2_with_one_line(ca_dir: Path, args: list[str], message: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["certs", "issue", *args, "--dir", str(ca_dir)]) == 2
    assert message in one_line(capsys.readouterr().err)
    assert sorted(p.name for p in ca_dir.iterdir()) == ["ca.crt", "ca.key"]


def test_issue_without_a_ca_says_to_make_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["certs", "issue", "node", "n1", "--dir", str(tmp_path / "none")]) == 1
    assert "run `fairpool certs init --dir" in one_line(capsys.readouterr().err)


def test_certs_without_a_verb_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["certs"]) == 2
    assert "init|issue" in capsys.readouterr().err


def test_a_certificate_does_not_outlive_its_ca(tmp_path: Path) -> None:
    ca = certs.init_ca(tmp_path, days=10)
    issued = certs.issue("node", "n1", directory=tmp_path, days=365)
    assert issued.not_after == ca.not_after.replace(microsecond=0)
    assert load(issued.files.cert).not_valid_after_utc == issued.not_after


# --- the tls config key and flags ------------------------------------------------------------------


def test_a_scheduler_config_takes_tls_paths_made_absolute(ca_dir: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    certs.issue("scheduler", "pool", directory=ca_dir)
    monkeypatch.chdir(ca_dir)
    config_file = tmp_path / "scheduler.toml"
    config_file.write_text('tls = { ca = "ca.crt", cert = "scheduler-pool.crt", key = "scheduler-pool.key" }\n')
    config = load_scheduler_config(config_file, {})
    assert config.tls == TlsFiles(ca_dir / "ca.crt", ca_dir / "scheduler-pool.crt", ca_dir / "scheduler-pool.key")


@pytest.mark.parametrize(("value", "message"), [
    ('"ca.crt"', "expected a table { ca ="),
    ('{ ca = "a", cert = "b" }', "key missing"),
    ('{ ca = "a", cert = "b", key = "c", pass = "d" }', "unknown key pass"),
    ('{ ca = "", cert = "b", key = "c" }', "ca: expected a non-empty path string"),
])
def test_a_malformed_tls_table_is_a_config_error(tmp_path: Path, value: str, message: str) -> None:
    config_file = tmp_path / "scheduler.toml"
    config_file.write_text(f"tls = {value}\n")
    with pytest.raises(ConfigError, match="bad value for 'tls' in") as info:
        load_scheduler_config(config_file, {})
    assert message in str(info.value)


def test_a_daemon_with_unusable_tls_files_does_not_start(ca_dir: Path, tmp_path: Path) -> None:
    client = certs.issue("client", "alice", directory=ca_dir).files
    with pytest.raises(ConfigError, match="is a client certificate; a node needs a node certificate"):
        load_node_config(None, {"tls": client})
    with pytest.raises(ConfigError, match="does not exist"):
        load_scheduler_config(None, {"tls": TlsFiles(client.ca, tmp_path / "nope.crt", client.key)})


def test_tls_flags_go_together(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scheduler", "--tls-ca", "ca.crt", "--tls-cert", "s.crt"]) == 2
    assert one_line(capsys.readouterr().err) == (
        "fairpool scheduler: error: --tls-ca, --tls-cert and --tls-key go together: --tls-key missing or empty")


def test_tls_flags_reach_the_node_config(ca_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    certs.issue("scheduler", "pool", directory=ca_dir)
    files = [str(ca_dir / name) for name in ("ca.crt", "scheduler-pool.crt", "scheduler-pool.key")]
    # A scheduler certificate is refused for a node: proof that the flags were read and checked.
    assert main(["node", "--tls-ca", files[0], "--tls-cert", files[1], "--tls-key", files[2]]) == 2
    assert "is a scheduler certificate; a node needs a node certificate" in one_line(capsys.readouterr().err)


def test_up_refuses_tls(ca_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    certs.issue("scheduler", "pool", directory=ca_dir)
    files = [str(ca_dir / name) for name in ("ca.crt", "scheduler-pool.crt", "scheduler-pool.key")]
    assert main(["up", "--tls-ca", files[0], "--tls-cert", files[1], "--tls-key", files[2]]) == 2
    assert "`fairpool up` does not run TLS" in one_line(capsys.readouterr().err)


def test_the_example_configs_document_tls() -> None:
    repo = Path(__file__).resolve().parent.parent
    for name in ("scheduler.toml", "node.toml"):
        line = next(x for x in (repo / "config" / name).read_text().splitlines() if x.startswith("# tls = "))
        table = tomllib.loads(line.removeprefix("# "))["tls"]
        assert set(table) == {"ca", "cert", "key"}

"""Every way into a cluster takes the same credentials: constructor, reattach, recover_jobs, executor.

``resolve_settings`` names the connection keywords (scheduler, tenant,
token, secret_file, tls); each entry point must accept them all, and a
reattach must resolve the credential the dead client used -- from its
recover file, which keeps the secret file only if one was read and the TLS
files' paths, never a token.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fairpool import SharedJobCluster, certs, recover_jobs
from fairpool.clients.asynccluster import AsyncSharedJobCluster
from fairpool.clients.reattach import reattach_settings
from fairpool.clients.recover import RecoverInfo, read_recover_file, write_recover_file
from fairpool.clients.settings import resolve_settings
from fairpool.tls import TlsFiles

CONNECTION_KEYWORDS = set(inspect.signature(resolve_settings).parameters)


@pytest.fixture(scope="module")
def alice_tls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A client certificate for tenant alice, as a user passes ``tls=``."""
    ca = tmp_path_factory.mktemp("ca")
    certs.init_ca(ca)
    files = certs.issue("client", "alice", directory=ca).files
    return {"ca": str(files.ca), "cert": str(files.cert), "key": str(files.key)}


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    path.write_text("the-secret\n")
    return path


@pytest.mark.parametrize("entry", [SharedJobCluster.__init__, SharedJobCluster.reattach,
                                   AsyncSharedJobCluster.reattach, recover_jobs],
                         ids=["constructor", "reattach", "async-reattach", "recover_jobs"])
def test_every_entry_point_takes_every_connection_keyword(entry: Callable[..., Any]) -> None:
    assert CONNECTION_KEYWORDS == {"scheduler", "tenant", "secret_file", "token", "tls"}
    assert CONNECTION_KEYWORDS <= set(inspect.signature(entry).parameters)


def test_the_sync_and_async_clusters_share_one_reattach() -> None:
    assert SharedJobCluster.reattach.__func__ is AsyncSharedJobCluster.reattach.__func__  # type: ignore[attr-defined]


@pytest.mark.parametrize("credential", ["secret", "token", "tls"])
def test_cluster_kwargs_resolve_to_the_same_settings(credential: str, secret_file: Path,
                                                     alice_tls: dict[str, str]) -> None:
    given: dict[str, Any] = {"secret": {"secret_file": secret_file}, "token": {"token": "t0k", "tenant": "bob"},
                             "tls": {"tls": alice_tls}}[credential]
    settings = resolve_settings("127.0.0.1:4000", **given)
    assert settings.auth == credential
    assert set(settings.cluster_kwargs()) == CONNECTION_KEYWORDS
    assert resolve_settings(**settings.cluster_kwargs()) == settings


def test_a_tls_recover_file_gives_back_the_certificate_and_reads_no_secret(tmp_path: Path,
                                                                           alice_tls: dict[str, str]) -> None:
    # what a TLS client writes (core._write_recover_file): no secret file, the TLS files' paths
    settings = resolve_settings("127.0.0.1:4000", tls=alice_tls)
    info = RecoverInfo("c1", "127.0.0.1:4000", settings.tenant, "", 1700000000.0, tls=settings.tls_paths)
    assert read_recover_file(write_recover_file(info, tmp_path)) == info
    found, state = reattach_settings("c1", None, None, None, directory=tmp_path)
    assert state is not None
    assert (found.auth, found.tenant, found.secret) == ("tls", "alice", b"")
    assert found.tls == TlsFiles(*(Path(alice_tls[key]) for key in ("ca", "cert", "key")))


def test_an_explicit_tls_wins_over_the_recover_files_secret(tmp_path: Path, secret_file: Path,
                                                            alice_tls: dict[str, str]) -> None:
    info = RecoverInfo("c1", "127.0.0.1:4000", "alice", "", 1700000000.0)  # a token client's file
    write_recover_file(info, tmp_path)
    found, _ = reattach_settings("c1", None, None, None, directory=tmp_path, tls=alice_tls)
    assert (found.auth, found.secret) == ("tls", b"")


def test_a_secret_recover_file_still_reads_its_secret_file(tmp_path: Path, secret_file: Path) -> None:
    write_recover_file(RecoverInfo("c1", "127.0.0.1:4000", "alice", str(secret_file), 1700000000.0), tmp_path)
    found, _ = reattach_settings("c1", None, None, None, directory=tmp_path)
    assert (found.auth, found.secret, found.tls) == ("secret", b"the-secret", None)

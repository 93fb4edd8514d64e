"""The dashboard's HTTP API against a real scheduler process (``--http``) and real nodes.

Login as the admin (the cluster secret) or as a tenant (name + token); the
JSON endpoints answer what ``fairpool admin --json`` answers; a tenant sees
only its own jobs; commands (drain, cancel) need a session and its CSRF
token; nothing but the login page and /healthz answers without a session.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import fairpool_command, gated_job, wait_for
from jobfunctions import wait_for_gate as hold_until_file
from webclient import WebClient, dashboard_address, submit_and_vanish

from fairpool import SharedJobCluster
from fairpool.address import Address
from fairpool.admin import call, resolve_credentials

# in_tmp_dir: clients' recover files land there.
pytestmark = [pytest.mark.scheduler_config(http="127.0.0.1:0"), pytest.mark.timeout(120), pytest.mark.usefixtures("in_tmp_dir")]


def wait_for_gate(gate: str) -> str:
    """Run until the test creates ``gate`` (a file): a job that stays RUNNING."""
    return hold_until_file(gate, timeout=90)


@pytest.fixture
def web(scheduler) -> WebClient:
    return WebClient(dashboard_address(scheduler))


@pytest.fixture
def admin_web(scheduler, web) -> WebClient:
    web.login_admin(scheduler.secret_file)
    return web


@pytest.fixture
def cli(scheduler) -> Callable[..., Any]:
    """The admin CLI's own call: ``cli("nodes.list")`` -> its JSON body."""
    creds = resolve_credentials(scheduler=scheduler.address, secret_file=scheduler.secret_file)
    return lambda verb, args=None: call(creds, verb, args)


@pytest.fixture
def running_job(scheduler, start_node, tmp_path) -> Iterator[tuple[SharedJobCluster, str]]:
    """A job of tenant alice RUNNING on node1 until the test ends: (cluster, uid)."""
    start_node(cpus=2, name="node1")
    with gated_job(scheduler, wait_for_gate, tmp_path / "gate") as (cluster, job):
        yield cluster, job.uid


def issue_token(cli: Callable[..., Any], tenant: str) -> str:
    issued = cli("tenants.add", {"name": tenant})
    return str(issued["token"])


# --- without a session --------------------------------------------------------------------


def test_the_page_and_health_check_need_no_login(web):
    page = web.get("/")
    assert page.status == 200 and b"<title>fairpool</title>" in page.body
    assert page.headers["content-type"].startswith("text/html")
    assert web.get("/static/app.js").status == 200
    assert web.get("/healthz").json() == {"ok": True}


@pytest.mark.parametrize("path", ["/api/status", "/api/jobs.list", "/api/nodes.list", "/api/history",
                                  "/api/session", "/api/events", "/metrics"])
def test_unauthenticated_requests_are_refused(web, path):
    assert web.get(path).status == 401


def test_unauthenticated_drain_is_refused(web, start_node, cli):
    start_node(cpus=1, name="node1")
    wait_for(lambda: cli("nodes.list"), message="node1 joined")
    assert web.post("/api/nodes.drain", {"name": "node1"}).status == 401
    assert cli("nodes.list")[0]["state"] == "up"


# --- login --------------------------------------------------------------------------------


def test_admin_logs_in_with_the_secret_and_gets_an_httponly_strict_cookie(scheduler, web):
    response = web.login(secret=scheduler.secret_file.read_text().strip())
    assert response.status == 200
    assert response.json()["role"] == "admin" and response.json()["csrf"]
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert web.get("/api/session").json()["role"] == "admin"


def test_a_wrong_secret_is_refused_without_a_cookie(web):
    response = web.login(secret="not the secret")
    assert response.status == 401 and "set-cookie" not in response.headers
    assert web.get("/api/status").status == 401


def test_a_wrong_tenant_token_is_refused(web, cli):
    issue_token(cli, "alice")
    assert web.login(tenant="alice", token="fpt_" + "A" * 43).status == 401
    assert web.login(tenant="alice", token="not a token").status == 401


def test_a_form_encoded_login_is_refused(scheduler, web):
    secret = scheduler.secret_file.read_text().strip()
    response = web.request("POST", "/api/login", raw=f"secret={secret}".encode(),
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status == 415 and not web.cookies


def test_logout_ends_the_session(admin_web):
    assert admin_web.post("/api/logout").status == 200
    assert admin_web.get("/api/status").status == 401


# --- reads: the CLI's answers ------------------------------------------------------------


def test_admin_sees_the_node_and_the_running_job_as_the_cli_does(admin_web, running_job, cli):
    _cluster, uid = running_job
    status = admin_web.get("/api/status").json()
    assert status["nodes"] == 1 and status["running"] >= 1 and status["policy"] == cli("status")["policy"]
    nodes = admin_web.get("/api/nodes.list").json()
    assert [(n["name"], n["cpus"], n["state"]) for n in nodes] == [(n["name"], n["cpus"], n["state"])
                                                                     for n in cli("nodes.list")]
    jobs = {j["uid"]: j for j in admin_web.get("/api/jobs.list?status=RUNNING").json()}
    assert jobs[uid]["tenant"] == "alice" and jobs[uid]["node"] == "node1"
    assert admin_web.get(f"/api/jobs.show?uid={uid}").json()["status"] == "RUNNING"


def test_jobs_filter_by_node_and_tenant(admin_web, running_job):
    _cluster, uid = running_job
    assert [j["uid"] for j in admin_web.get("/api/jobs.list?node=node1").json()] == [uid]
    assert admin_web.get("/api/jobs.list?node=elsewhere").json() == []
    assert admin_web.get("/api/jobs.list?tenant=bob").json() == []


def test_a_job_detail_has_its_stdout_stderr_and_traceback(scheduler, start_node, admin_web):
    start_node(cpus=1, name="node1")
    uid = submit_and_vanish(scheduler.address, scheduler.secret_file, "alice")
    job = wait_for(lambda: (j := admin_web.get(f"/api/jobs.show?uid={uid}").json()).get("status") == "FAILED" and j,
                   timeout=60, message="the job failed")
    assert "hello from the job" in job["stdout"]
    assert "a word on stderr" in job["stderr"]
    assert "the job failed on purpose" in job["traceback"]


def test_history_has_throughput_and_tenant_shares(admin_web, running_job):
    def latest_sample_shows_alice_running() -> Any:
        history = admin_web.get("/api/history").json()
        alice = history["tenants"].get("alice")
        return history if alice and alice["received"][-1] == 0.5 else None  # one CPU of two

    history = wait_for(latest_sample_shows_alice_running, timeout=20, message="a sample shows alice running")
    assert len(history["at"]) == len(history["throughput"]) == len(history["running"]) >= 1
    assert history["tenants"]["alice"]["entitlement"][-1] == 1.0  # the only tenant: all of the pool
    assert history["running"][-1] == 1 and history["cpus"][-1] == 2


def test_unknown_job_is_404(admin_web):
    assert admin_web.get("/api/jobs.show?uid=nope").status == 404


def test_events_stream_starts_with_a_pulse(admin_web):
    conn = http.client.HTTPConnection(admin_web.address.host, admin_web.address.port, timeout=10)
    try:
        conn.request("GET", "/api/events", headers={"Cookie": "; ".join(f"{k}={v}" for k, v in
                                                                      admin_web.cookies.items())})
        reply = conn.getresponse()
        assert reply.status == 200 and reply.getheader("content-type") == "text/event-stream"
        seen = b""
        while b"event: pulse" not in seen:
            line = reply.fp.readline()
            assert line, "the stream ended before a pulse"
            seen += line
        assert b'"status"' in reply.fp.readline()
    finally:
        conn.close()


def test_up_serves_the_dashboard_and_prints_its_url(tmp_path):
    proc = subprocess.Popen([*fairpool_command(), "up", "--listen", "127.0.0.1:0", "--cpus", "1"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        banner = line = ""
        while not line.strip().startswith("dashboard"):  # the banner comes once the local node joined
            line = proc.stdout.readline()
            assert line, f"up printed no dashboard line: {banner}{proc.communicate(timeout=20)[1]}"
            banner += line
        http_file = tmp_path / ".fairpool" / "scheduler.http"
        address = Address.parse(http_file.read_text().strip())
        assert f"http://{address}/" in banner
        assert address.is_loopback  # loopback unless told otherwise
        assert WebClient(address).get("/healthz").json() == {"ok": True}
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0
    assert not http_file.exists()  # gone with the scheduler


# --- a tenant's view -------------------------------------------------------------------------


def test_a_tenant_sees_only_its_own_jobs(scheduler, start_node, web, cli):
    start_node(cpus=1, name="node1")
    alice_token, bob_token = issue_token(cli, "alice"), issue_token(cli, "bob")
    mine = submit_and_vanish(scheduler.address, scheduler.secret_file, "alice", alice_token)
    theirs = submit_and_vanish(scheduler.address, scheduler.secret_file, "bob", bob_token)
    assert web.login(tenant="alice", token=alice_token).json() == {"role": "client", "tenant": "alice",
                                                                   "csrf": web.csrf}
    assert [j["uid"] for j in web.get("/api/jobs.list").json()] == [mine]
    assert [j["uid"] for j in web.get("/api/jobs.list?tenant=bob").json()] == [mine]  # no widening
    assert web.get(f"/api/jobs.show?uid={mine}").status == 200
    assert web.get(f"/api/jobs.show?uid={theirs}").status == 404  # "not yours" reads as "not found"
    assert set(web.get("/api/history").json()["tenants"]) <= {"alice"}


@pytest.mark.parametrize("path", ["/api/status", "/api/nodes.list", "/api/tenants.list", "/metrics"])
def test_a_tenant_cannot_read_pool_wide_views(web, cli, path):
    token = issue_token(cli, "alice")
    web.login(tenant="alice", token=token)
    assert web.get(path).status in (401, 403)


def test_a_tenant_cannot_drain_a_node(web, start_node, cli):
    start_node(cpus=1, name="node1")
    wait_for(lambda: cli("nodes.list"), message="node1 joined")
    web.login(tenant="alice", token=issue_token(cli, "alice"))
    assert web.post("/api/nodes.drain", {"name": "node1"}).status == 403
    assert cli("nodes.list")[0]["state"] == "up"


def test_a_replaced_token_ends_the_tenant_session(web, cli):
    web.login(tenant="alice", token=issue_token(cli, "alice"))
    assert web.get("/api/jobs.list").status == 200
    cli("tenants.add", {"name": "alice", "rotate": True})
    assert web.get("/api/jobs.list").status == 401


# --- commands ----------------------------------------------------------------------------------


def test_admin_drains_and_undrains_a_node_by_post(admin_web, running_job, cli):
    drained = admin_web.post("/api/nodes.drain", {"name": "node1"})
    assert drained.status == 200 and drained.json()["state"] == "draining"  # its job still runs
    assert cli("nodes.list")[0]["state"] == "draining"
    assert admin_web.post("/api/nodes.undrain", {"name": "node1"}).json()["state"] == "up"
    assert cli("nodes.list")[0]["state"] == "up"


def test_a_post_without_the_csrf_token_is_refused(admin_web, start_node, cli):
    start_node(cpus=1, name="node1")
    wait_for(lambda: cli("nodes.list"), message="node1 joined")
    assert admin_web.post("/api/nodes.drain", {"name": "node1"}, csrf=False).status == 403
    assert admin_web.post("/api/nodes.drain", {"name": "node1"},
                          headers={"X-CSRF-Token": "forged"}).status == 403
    assert cli("nodes.list")[0]["state"] == "up"


def test_a_cross_origin_post_is_refused(admin_web, start_node, cli):
    start_node(cpus=1, name="node1")
    wait_for(lambda: cli("nodes.list"), message="node1 joined")
    response = admin_web.post("/api/nodes.drain", {"name": "node1"}, headers={"Origin": "http://evil.example"})
    assert response.status == 403
    assert cli("nodes.list")[0]["state"] == "up"


def test_admin_cancels_a_running_job_by_post(admin_web, running_job, cli):
    _cluster, uid = running_job
    response = admin_web.post("/api/jobs.cancel", {"uids": [uid]})
    assert response.status == 200 and response.json()["cancelled"] == [uid]
    wait_for(lambda: all(j["uid"] != uid or j["status"] == "CANCELLED" for j in cli("jobs.list")),
             timeout=30, message="the job is cancelled")


def test_a_tenant_cannot_cancel_another_tenants_job(scheduler, start_node, web, cli):
    start_node(cpus=1, name="node1")
    bob_token = issue_token(cli, "bob")
    theirs = submit_and_vanish(scheduler.address, scheduler.secret_file, "bob", bob_token)
    web.login(tenant="alice", token=issue_token(cli, "alice"))
    assert web.post("/api/jobs.cancel", {"uids": [theirs]}).status == 404


# --- the HTTP layer ------------------------------------------------------------------------------


def raw_exchange(address: Address, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection; everything the server answers until it closes."""
    import socket

    with socket.create_connection((address.host, address.port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_keep_alive_serves_two_requests_on_one_connection(web):
    answer = raw_exchange(web.address, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                                       b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.count(b"HTTP/1.1 200") == 2


def test_a_malformed_request_gets_400_and_the_server_goes_on(web):
    assert raw_exchange(web.address, b"NOT HTTP AT ALL\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert web.get("/healthz").status == 200


def test_an_oversized_body_gets_413(web):
    response = web.request("POST", "/api/login", raw=b"x" * (65 * 1024),
                           headers={"Content-Type": "application/json"})
    assert response.status == 413


def test_an_unknown_api_is_404_and_a_read_verb_cannot_be_posted(admin_web):
    assert admin_web.get("/api/tenants.remove").status == 404
    assert admin_web.post("/api/status", {}).status == 405

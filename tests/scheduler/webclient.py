"""A small HTTP client for the dashboard tests: cookies, the CSRF header, JSON in and out.

Plain ``http.client`` (no extra dependency), one connection per request.
``dashboard_address(scheduler)`` waits for the address the scheduler writes
to ``STATE_DIR/scheduler.http`` once its dashboard listens.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import wait_for

from fairpool.address import Address


def dashboard_address(scheduler: Any) -> Address:
    path = Path(scheduler.state_dir) / "scheduler.http"
    text = wait_for(lambda: path.exists() and path.read_text().strip(), timeout=20,
                    message=f"the scheduler wrote {path}")
    return Address.parse(text)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebClient:
    address: Address
    cookies: dict[str, str] = field(default_factory=dict)
    csrf: str = ""

    def request(self, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None,
                raw: bytes | None = None, csrf: bool = True, timeout: float = 20.0) -> Response:
        conn = http.client.HTTPConnection(self.address.host, self.address.port, timeout=timeout)
        sent = dict(headers or {})
        if self.cookies:
            sent.setdefault("Cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        if method == "POST" and csrf and self.csrf:
            sent.setdefault("X-CSRF-Token", self.csrf)
        try:
            conn.request(method, path, body=data, headers=sent)
            reply = conn.getresponse()
            response = Response(reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read())
            for value in reply.headers.get_all("Set-Cookie") or []:
                name, _, rest = value.partition("=")
                cookie_value = rest.split(";")[0]
                if "Max-Age=0" in value:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = cookie_value
            return response
        finally:
            conn.close()

    def get(self, path: str, **kwargs: Any) -> Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Response:
        return self.request("POST", path, {} if body is None and "raw" not in kwargs else body, **kwargs)

    def login(self, **form: str) -> Response:
        response = self.request("POST", "/api/login", form)
        if response.status == 200:
            self.csrf = response.json()["csrf"]
        return response

    def login_admin(self, secret_file: Path) -> Response:
        response = self.login(secret=Path(secret_file).read_text().strip())
        assert response.status == 200, response.body
        return response


DETACHED_CLIENT = """
import os, sys, time
from fairpool import SharedJobCluster

def shout(text):
    import sys
    print(text)
    print("a word on stderr", file=sys.stderr)
    raise ValueError("the job failed on purpose")

address, secret_file, tenant, token = sys.argv[1:5]
kwargs = {"token": token} if token else {"secret_file": secret_file}
cluster = SharedJobCluster(shout, scheduler=address, tenant=tenant, **kwargs)
job = cluster.submit("hello from the job")
deadline = time.monotonic() + 30
while job.status.value == "CREATED" and time.monotonic() < deadline:
    time.sleep(0.02)
print(job.uid, flush=True)
os._exit(0)  # gone without acknowledging: the scheduler keeps the job's result for it
"""


def submit_and_vanish(address: str, secret_file: Path, tenant: str, token: str = "") -> str:
    """A client process submits one failing job (it prints, then raises) and dies; the job's uid."""
    done = subprocess.run([sys.executable, "-c", DETACHED_CLIENT, address, str(secret_file), tenant, token],
                          capture_output=True, text=True, timeout=60, check=False, cwd=Path(secret_file).parent)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]

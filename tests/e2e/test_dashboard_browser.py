"""The dashboard in a real browser: headless Chromium (Debian's ``chromium``, driven by Playwright;
no browser is ever downloaded) against a real scheduler and node.

The admin logs in with the secret, sees node1 and a RUNNING job, drains the
node with the page's button (and the scheduler says it is draining), and a
screenshot is taken. Then the same pages on a phone (390x844): nothing may
be wider than the screen on any of them. A tenant's token shows only its
own jobs and share.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import gated_job, wait_for
from jobfunctions import wait_for_gate as hold_until_file

from fairpool.admin import call, resolve_credentials

pytestmark = [pytest.mark.scheduler_config(http="127.0.0.1:0"), pytest.mark.timeout(240)]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TIMEOUT_MS = 30_000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PAGES = ["#/overview", "#/nodes", "#/tenants", "#/jobs"]


def wait_for_gate(gate: str) -> str:
    """Run until the test creates ``gate`` (a file): a job that stays RUNNING."""
    return hold_until_file(gate, timeout=200)


@pytest.fixture
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip("no chromium binary on this machine (Debian: apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (a test extra) is not installed")
    with sync_api.sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                              args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def pool(scheduler, start_node, tmp_path, monkeypatch) -> Iterator[dict[str, Any]]:
    """node1 (2 CPUs) and a job of tenant alice RUNNING on it; the dashboard's URL."""
    monkeypatch.chdir(tmp_path)  # the cluster's recover file lands here
    start_node(cpus=2, name="node1")
    with gated_job(scheduler, wait_for_gate, tmp_path / "gate") as (_, job):
        http = wait_for(lambda: (scheduler.state_dir / "scheduler.http").read_text().strip(), timeout=10)
        yield {"url": f"http://{http}/", "uid": job.uid, "secret": scheduler.secret_file.read_text().strip(),
               "creds": resolve_credentials(scheduler=scheduler.address, secret_file=scheduler.secret_file)}


def watch_errors(page: Any) -> list[str]:
    """The page's uncaught script errors, as they happen."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


def log_in(page: Any, pool: dict[str, Any]) -> None:
    page.goto(pool["url"])
    page.fill("#login-form input[name=secret]", pool["secret"])
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#page-overview:not([hidden])")


def fits_the_screen(page: Any) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def screenshot(page: Any, path: Path) -> bytes:
    page.screenshot(path=str(path), full_page=True)
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000, f"{path} is not a real screenshot"
    return data


def show(page: Any, hash_route: str, ready: str) -> None:
    page.evaluate("route => { location.hash = route }", hash_route)
    page.wait_for_selector(ready)


def test_admin_sees_a_running_job_and_drains_its_node_on_a_desktop(browser, pool, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.set_default_timeout(TIMEOUT_MS)
    errors = watch_errors(page)
    log_in(page, pool)
    page.wait_for_selector('.stat[data-stat="nodes"] .value:text-is("1")')

    show(page, "#/jobs", f'#jobs-table tr[data-job="{pool["uid"]}"][data-status="RUNNING"]')
    row = page.locator(f'#jobs-table tr[data-job="{pool["uid"]}"]')
    assert row.locator('td[data-field="node"]').inner_text() == "node1"

    show(page, "#/nodes", '#nodes-table tr[data-node="node1"]')
    node = page.locator('#nodes-table tr[data-node="node1"]')
    assert node.locator('td[data-field="state"]').inner_text() == "up"
    node.locator('button[data-action="drain"]').click()
    page.wait_for_selector('#nodes-table tr[data-node="node1"] td[data-field="state"] .badge:text-is("draining")')
    assert [n["state"] for n in call(pool["creds"], "nodes.list")] == ["draining"]  # the scheduler says so too

    screenshot(page, tmp_path / "dashboard-desktop.png")
    for hash_route in PAGES:
        show(page, hash_route, f"#page-{hash_route[2:]}:not([hidden])")
        assert fits_the_screen(page), f"{hash_route} is wider than a desktop screen"
    assert errors == []


def test_every_page_fits_a_phone_screen(browser, pool, tmp_path):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True,
                                  device_scale_factor=2)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors = watch_errors(page)
    try:
        log_in(page, pool)
        page.wait_for_selector('.stat[data-stat="running"] .value:text-is("1")')
        assert page.evaluate("window.innerWidth") == 390
        checked = []
        for hash_route in PAGES:
            show(page, hash_route, f"#page-{hash_route[2:]}:not([hidden])")
            page.wait_for_timeout(300)  # the page's data has arrived and been laid out
            assert fits_the_screen(page), f"{hash_route} overflows a 390px wide phone screen"
            checked.append(hash_route)
        show(page, f"#/jobs/{pool['uid']}", '#job-facts dd')
        assert fits_the_screen(page), "a job's page overflows a 390px wide phone screen"
        show(page, "#/nodes", '#nodes-table tr[data-node="node1"]')
        screenshot(page, tmp_path / "dashboard-phone.png")
        assert checked == PAGES
        assert errors == []
    finally:
        context.close()


def test_a_tenant_sees_only_its_jobs_page_and_its_share(browser, pool):
    token = call(pool["creds"], "tenants.add", {"name": "carol"})["token"]  # carol has no job
    page = browser.new_page(viewport={"width": 390, "height": 844})
    page.set_default_timeout(TIMEOUT_MS)
    errors = watch_errors(page)
    page.goto(pool["url"])
    page.fill("#login-form input[name=tenant]", "carol")
    page.fill("#login-form input[name=token]", token)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#page-jobs:not([hidden]) #jobs-table td.empty")
    assert page.inner_text("#who-name") == "tenant carol"
    page.wait_for_selector('#nav a[data-page="nodes"]', state="hidden")
    page.wait_for_selector('#nav a[data-page="overview"]', state="hidden")
    assert page.locator(f'tr[data-job="{pool["uid"]}"]').count() == 0  # alice's job is not shown
    show(page, "#/tenants", "#page-tenants:not([hidden])")
    # (the page hides the all-tenants card once it knows who is logged in: wait for it)
    page.wait_for_selector("#tenants-card", state="hidden")
    assert fits_the_screen(page)
    assert errors == []

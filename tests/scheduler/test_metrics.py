"""/metrics of a real scheduler process: Prometheus text that prometheus_client parses, the
families an operator needs, and tenant labels bounded to the configured top-N plus "other"."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import wait_for
from jobfunctions import double
from prometheus_client.parser import text_string_to_metric_families
from webclient import WebClient, dashboard_address

from fairpool import SharedJobCluster
from fairpool.scheduler.metrics import OTHER, Buckets, TenantLabels

# in_tmp_dir: clients' recover files land there.
pytestmark = [pytest.mark.scheduler_config(http="127.0.0.1:0"), pytest.mark.timeout(120), pytest.mark.usefixtures("in_tmp_dir")]

FAMILIES = {"fairpool_jobs_queued", "fairpool_jobs_running", "fairpool_jobs_finished", "fairpool_nodes",
            "fairpool_cpus", "fairpool_busy_slots", "fairpool_dispatch_latency_seconds",
            "fairpool_job_duration_seconds", "fairpool_journal_fsync_seconds", "fairpool_connections"}


@pytest.fixture
def scrape(scheduler):
    """``scrape()`` -> {family name: [(sample name, labels, value)]}, authenticated with the secret."""
    web = WebClient(dashboard_address(scheduler))
    secret = scheduler.secret_file.read_text().strip()

    def get() -> dict[str, list[tuple[str, dict[str, str], float]]]:
        response = web.get("/metrics", headers={"Authorization": f"Bearer {secret}"})
        assert response.status == 200, response.body
        assert response.headers["content-type"].startswith("text/plain")
        return {family.name: [(s.name, s.labels, s.value) for s in family.samples]
                for family in text_string_to_metric_families(response.body.decode())}

    return get


@pytest.fixture
def open_cluster(scheduler) -> Iterator:
    opened: list[SharedJobCluster] = []

    def open_one(tenant: str, computation=double) -> SharedJobCluster:
        cluster = SharedJobCluster(computation, scheduler=scheduler.address, secret_file=str(scheduler.secret_file),
                                   tenant=tenant)
        opened.append(cluster)
        return cluster

    yield open_one
    for cluster in opened:
        cluster.close(timeout=10, terminate=True)


def value(metrics, family: str, sample: str | None = None, **labels: str) -> float:
    return sum(v for name, got, v in metrics.get(family, [])
               if (sample is None or name == sample) and all(got.get(k) == w for k, w in labels.items()))


def test_metrics_need_the_admin_credential(scheduler):
    web = WebClient(dashboard_address(scheduler))
    assert web.get("/metrics").status == 401
    assert web.get("/metrics", headers={"Authorization": "Bearer wrong"}).status == 401


def test_metrics_parse_and_have_every_family(scrape):
    assert FAMILIES <= set(scrape())


def test_metrics_count_nodes_cpus_and_connections(scrape, start_node, open_cluster):
    start_node(cpus=2, name="node1")
    open_cluster("alice")
    metrics = wait_for(lambda: (m := scrape()) and value(m, "fairpool_nodes", state="up") == 1 and m,
                       message="node1 counted up")
    assert value(metrics, "fairpool_cpus") == 2
    assert value(metrics, "fairpool_connections", role="node") == 1
    assert value(metrics, "fairpool_connections", role="client") == 1


def test_finished_jobs_are_counted_by_tenant_with_their_durations(scrape, start_node, open_cluster):
    start_node(cpus=2, name="node1")
    cluster = open_cluster("alice")
    assert [job.result(timeout=60) for job in [cluster.submit(i) for i in range(5)]] == [0, 2, 4, 6, 8]
    metrics = wait_for(lambda: (m := scrape()) and value(m, "fairpool_jobs_finished", tenant="alice") >= 5 and m,
                       message="five finished jobs counted")
    assert value(metrics, "fairpool_jobs_finished", "fairpool_jobs_finished_total",
                 tenant="alice", status="FINISHED") == 5
    assert value(metrics, "fairpool_job_duration_seconds", "fairpool_job_duration_seconds_count") == 5
    assert value(metrics, "fairpool_dispatch_latency_seconds", "fairpool_dispatch_latency_seconds_count") == 5
    assert value(metrics, "fairpool_journal_fsync_seconds", "fairpool_journal_fsync_seconds_count") >= 1


@pytest.mark.scheduler_config(http="127.0.0.1:0", metrics_tenants=2)
def test_tenant_labels_are_bounded_to_the_top_n_plus_other(scrape, open_cluster):
    jobs = [open_cluster(tenant).submit(1) for tenant in ("t1", "t2", "t3", "t4")]  # no node: they stay queued
    wait_for(lambda: all(job.status.value == "QUEUED" for job in jobs), message="all four jobs queued")
    queued = {labels["tenant"]: v for name, labels, v in scrape()["fairpool_jobs_queued"]}
    assert queued == {"t1": 1, "t2": 1, OTHER: 2}


def test_tenant_labels_keep_a_name_once_given():
    labels = TenantLabels(2)
    assert [labels(t) for t in ("b", "a", "c", "b", "a", "d")] == ["b", "a", OTHER, "b", "a", OTHER]


def test_buckets_are_cumulative_and_a_value_on_a_bound_counts_in_its_bucket():
    buckets = Buckets((1.0, 2.0))
    for v in (0.5, 1.0, 1.5, 3.0):
        buckets.observe(v)
    family = buckets.family("x_seconds", "x")
    by_le = {s.labels["le"]: s.value for s in family.samples if s.name == "x_seconds_bucket"}
    assert by_le == {"1.0": 2, "2.0": 3, "+Inf": 4}
    assert {s.name: s.value for s in family.samples if s.name in ("x_seconds_count", "x_seconds_sum")} == {
        "x_seconds_count": 4, "x_seconds_sum": 6.0}

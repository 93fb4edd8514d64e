"""Tenant tokens in SchedulerState, and what a tenant's connection may see (sans-IO).

``tenants add`` issues a token (its keys journaled, never the token itself),
``--rotate`` and ``tenants remove`` revoke it and close the connections it
let in; replay and snapshots keep the keys. A tenant's client sees only its
own jobs and clusters: another tenant's answer exactly as missing ones.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import pytest

from fairpool.handshake import Peer
from fairpool.jobstatus import JobStatus
from fairpool.messages import (
    AckResults,
    CancelJobs,
    CloseCluster,
    ClusterOpened,
    Error,
    JobSubmit,
    OpenCluster,
    Reply,
    Request,
    Submit,
)
from fairpool.scheduler.events import Close, Connected
from fairpool.scheduler.journalrecords import RTenant, RTenantToken, encode_record
from fairpool.scheduler.replay import replay, snapshot
from fairpool.tokens import TokenKeys, new_token, token_bytes, token_keys

if TYPE_CHECKING:
    from conftest import Outcome, StateDriver

_request_ids = itertools.count(1)
_conn_ids = itertools.count(500)  # clear of the driver's own numbering


def ask(driver: StateDriver, conn: int, verb: str, **args: Any) -> Reply:
    out = driver.send(conn, Request(next(_request_ids), verb, args))
    [reply] = out.messages(conn, Reply)
    return reply


def connect(driver: StateDriver, role: str, tenant: str = "", auth: str = "secret") -> int:
    conn = next(_conn_ids)
    driver.handle(Connected(conn, Peer(role, tenant, f"{tenant or role}-{conn}", auth), driver.now))
    return conn


def add(driver: StateDriver, admin: int, tenant: str, **args: Any) -> tuple[Reply, Outcome]:
    out = driver.send(admin, Request(next(_request_ids), "tenants.add", {"name": tenant, **args}))
    [reply] = out.messages(admin, Reply)
    return reply, out


def restarted(driver: StateDriver, records: list[Any]) -> Any:
    again = type(driver)(first_conn=1000)
    replay(again.state, records, driver.now)
    return again.state


@pytest.fixture
def admin(driver: StateDriver) -> int:
    return connect(driver, "admin", "", "secret")


# --- issuing ---------------------------------------------------------------------------------


def test_add_replies_with_a_new_token_whose_keys_alone_are_kept(driver: StateDriver, admin: int) -> None:
    reply, _out = add(driver, admin, "alice")
    assert reply.ok and set(reply.body) == {"tenant", "token"} and reply.body["tenant"] == "alice"
    token = reply.body["token"]
    token_bytes(token)  # a well-formed fairpool token
    assert driver.state.tokens == {"alice": token_keys(token)}


def test_add_journals_the_keys_and_replies_only_once_they_are_durable(driver: StateDriver, admin: int) -> None:
    reply, out = add(driver, admin, "alice")
    keys = token_keys(reply.body["token"])
    assert out.persisted() == [RTenantToken("alice", keys.stored_key, keys.server_key)]
    assert [send.message for send in out.durable()] == [reply]


def test_the_token_itself_is_in_no_journal_record(driver: StateDriver, admin: int) -> None:
    reply, out = add(driver, admin, "alice")
    token = reply.body["token"]
    raw = token_bytes(token)
    for record in out.persisted():
        encoded = encode_record(record)
        assert token.encode() not in encoded and raw not in encoded and token not in repr(record)


def test_a_pinned_token_factory_makes_the_core_deterministic(driver: StateDriver, admin: int) -> None:
    fixed = new_token()
    driver.state.make_token = lambda: fixed
    reply, _out = add(driver, admin, "alice")
    assert reply.body["token"] == fixed


def test_adding_a_tenant_that_has_a_token_is_refused_without_rotate(driver: StateDriver, admin: int) -> None:
    first, _out = add(driver, admin, "alice")
    again, out = add(driver, admin, "alice")
    assert not again.ok and "has a token already" in again.error and "--rotate" in again.error
    assert out.persisted() == [] and driver.state.tokens == {"alice": token_keys(first.body["token"])}


def test_add_applies_settings_given_with_it(driver: StateDriver, admin: int) -> None:
    reply, out = add(driver, admin, "alice", weight=3.0, max_running=4)
    assert reply.ok and set(reply.body) == {"tenant", "token"}
    tenant = driver.state.dispatcher.tenants["alice"]
    assert (tenant.weight, tenant.max_running) == (3.0, 4)
    assert RTenant("alice", 3.0, 0, 4) in out.persisted()


def test_add_with_bad_settings_issues_no_token(driver: StateDriver, admin: int) -> None:
    reply, out = add(driver, admin, "alice", weight=-1)
    assert not reply.ok and "weight must be > 0" in reply.error
    assert out.persisted() == [] and driver.state.tokens == {} and "alice" not in driver.state.dispatcher.tenants


@pytest.mark.parametrize("name", ["", " alice", "al\nice"])
def test_add_refuses_a_bad_tenant_name(driver: StateDriver, admin: int, name: str) -> None:
    reply, out = add(driver, admin, name)
    assert not reply.ok and out.persisted() == [] and driver.state.tokens == {}


def test_a_tenant_client_cannot_add_tokens(driver: StateDriver) -> None:
    alice = connect(driver, "client", "alice", "token")
    reply = ask(driver, alice, "tenants.add", name="mallory")
    assert not reply.ok and reply.error == "'tenants.add' needs the admin credential"
    assert driver.state.tokens == {} and driver.records == []


def test_tenants_list_says_who_has_a_token_and_never_the_keys(driver: StateDriver, admin: int) -> None:
    add(driver, admin, "alice")
    ask(driver, admin, "tenants.set", name="bob", weight=2.0)
    views = {v["name"]: v for v in ask(driver, admin, "tenants.list").body}
    assert (views["alice"]["token"], views["bob"]["token"]) == (True, False)
    keys = driver.state.tokens["alice"]
    assert keys.stored_key.hex() not in repr(views) and repr(keys.stored_key) not in repr(views)


def test_the_first_token_keeps_the_tenants_weight_settings(driver: StateDriver, admin: int) -> None:
    ask(driver, admin, "tenants.set", name="alice", weight=2.5, tier=1)
    add(driver, admin, "alice")
    tenant = driver.state.dispatcher.tenants["alice"]
    assert (tenant.weight, tenant.tier) == (2.5, 1)


# --- revoking ----------------------------------------------------------------------------------


def test_rotate_replaces_the_keys_and_closes_the_tenants_connections(driver: StateDriver, admin: int) -> None:
    first, _out = add(driver, admin, "alice")
    by_token = connect(driver, "client", "alice", "token")
    by_secret = connect(driver, "client", "alice", "secret")
    by_certificate = connect(driver, "client", "alice", "tls")
    bob = connect(driver, "client", "bob", "token")
    second, out = add(driver, admin, "alice", rotate=True)
    assert second.ok and second.body["token"] != first.body["token"]
    assert driver.state.tokens == {"alice": token_keys(second.body["token"])}
    assert sorted(out.closed()) == sorted([by_token, by_secret])
    assert all(out.errors(conn) for conn in (by_token, by_secret))  # told why before the hang-up
    assert set(driver.state.conns) >= {admin, by_certificate, bob}
    assert by_token not in driver.state.conns and by_secret not in driver.state.conns


def test_a_closed_tenant_connections_clusters_are_detached_and_their_jobs_kept(driver: StateDriver,
                                                                                admin: int) -> None:
    add(driver, admin, "alice")
    alice = connect(driver, "client", "alice", "token")
    driver.send(alice, OpenCluster("c1", "test", b"spec"))
    driver.submit(alice, "c1", 2)
    add(driver, admin, "alice", rotate=True)
    assert driver.state.clusters["c1"].conn is None
    assert [j.status for j in driver.state.jobs.values()] == [JobStatus.QUEUED, JobStatus.QUEUED]


def test_a_first_token_closes_the_tenants_connections_made_with_the_secret(driver: StateDriver, admin: int) -> None:
    by_secret = connect(driver, "client", "alice", "secret")
    _reply, out = add(driver, admin, "alice")
    assert out.closed() == [by_secret]


def test_remove_revokes_the_token_and_closes_its_connections(driver: StateDriver, admin: int) -> None:
    add(driver, admin, "alice", weight=2.0)
    alice = connect(driver, "client", "alice", "token")
    out = driver.send(admin, Request(7, "tenants.remove", {"name": "alice"}))
    [reply] = out.messages(admin, Reply)
    assert reply.ok and reply.body == {"tenant": "alice", "removed": True, "token_revoked": True}
    assert driver.state.tokens == {} and "alice" not in driver.state.dispatcher.tenants
    assert RTenantToken("alice") in out.persisted() and out.closed() == [alice]


def test_remove_of_a_tenant_with_only_a_token_revokes_it(driver: StateDriver, admin: int) -> None:
    add(driver, admin, "alice")
    reply = ask(driver, admin, "tenants.remove", name="alice")
    assert reply.ok and reply.body["token_revoked"] and driver.state.tokens == {}


def test_remove_of_an_unknown_tenant_is_refused_and_changes_nothing(driver: StateDriver, admin: int) -> None:
    add(driver, admin, "alice")
    out = driver.send(admin, Request(8, "tenants.remove", {"name": "nobody"}))
    [reply] = out.messages(admin, Reply)
    assert not reply.ok and "no such tenant 'nobody'" in reply.error
    assert out.persisted() == [] and list(driver.state.tokens) == ["alice"]


def test_set_does_not_touch_the_token(driver: StateDriver, admin: int) -> None:
    reply, _out = add(driver, admin, "alice")
    alice = connect(driver, "client", "alice", "token")
    out = driver.send(admin, Request(9, "tenants.set", {"name": "alice", "weight": 5.0}))
    assert out.closed() == [] and alice in driver.state.conns
    assert driver.state.tokens == {"alice": token_keys(reply.body["token"])}


# --- the journal ---------------------------------------------------------------------------------


def test_tokens_survive_a_replay_and_a_snapshot(driver: StateDriver, admin: int) -> None:
    alice, _out = add(driver, admin, "alice")
    bob, _out = add(driver, admin, "bob")
    expected = {"alice": token_keys(alice.body["token"]), "bob": token_keys(bob.body["token"])}
    assert restarted(driver, driver.records).tokens == expected
    assert restarted(driver, snapshot(driver.state)).tokens == expected


def test_a_rotated_or_removed_token_stays_so_after_a_replay_and_a_snapshot(driver: StateDriver, admin: int) -> None:
    add(driver, admin, "alice")
    rotated, _out = add(driver, admin, "alice", rotate=True)
    add(driver, admin, "bob")
    ask(driver, admin, "tenants.remove", name="bob")
    for records in (driver.records, snapshot(driver.state)):
        assert restarted(driver, records).tokens == {"alice": token_keys(rotated.body["token"])}


def test_snapshot_holds_keys_only(driver: StateDriver, admin: int) -> None:
    reply, _out = add(driver, admin, "alice")
    token = reply.body["token"]
    assert all(token.encode() not in encode_record(r) for r in snapshot(driver.state))


def test_the_state_keeps_its_tokens_dict_object_across_a_replay(driver: StateDriver, admin: int) -> None:
    # The shell's handshakes look tokens up through the dict's bound ``get``: it must stay the same dict.
    add(driver, admin, "alice")
    again = type(driver)(first_conn=1000)
    lookup = again.state.tokens.get
    replay(again.state, driver.records, driver.now)
    assert isinstance(lookup("alice"), TokenKeys)


# --- isolation: another tenant's jobs and clusters are "not found" --------------------------------


@pytest.fixture
def two_tenants(driver: StateDriver) -> tuple[int, int]:
    """alice with cluster c1 (jobs c1.0, c1.1 queued), bob with cluster c2 (job c2.0 queued)."""
    alice = driver.open_cluster("c1", "alice")
    driver.submit(alice, "c1", 2)
    bob = driver.open_cluster("c2", "bob")
    driver.submit(bob, "c2", 1)
    return alice, bob


def same_answer(driver: StateDriver, conn: int, verb: str, foreign: str, missing: str, key: str) -> str:
    """The errors for another tenant's thing and for one that does not exist, ids blanked: equal."""
    theirs = ask(driver, conn, verb, **{key: foreign})
    nothing = ask(driver, conn, verb, **{key: missing})
    assert not theirs.ok and not nothing.ok
    assert theirs.error.replace(foreign, "ID") == nothing.error.replace(missing, "ID"), (theirs, nothing)
    return theirs.error


@pytest.mark.parametrize("verb", ["jobs.show", "why"])
def test_another_tenants_job_is_not_found(driver: StateDriver, two_tenants: tuple[int, int], verb: str) -> None:
    _alice, bob = two_tenants
    assert "no such job" in same_answer(driver, bob, verb, "c1.0", "c9.0", "uid")


def test_cancelling_another_tenants_job_is_not_found_and_it_stays_queued(driver: StateDriver,
                                                                         two_tenants: tuple[int, int]) -> None:
    _alice, bob = two_tenants
    theirs = ask(driver, bob, "jobs.cancel", uids=["c1.0"])
    nothing = ask(driver, bob, "jobs.cancel", uids=["c9.0"])
    assert theirs.error.replace("c1.0", "ID") == nothing.error.replace("c9.0", "ID")
    assert driver.state.jobs["c1.0"].status is JobStatus.QUEUED and driver.queued() == ["c1.0", "c1.1", "c2.0"]


def test_a_cancel_of_own_and_foreign_jobs_reports_the_foreign_as_not_found(driver: StateDriver,
                                                                           two_tenants: tuple[int, int]) -> None:
    _alice, bob = two_tenants
    reply = ask(driver, bob, "jobs.cancel", uids=["c2.0", "c1.0", "c9.0"])
    assert reply.body == {"cancelled": ["c2.0"], "already_ended": [], "not_found": ["c1.0", "c9.0"]}
    assert driver.state.jobs["c1.0"].status is JobStatus.QUEUED


def test_a_cancel_message_for_another_tenants_jobs_does_nothing(driver: StateDriver,
                                                                two_tenants: tuple[int, int]) -> None:
    alice, bob = two_tenants
    out = driver.send(bob, CancelJobs(["c1.0", "c1.1"]))
    assert out.persisted() == [] and out.sent_to() <= {bob}
    assert [driver.state.jobs[u].status for u in ("c1.0", "c1.1")] == [JobStatus.QUEUED, JobStatus.QUEUED]


def test_acknowledging_another_tenants_jobs_forgets_nothing(driver: StateDriver, two_tenants: tuple[int, int]) -> None:
    _alice, bob = two_tenants
    out = driver.send(bob, AckResults(["c1.0"]))
    assert out.persisted() == [] and "c1.0" in driver.state.jobs


def test_jobs_list_shows_only_the_tenants_own_jobs_whatever_the_filter(driver: StateDriver,
                                                                       two_tenants: tuple[int, int]) -> None:
    _alice, bob = two_tenants
    assert [j["uid"] for j in ask(driver, bob, "jobs.list").body] == ["c2.0"]
    assert [j["uid"] for j in ask(driver, bob, "jobs.list", tenant="alice").body] == ["c2.0"]
    assert ask(driver, bob, "jobs.list", cluster="c1").body == ask(driver, bob, "jobs.list", cluster="c9").body == []


def test_a_client_with_an_empty_tenant_name_sees_no_ones_jobs(driver: StateDriver,
                                                              two_tenants: tuple[int, int]) -> None:
    nobody = connect(driver, "client", "", "secret")
    assert ask(driver, nobody, "jobs.list").body == []


@pytest.mark.parametrize(("verb", "extra"), [
    ("cluster.stats", {}), ("cluster.nodes", {}), ("cluster.allocate", {"nodes": ["n1"]}),
    ("cluster.deallocate", {"nodes": ["n1"], "terminate": True}), ("cluster.node_jobs", {"node": "n1"}),
    ("cluster.set_node_cpus", {"node": "n1", "cpus": 1}), ("cluster.resetup_node", {"node": "n1"}),
])
def test_another_tenants_cluster_is_not_found_by_cluster_verbs(driver: StateDriver, two_tenants: tuple[int, int],
                                                               verb: str, extra: dict[str, Any]) -> None:
    _alice, bob = two_tenants
    driver.node("n1", cpus=1)
    before = (driver.records[:], dict(driver.state.clusters["c1"].node_cpus), driver.state.clusters["c1"].allowed)
    theirs = driver.send(bob, Request(1, verb, {"cluster_id": "c1", **extra})).messages(bob, Reply)[0]
    nothing = driver.send(bob, Request(2, verb, {"cluster_id": "c9", **extra})).messages(bob, Reply)[0]
    assert (theirs.ok, theirs.error) == (nothing.ok, nothing.error) == (False, "no such cluster")
    after = (driver.records, dict(driver.state.clusters["c1"].node_cpus), driver.state.clusters["c1"].allowed)
    assert after == before


@pytest.mark.parametrize("message", [CloseCluster("ID"), Submit("ID", [JobSubmit("ID.7", b"args")])])
def test_closing_or_submitting_to_another_tenants_cluster_is_not_found(driver: StateDriver,
                                                                       two_tenants: tuple[int, int],
                                                                       message: Any) -> None:
    _alice, bob = two_tenants

    def to(cluster_id: str) -> Outcome:
        if isinstance(message, CloseCluster):
            return driver.send(bob, CloseCluster(cluster_id))
        return driver.send(bob, Submit(cluster_id, [JobSubmit(f"{cluster_id}.7", b"args")]))

    theirs, nothing = to("c1"), to("c9")
    assert theirs.messages(bob, Error) == [Error("no such cluster", "c1")]
    assert nothing.messages(bob, Error) == [Error("no such cluster", "c9")]
    assert theirs.persisted() == [] and not driver.state.clusters["c1"].closed and "c1.7" not in driver.state.jobs


def test_reattaching_to_another_tenants_cluster_is_not_found_and_leaves_it_alone(driver: StateDriver,
                                                                                 two_tenants: tuple[int, int]) -> None:
    alice, bob = two_tenants
    thief = connect(driver, "client", "bob", "token")
    out = driver.send(thief, OpenCluster("c1", "steal", b""))
    assert out.messages(thief, Error) == [Error("no such cluster", "c1")] and not out.messages(thief, ClusterOpened)
    assert driver.state.clusters["c1"].conn == alice and out.persisted() == []


@pytest.mark.parametrize("verb", ["status", "nodes.list", "nodes.show", "tenants.list", "tenants.set",
                                  "tenants.remove", "nodes.drain", "policy.set", "policy.show"])
def test_a_tenant_client_may_not_use_admin_verbs(driver: StateDriver, verb: str) -> None:
    alice = connect(driver, "client", "alice", "token")
    out = driver.send(alice, Request(1, verb, {"name": "n1"}))
    [reply] = out.messages(alice, Reply)
    assert not reply.ok and reply.error == f"{verb!r} needs the admin credential"
    assert out.persisted() == [] and not [i for i in out if isinstance(i, Close)]

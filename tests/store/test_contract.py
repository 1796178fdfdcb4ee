"""The `Store` contract, run against every backend: SQLite in a temporary directory and Redis
on a real server. What one backend does, the other must do too, down to the details the
pipeline relies on (a lapsed lease is still its owner's until someone else claims it, a
second save of a page changes nothing, a final job stays final)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from enricher.store.base import JobState, NewNotification, PageRecord, StoreError
from enricher.store.redis import RedisStore
from enricher.store.sqlite import SQLiteStore
from tests.store.conftest import redis_config

NOW = time.time()


@pytest.fixture(params=["sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "sqlite":
        s: Any = SQLiteStore(tmp_path / "data")
    else:
        server = request.getfixturevalue("redis_server")
        s = RedisStore(redis_config(server.url))
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def note(
    key: str,
    priority: int = 2,
    received_at: float | None = None,
    group: str = "g",
    status: str = "firing",
    body: bytes | None = None,
) -> NewNotification:
    at = NOW if received_at is None else received_at
    return NewNotification(
        idem_key=key,
        group_key=group,
        status=status,
        severity={0: "critical", 1: "error", 2: "warning"}.get(priority, "info"),
        priority=priority,
        alert_count=1,
        received_at=at,
        deadline=at + 30.0,
        body=body if body is not None else b'{"key": "%s"}' % key.encode(),
    )


def page(job_id: int, group: str = "g", status: str = "firing", **doc: Any) -> PageRecord:
    return PageRecord(
        id=job_id,
        group_key=group,
        status=status,
        paged_at=NOW + job_id,
        degraded=False,
        doc={"id": job_id, **doc},
    )


async def accepted(store: Any, *notes: NewNotification) -> list[int]:
    return [(await store.accept(n)).id for n in notes]


# -- intake ----------------------------------------------------------------------------------


async def test_accept_is_idempotent_per_key_and_counts_duplicates(store):
    first = await store.accept(note("a"))
    assert (first.duplicate, first.duplicates) == (False, 0)
    again = await store.accept(note("a", received_at=NOW + 5))
    assert (again.id, again.duplicate, again.duplicates) == (first.id, True, 1)
    assert (await store.accept(note("a"))).duplicates == 2
    other = await store.accept(note("b"))
    assert other.id != first.id and not other.duplicate
    assert await store.backlog() == 2  # duplicates are no new jobs


async def test_a_claimed_job_carries_the_notification_exactly(store):
    raw = b'{"alerts": [' + b",".join(b'{"n": %d}' % i for i in range(2000)) + b"]}"
    assert len(raw) > 4096  # stored compressed: must come back byte for byte
    n = note("big", priority=0, received_at=1700000000.123456, group="grp/\u00e9", body=raw)
    [nid] = await accepted(store, n)
    [job] = await store.claim("me", 30, 10, 1000)
    assert job.id == nid
    assert job.state == JobState.GATHERING  # taking a job starts its gather stage
    assert job.attempts == 1
    assert (job.priority, job.severity, job.status) == (0, "critical", "firing")
    assert job.group_key == "grp/\u00e9"
    assert job.received_at == 1700000000.123456
    assert job.deadline == 1700000000.123456 + 30.0
    assert job.body == raw
    assert job.bundle is None
    assert await store.notification_body(nid) == raw
    assert await store.notification_body(nid + 1000) is None


async def test_claims_take_the_most_urgent_then_the_oldest(store):
    specs = [
        ("warn-old", 2, 100.0),
        ("crit-new", 0, 300.0),
        ("warn-new", 2, 200.0),
        ("crit-old", 0, 50.0),
        ("info", 3, 10.0),
        ("tie-first", 1, 500.0),
        ("tie-second", 1, 500.0),  # same time: the earlier id first
    ]
    ids = dict(
        zip([s[0] for s in specs], await accepted(store, *(note(*s) for s in specs)), strict=True)
    )
    jobs = await store.claim("me", 30, 10, 1000)
    order = ["crit-old", "crit-new", "tie-first", "tie-second", "warn-old", "warn-new", "info"]
    assert [j.id for j in jobs] == [ids[k] for k in order]


async def test_claims_respect_max_priority_and_limit(store):
    c1, c2, w = await accepted(
        store, note("c1", 0, NOW), note("c2", 0, NOW + 1), note("w", 2, NOW - 10)
    )
    assert await store.claim("me", 30, 0, 1000) == []
    assert [j.id for j in await store.claim("me", 30, 1, 0)] == [c1]
    assert [j.id for j in await store.claim("me", 30, 10, 0)] == [c2]
    assert await store.claim("me", 30, 10, 1) == []  # the warning is above max_priority
    assert [j.id for j in await store.claim("me", 30, 10, 1000)] == [w]
    assert await store.claim("me", 30, 10, 1000) == []  # all leased
    assert await store.backlog() == 3


# -- leases ----------------------------------------------------------------------------------


async def test_a_lapsed_lease_goes_to_the_next_claimer(store):
    held, lapsing = await accepted(store, note("held", 0), note("lapsing", 2))
    assert [j.id for j in await store.claim("dies", 30, 1, 1000)] == [held]
    assert [j.id for j in await store.claim("dies", 0.2, 1, 1000)] == [lapsing]
    await asyncio.sleep(0.5)
    [again] = await store.claim("other", 30, 10, 1000)  # only the lapsed one
    assert again.id == lapsing
    assert again.attempts == 2
    assert again.state == JobState.GATHERING
    assert await store.renew([held, lapsing], "dies", 30) == 1  # it lost the lapsed one
    assert await store.renew([lapsing], "other", 30) == 1


async def test_a_lapsed_lease_stays_its_owners_until_someone_claims_it(store):
    [jid] = await accepted(store, note("a"))
    await store.claim("slow", 0.2, 10, 1000)
    await asyncio.sleep(0.5)
    assert await store.renew([jid], "stranger", 30) == 0
    assert await store.renew([jid, jid], "slow", 30) == 1  # renewed in time for nobody else
    assert await store.claim("other", 30, 10, 1000) == []
    assert await store.renew([], "slow", 30) == 0


async def test_release_gives_every_lease_of_its_owner_back(store):
    a, b, c = await accepted(store, note("a"), note("b"), note("c"))
    await store.claim("stopping", 30, 2, 1000)
    await store.claim("staying", 30, 1, 1000)
    assert await store.release("nobody") == 0
    assert await store.release("stopping") == 2
    assert await store.renew([a, b], "stopping", 30) == 0
    taken = await store.claim("next", 30, 10, 1000)
    assert sorted(j.id for j in taken) == [a, b]
    assert all(j.attempts == 2 for j in taken)
    assert await store.renew([c], "staying", 30) == 1
    assert await store.release("stopping") == 0


async def test_set_state_moves_an_open_job_and_a_final_one_stays_final(store):
    [jid] = await accepted(store, note("a"))
    await store.claim("me", 30, 10, 1000)
    await store.set_state(jid, "me", JobState.ANALYSING, bundle='{"b": 1}')
    assert await store.renew([jid], "me", 30) == 1  # an open state keeps the lease
    await store.release("me")
    [job] = await store.claim("me", 30, 10, 1000)
    assert (job.state, job.bundle, job.attempts) == (JobState.ANALYSING, '{"b": 1}', 2)
    await store.set_state(jid, "me", JobState.DONE)
    assert await store.backlog() == 0
    assert await store.renew([jid], "me", 30) == 0  # a final state ends the lease
    await store.set_state(jid, "me", JobState.GATHERING, error="late")
    assert await store.backlog() == 0  # final stays final
    assert await store.claim("me", 30, 10, 1000) == []


async def test_set_state_does_not_check_the_lease_owner(store):
    """Pinned as SQLite does it: `set_state` (like `finish`) takes the owner but does not
    compare it; only `renew` and `release` do. If an owner check is ever added, it goes into
    both backends and this test changes with them."""
    [jid] = await accepted(store, note("a"))
    await store.claim("holder", 30, 10, 1000)
    await store.set_state(jid, "stranger", JobState.FAILED, error="x")
    assert await store.backlog() == 0
    assert await store.renew([jid], "holder", 30) == 0


# -- pages and deliveries --------------------------------------------------------------------


async def test_save_page_is_atomic_and_idempotent_per_page(store):
    [jid] = await accepted(store, note("a"))
    await store.claim("me", 30, 10, 1000)
    await store.save_page(page(jid, v=1).model_copy(update={"doc": '{"v": 1}'}), ["b", "a"])
    rec = await store.get_page(jid)
    assert rec is not None
    assert (rec.doc, rec.status, rec.group_key, rec.degraded) == ({"v": 1}, "firing", "g", False)
    assert rec.paged_at == NOW + jid
    assert [(d.notifier, d.state, d.attempts, d.kind) for d in rec.deliveries] == [
        ("a", "pending", 0, "page"),
        ("b", "pending", 0, "page"),
    ]
    assert await store.pending_deliveries(jid) == ["a", "b"]
    await store.record_delivery(jid, "a", "pending", "429", NOW, NOW + 60)
    # Saved again (a retried write): the page and its rows stay, a new notifier is added.
    await store.save_page(page(jid, v=2), ["a", "c"])
    rec = await store.get_page(jid)
    assert rec.doc == {"v": 1}
    assert [(d.notifier, d.attempts) for d in rec.deliveries] == [("a", 1), ("b", 0), ("c", 0)]
    # The job moved to delivering: resumed, it goes straight to its deliveries.
    await store.release("me")
    [job] = await store.claim("me", 30, 10, 1000)
    assert job.state == JobState.DELIVERING


async def test_a_resolution_resolves_the_latest_firing_page(store):
    first, second, resolve = await accepted(store, note("f1"), note("f2"), note("r"))
    [other] = await accepted(store, note("o", group="other"))
    await store.save_page(page(first), [])
    await store.save_page(page(second), [])
    await store.save_page(page(other, group="other"), [])
    assert (await store.latest_firing_page("g", resolve)).id == second
    assert (await store.latest_firing_page("g", second)).id == first  # strictly before
    assert await store.latest_firing_page("g", first) is None
    assert await store.latest_firing_page("nope", 10**6) is None
    await store.save_page(page(resolve, status="resolved"), ["a"], resolves=second)
    rec = await store.get_page(second)
    assert (rec.status, rec.resolved_at, rec.resolved_by) == ("resolved", NOW + resolve, resolve)
    assert (await store.latest_firing_page("g", 10**6)).id == first
    assert (await store.get_page(resolve)).status == "resolved"
    assert (await store.get_page(first)).resolved_by is None
    # A resolution of a page that is not stored changes nothing.
    [late] = await accepted(store, note("late"))
    await store.save_page(page(late, status="resolved"), [], resolves=10**6)
    assert (await store.latest_firing_page("other", 10**6)).id == other


async def test_pages_list_newest_first_and_page_by_id(store):
    ids = await accepted(store, *(note(f"p{i}") for i in range(5)))
    for jid in ids:
        await store.save_page(page(jid), ["x"])
    assert [p.id for p in await store.list_pages(2)] == ids[:-3:-1]
    assert [p.id for p in await store.list_pages(2, before=ids[3])] == [ids[2], ids[1]]
    assert await store.list_pages(10, before=ids[0]) == []
    assert [d.notifier for d in (await store.list_pages(1))[0].deliveries] == ["x"]
    assert await store.update_page_doc(ids[2], '{"updated": true}') is True
    assert (await store.get_page(ids[2])).doc == {"updated": True}
    assert await store.update_page_doc(10**6, "{}") is False
    assert await store.get_page(10**6) is None
    assert await store.deliveries(10**6) == []


async def test_delivery_attempts_next_try_and_receipts_are_kept(store):
    [jid] = await accepted(store, note("a"))
    await store.save_page(page(jid), ["slack", "pd"])
    await store.record_delivery(jid, "slack", "pending", "429 slow down", 100.5, 200.25)
    [pd, slack] = await store.deliveries(jid)
    assert (slack.state, slack.attempts, slack.last_error) == ("pending", 1, "429 slow down")
    assert (slack.next_try, slack.delivered_at) == (200.25, None)
    assert (pd.attempts, pd.next_try) == (0, None)
    await store.save_receipt(jid, "slack", {"channel": "C1", "ts": "1700000000.0001"})
    await store.record_delivery(jid, "slack", "sent", None, 300.125)
    [_pd, slack] = await store.deliveries(jid)
    assert (slack.state, slack.attempts, slack.last_error, slack.next_try) == (
        "sent",
        2,
        None,
        None,
    )
    assert slack.delivered_at == 300.125
    assert slack.receipt == {"channel": "C1", "ts": "1700000000.0001"}
    await store.record_delivery(jid, "pd", "failed", "400 bad key", 301.0)
    [pd, _slack] = await store.deliveries(jid)
    assert (pd.state, pd.delivered_at, pd.last_error) == ("failed", None, "400 bad key")
    # Rows exist only through save_page: nothing to record for an unknown notifier.
    await store.record_delivery(jid, "ghost", "sent", None, 1.0)
    await store.save_receipt(jid, "ghost", {"ts": "1"})
    assert [d.notifier for d in await store.deliveries(jid)] == ["pd", "slack"]
    assert await store.pending_deliveries(jid) == []


async def test_finish_marks_sent_deliveries_and_the_job_final_once(store):
    [jid] = await accepted(store, note("a"))
    await store.claim("me", 30, 10, 1000)
    await store.save_page(page(jid), ["a", "b"])
    await store.record_delivery(jid, "a", "pending", "timeout", 400.0, 401.0)
    await store.finish(jid, "me", JobState.FAILED, ["a"], "delivery failed: b", 500.0)
    a, b = await store.deliveries(jid)
    assert (a.state, a.attempts, a.delivered_at, a.last_error, a.next_try) == (
        "sent",
        2,
        500.0,
        None,
        None,
    )
    assert (b.state, b.attempts) == ("pending", 0)
    assert await store.pending_deliveries(jid) == ["b"]
    assert await store.backlog() == 0
    assert await store.renew([jid], "me", 30) == 0
    await store.finish(jid, "me", JobState.DONE, [], None, 600.0)  # already final
    assert await store.backlog() == 0
    assert await store.claim("me", 30, 10, 1000) == []


async def test_requeue_update_sends_a_final_page_again_under_a_lease(store):
    [jid] = await accepted(store, note("a"))
    await store.claim("w", 30, 10, 1000)
    await store.save_page(page(jid), ["a", "b"])
    assert await store.requeue_update(jid, "outbox", ["a"], 30) is False  # still running
    await store.record_delivery(jid, "a", "pending", "503", 10.0, 20.0)
    await store.finish(jid, "w", JobState.DONE, ["a", "b"], None, 50.0)
    assert await store.requeue_update(jid, "outbox", ["a", "ghost"], 30) is True
    a, b = await store.deliveries(jid)
    assert (a.state, a.kind, a.attempts, a.next_try, a.delivered_at) == (
        "pending",
        "update",
        0,
        None,
        50.0,
    )
    assert (b.state, b.kind) == ("sent", "page")
    assert [d.notifier for d in await store.deliveries(jid)] == ["a", "b"]
    assert await store.backlog() == 1
    assert await store.claim("other", 30, 10, 1000) == []  # leased to the outbox
    assert await store.renew([jid], "outbox", 30) == 1
    assert await store.requeue_update(jid, "outbox", ["a"], 30) is False  # open again
    assert await store.release("outbox") == 1
    [job] = await store.claim("other", 30, 10, 1000)
    assert job.state == JobState.DELIVERING
    await store.finish(jid, "other", JobState.DONE, ["a"], None, 60.0)
    assert await store.backlog() == 0
    assert await store.requeue_update(10**6, "outbox", ["a"], 30) is False


# -- deploys, retention, health --------------------------------------------------------------


async def test_deploys_by_service_and_time_range(store):
    for service, at, version in [
        ("checkout", 300.0, "v3"),
        ("checkout", 100.0, "v1"),
        ("cart", 200.0, "c1"),
        ("checkout", 200.0, "v2"),
    ]:
        deploy_id = await store.add_deploy(
            service, "prod", version, None, at, {"service": service, "version": version}
        )
        assert deploy_id > 0
    got = await store.deploys("checkout", 100.0, 200.0)  # both ends included
    assert [d["version"] for d in got] == ["v1", "v2"]
    assert [d["version"] for d in await store.deploys("checkout", 0, 1e12)] == ["v1", "v2", "v3"]
    assert await store.deploys("checkout", 201.0, 299.0) == []
    assert await store.deploys("nope", 0, 1e12) == []


async def test_prune_deletes_old_finished_work_and_keeps_open_jobs(store):
    old = 1000.0
    done_a, done_b, still_open = await accepted(
        store, note("old-a", received_at=old), note("old-b", received_at=old + 1)
    ) + await accepted(store, note("old-open", received_at=old + 2))
    [recent] = await accepted(store, note("recent"))
    jobs = {j.id: j for j in await store.claim("me", 30, 10, 1000)}
    assert set(jobs) == {done_a, done_b, still_open, recent}
    await store.save_page(page(done_a), ["a"])
    await store.finish(done_a, "me", JobState.DONE, ["a"], None, old + 5)
    await store.set_state(done_b, "me", JobState.FAILED, error="x")
    await store.set_state(recent, "me", JobState.DONE)
    await store.add_deploy("svc", None, "v0", None, old, {"version": "v0"})
    await store.add_deploy("svc", None, "v1", "abc", NOW, {"version": "v1"})
    before = NOW - 3600
    assert await store.prune(before, limit=1) == 1
    assert await store.prune(before) == 1
    assert await store.prune(before) == 0
    assert await store.get_page(done_a) is None
    assert await store.deliveries(done_a) == []
    assert await store.pending_deliveries(done_a) == []
    assert await store.notification_body(done_a) is None
    assert await store.notification_body(done_b) is None
    assert await store.notification_body(still_open) is not None
    assert await store.notification_body(recent) is not None
    assert [d["version"] for d in await store.deploys("svc", 0, 1e12)] == ["v1"]
    assert await store.backlog() == 1
    # The pruned notification's key is forgotten with it: the same notification is new.
    again = await store.accept(note("old-a", received_at=NOW))
    assert not again.duplicate and again.id not in jobs
    assert (await store.accept(note("old-open"))).duplicate


async def test_check_writable_and_a_closed_store_refuses(store):
    await store.check_writable()
    await store.close()
    with pytest.raises(StoreError):
        await store.accept(note("late"))
    with pytest.raises(StoreError):
        await store.check_writable()
    with pytest.raises(StoreError):
        await store.claim("me", 30, 10, 1000)

"""The pipeline: deadlines, degraded pages, urgency before age, retries, leases."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from aiohttp.test_utils import TestServer

from enricher.pipeline.stages import GatherInput, GatherOutput
from enricher.store.base import JobState, NewNotification
from enricher.store.sqlite import SQLiteStore
from tests.conftest import Recorder, post, service_of, wait_pages, webhook_body


@contextlib.asynccontextmanager
async def receiver(hook: Callable[[web.Request], Awaitable[web.Response]]) -> AsyncIterator[str]:
    """A real HTTP endpoint for the webhook notifier to page; yields its URL."""
    app = web.Application()
    app.router.add_post("/hook", hook)
    server = TestServer(app)
    await server.start_server()
    try:
        yield str(server.make_url("/hook"))
    finally:
        await server.close()


class HangingGatherer:
    """Evidence that never arrives, like a Tempo that stopped answering."""

    async def gather(self, inp: GatherInput) -> GatherOutput:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


class SlowForWarnings:
    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def gather(self, inp: GatherInput) -> GatherOutput:
        if inp.message.severity() != "critical":
            await self.release.wait()
        return GatherOutput()


async def test_page_goes_out_at_its_deadline_marked_degraded(make_client):
    rec = Recorder()
    client = await make_client(
        {"pipeline": {"deadlines": {"default": 2.0}, "delivery_reserve": 0.5}},
        notifiers=[rec],
        gatherer=HangingGatherer(),
    )
    assert (await post(client, webhook_body())).status == 200
    [page] = await wait_pages(client, 1, timeout=10)
    assert page["degraded"] is True
    assert any(r.startswith("gather:") for r in page["reasons"]), page["reasons"]
    assert page["paged_at"] <= page["deadline"]
    assert rec.pages[0].degraded


async def test_warning_storm_does_not_delay_a_critical_page(make_client):
    gatherer = SlowForWarnings()
    rec = Recorder()
    client = await make_client({"pipeline": {"workers": 4}}, notifiers=[rec], gatherer=gatherer)
    for i in range(40):
        body = webhook_body(
            groupKey=f"warn-{i}", alert={"labels": {"alertname": f"W{i}", "severity": "warning"}}
        )
        assert (await post(client, body)).status == 200
    crit = webhook_body(groupKey="crit")
    assert (await post(client, crit)).status == 200
    await asyncio.wait_for(rec.event.wait(), 10)
    # The critical page went out while every warning was still stuck in its gather stage.
    assert [p.severity for p in rec.pages] == ["critical"]
    gatherer.release.set()
    await wait_pages(client, 41, timeout=20)
    assert len(rec.pages) == 41


async def test_delivery_retries_after_429_honouring_retry_after(make_client):
    calls: list[float] = []

    async def hook(request: web.Request) -> web.Response:
        calls.append(time.monotonic())
        if len(calls) == 1:
            return web.Response(status=429, headers={"Retry-After": "1"}, text="slow down")
        if len(calls) == 2:
            return web.Response(status=502, text="bad gateway")
        return web.json_response({"ok": True})

    async with receiver(hook) as url:
        client = await make_client(
            {
                "notifiers": {
                    "log": {"enabled": False},
                    "webhook": {"url": url},
                }
            }
        )
        await post(client, webhook_body())
        [page] = await wait_pages(client, 1, timeout=15)
        [delivery] = page["deliveries"]
        assert delivery["notifier"] == "webhook" and delivery["state"] == "sent"
        assert delivery["attempts"] == 3
        assert len(calls) == 3
        assert calls[1] - calls[0] >= 0.9  # waited as the receiver asked


async def test_permanent_delivery_error_is_recorded_not_retried(make_client):
    calls = 0

    async def hook(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.Response(status=400, text="invalid payload")

    async with receiver(hook) as url:
        client = await make_client({"notifiers": {"webhook": {"url": url}}})
        await post(client, webhook_body())
        [page] = await wait_pages(client, 1)
        by_name = {d["notifier"]: d for d in page["deliveries"]}
        assert by_name["webhook"]["state"] == "failed"
        assert "HTTP 400" in by_name["webhook"]["last_error"]
        assert by_name["log"]["state"] == "sent"
        assert calls == 1


def _notification(key: str, priority: int = 0) -> NewNotification:
    body = webhook_body(groupKey=key)
    import json

    now = time.time()
    return NewNotification(
        idem_key=key,
        group_key=key,
        status="firing",
        severity="critical",
        priority=priority,
        alert_count=1,
        received_at=now,
        deadline=now + 30,
        body=json.dumps(body).encode(),
    )


async def test_job_of_a_dead_worker_is_taken_up_when_its_lease_expires(tmp_path):
    store = SQLiteStore(tmp_path / "d")
    await store.open()
    try:
        await store.accept(_notification("a"))
        [job] = await store.claim("worker-that-dies", 0.3, 10, 1000)
        assert await store.claim("other", 30, 10, 1000) == []  # leased
        await asyncio.sleep(0.4)
        [again] = await store.claim("other", 30, 10, 1000)
        assert again.id == job.id and again.attempts == 2
        await store.set_state(again.id, "other", JobState.DONE)
        assert await store.backlog() == 0
    finally:
        await store.close()


async def test_claims_take_the_most_urgent_then_the_oldest(tmp_path):
    store = SQLiteStore(tmp_path / "d")
    await store.open()
    try:
        for key, prio in (("w1", 2), ("c1", 0), ("w2", 2), ("c2", 0)):
            await store.accept(_notification(key, prio))
        jobs = await store.claim("me", 30, 10, 1000)
        assert [j.group_key for j in jobs] == ["c1", "c2", "w1", "w2"]
    finally:
        await store.close()


async def test_a_second_process_cannot_open_the_same_data_dir(tmp_path):
    from enricher.store.base import StoreError

    a = SQLiteStore(tmp_path / "d")
    await a.open()
    try:
        b = SQLiteStore(tmp_path / "d")
        try:
            await b.open()
        except StoreError as exc:
            assert "in use" in str(exc)
        else:
            raise AssertionError("second open succeeded")
    finally:
        await a.close()


async def test_sigterm_path_releases_unfinished_jobs(make_client):
    client = await make_client({"pipeline": {"shutdown_grace": 0.2}}, gatherer=HangingGatherer())
    svc = service_of(client)
    await post(client, webhook_body())
    for _ in range(100):
        if svc.pipeline.active:
            break
        await asyncio.sleep(0.02)
    assert svc.pipeline.active
    await svc.pipeline.stop(0.2)
    svc.intake.draining = True
    rows = await svc.store._read(
        lambda c: c.execute("SELECT state, lease_owner FROM jobs").fetchall()
    )
    assert rows == [("gathering", None)]  # unfinished, free for the next start


async def test_large_bodies_are_stored_compressed_and_claimed_intact(tmp_path):
    import json
    import sqlite3

    store = SQLiteStore(tmp_path / "d")
    await store.open()
    try:
        body = webhook_body()
        body["alerts"] = [dict(body["alerts"][0], fingerprint=f"{i:016x}") for i in range(50)]
        raw = json.dumps(body).encode()
        n = _notification("big")
        await store.accept(n.model_copy(update={"body": raw}))
        [job] = await store.claim("me", 30, 10, 1000)
        assert job.body == raw
        assert await store.notification_body(job.id) == raw
    finally:
        await store.close()
    stored = (
        sqlite3.connect(tmp_path / "d" / "enricher.db")
        .execute("SELECT length(body), body_encoding FROM notifications")
        .fetchone()
    )
    assert stored[1] == "zlib" and stored[0] * 10 < len(raw)


async def test_a_data_dir_from_before_body_encoding_is_migrated(tmp_path):
    import sqlite3

    (tmp_path / "d").mkdir()
    old = sqlite3.connect(tmp_path / "d" / "enricher.db")
    old.execute(
        "CREATE TABLE notifications (id INTEGER PRIMARY KEY, idem_key TEXT NOT NULL UNIQUE,"
        " received_at REAL NOT NULL, group_key TEXT NOT NULL, status TEXT NOT NULL,"
        " severity TEXT NOT NULL, alert_count INTEGER NOT NULL, body BLOB NOT NULL,"
        " duplicates INTEGER NOT NULL DEFAULT 0, last_duplicate_at REAL)"
    )
    old.execute(
        "CREATE TABLE pages (id INTEGER PRIMARY KEY, group_key TEXT NOT NULL,"
        " status TEXT NOT NULL, paged_at REAL NOT NULL, degraded INTEGER NOT NULL,"
        " doc TEXT NOT NULL, resolved_at REAL, resolved_by INTEGER)"
    )
    old.execute(
        "INSERT INTO pages VALUES (7, 'g', 'firing', 1.0, 0, '{\"title\": \"legacy\"}', NULL, NULL)"
    )
    old.commit()
    old.close()
    store = SQLiteStore(tmp_path / "d")
    await store.open()
    try:
        await store.accept(_notification("after-upgrade"))
        [job] = await store.claim("me", 30, 10, 1000)
        assert job.group_key == "after-upgrade"
        legacy = await store.get_page(7)
        assert legacy is not None and legacy.doc == {"title": "legacy"}
    finally:
        await store.close()


async def test_retention_prunes_finished_work_and_keeps_open_jobs(tmp_path):
    store = SQLiteStore(tmp_path / "d")
    await store.open()
    try:
        for key in ("old-done", "old-open"):
            n = _notification(key)
            await store.accept(n.model_copy(update={"received_at": 1000.0}))
        await store.accept(_notification("new-done"))
        jobs = {j.group_key: j for j in await store.claim("me", 30, 10, 1000)}
        for key in ("old-done", "new-done"):
            await store.set_state(jobs[key].id, "me", JobState.DONE)
        assert await store.prune(before=time.time() - 3600) == 1
        left = await store._read(
            lambda c: sorted(r[0] for r in c.execute("SELECT group_key FROM notifications"))
        )
        assert left == ["new-done", "old-open"]
        assert await store.backlog() == 1
    finally:
        await store.close()


async def test_in_a_storm_every_alert_gets_its_time_for_evidence(make_client):
    """A hanging backend holds each gather for its whole budget. Workers are slots, not
    CPUs: a storm of 60 groups must not queue behind them, or the late ones would be paged
    on time but with no time left to gather any evidence."""
    rec = Recorder()
    client = await make_client(
        {"pipeline": {"deadlines": {"default": 3.0}, "delivery_reserve": 0.5}},
        notifiers=[rec],
        gatherer=HangingGatherer(),
    )
    for i in range(60):
        assert (await post(client, webhook_body(groupKey=f"storm-{i}"))).status == 200
    pages = await wait_pages(client, 60, timeout=30)
    assert [p["id"] for p in pages if p["paged_at"] > p["deadline"]] == []
    given = [
        float(r.split("within ")[1].rstrip("s"))
        for p in pages
        for r in p["reasons"]
        if r.startswith("gather: no result within")
    ]
    assert len(given) == 60
    assert min(given) >= 2.0, sorted(given)[:10]

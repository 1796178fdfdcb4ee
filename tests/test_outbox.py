"""The outbox: deliveries are stored rows, delivered apart from the job workers, retried at
their stored `next_try`, and made effectively once by receipts (edit, never post twice)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from enricher.notify.base import DeliveryError, SendContext
from enricher.notify.page import Page
from enricher.server import Service
from tests.conftest import MakeClient, Recorder, post, service_of, wait_pages, webhook_body


class Blocking:
    """A receiver that holds every send until released, like a saturated Slack channel."""

    name = "blocking"
    edits = False

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.waiting = 0

    async def send(self, page: Page, ctx: SendContext) -> None:
        self.waiting += 1
        await self.release.wait()

    async def close(self) -> None:
        return None


class Editing:
    """Records sends the way a Slack bot would: the first one posts and saves a receipt, every
    later one (retry, update, resolve) must edit what the receipt names."""

    name = "editing"
    edits = True

    def __init__(self, fail_after_post: int = 0) -> None:
        self.posts: list[int] = []
        self.edits_seen: list[tuple[int, dict[str, str], bool]] = []
        self.resolved: list[tuple[int, dict[str, str] | None, int | None]] = []
        self.fail_after_post = fail_after_post
        self.event = asyncio.Event()

    async def send(self, page: Page, ctx: SendContext) -> None:
        if page.status == "resolved":
            prior = ctx.prior_page.id if ctx.prior_page else None
            self.resolved.append((page.id, ctx.prior_receipt, prior))
        elif ctx.receipt.get("ts"):
            self.edits_seen.append((page.id, dict(ctx.receipt), ctx.update))
        else:
            self.posts.append(page.id)
            await ctx.save({"channel": "C1", "ts": f"{page.id}.000100"})
            if self.fail_after_post > 0:  # accepted, then the thread reply fails
                self.fail_after_post -= 1
                raise DeliveryError("HTTP 503: later", retry_after=0.05)
        self.event.set()

    async def close(self) -> None:
        return None


async def test_a_saturated_receiver_does_not_hold_the_workers(make_client: MakeClient):
    """Two worker slots, a receiver that never answers: every page still reaches the other
    notifier, because deliveries wait in the outbox, not in a worker."""
    slow, rec = Blocking(), Recorder()
    client = await make_client({"pipeline": {"workers": 2}}, notifiers=[slow, rec])
    for i in range(6):
        body = webhook_body(groupKey=f'{{}}:{{alertname="A{i}"}}')
        assert (await post(client, body)).status == 200
    deadline = time.monotonic() + 10
    while len(rec.pages) < 6:
        assert time.monotonic() < deadline, f"{len(rec.pages)} of 6 pages delivered"
        await asyncio.sleep(0.05)
    assert slow.waiting == 6
    svc: Service = service_of(client)
    assert not svc.pipeline.active and len(svc.pipeline.outbox.inflight) == 6
    slow.release.set()
    pages = await wait_pages(client, 6)
    assert all(d["state"] == "sent" for p in pages for d in p["deliveries"])


async def test_a_retry_after_a_saved_receipt_edits_and_never_posts_again(make_client: MakeClient):
    ed = Editing(fail_after_post=1)
    client = await make_client({}, notifiers=[ed])
    assert (await post(client, webhook_body())).status == 200
    [page] = await wait_pages(client, 1)
    assert ed.posts == [page["id"]]
    assert ed.edits_seen == [(page["id"], {"channel": "C1", "ts": f"{page['id']}.000100"}, False)]
    [d] = page["deliveries"]
    assert d["state"] == "sent" and d["attempts"] == 2 and d["receipt"]["ts"]
    assert d["last_error"] is None and d["next_try"] is None


async def test_a_failed_attempt_is_stored_with_its_next_try(make_client: MakeClient):
    class Later:
        name = "later"
        edits = False

        async def send(self, page: Page, ctx: SendContext) -> None:
            raise DeliveryError("HTTP 429: slow down", retry_after=30)

        async def close(self) -> None:
            return None

    client = await make_client({}, notifiers=[Later()])
    t0 = time.time()
    assert (await post(client, webhook_body())).status == 200
    deadline = time.monotonic() + 5
    while True:
        pages = (await (await client.get("/api/v1/pages")).json())["pages"]
        if pages and pages[0]["deliveries"][0]["attempts"] >= 1:
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    [d] = pages[0]["deliveries"]
    assert d["state"] == "pending" and "429" in d["last_error"]
    assert t0 + 29 <= d["next_try"] <= time.time() + 31


async def test_a_resolve_sees_the_receipt_of_the_page_it_resolves(make_client: MakeClient):
    ed = Editing()
    client = await make_client({}, notifiers=[ed])
    assert (await post(client, webhook_body())).status == 200
    [firing] = await wait_pages(client, 1)
    body = webhook_body(status="resolved", alert={"status": "resolved"})
    body["alerts"][0]["endsAt"] = "2026-01-01T00:00:00Z"
    assert (await post(client, body)).status == 200
    await wait_pages(client, 2)
    [(resolve_id, prior_receipt, prior_id)] = ed.resolved
    assert prior_id == firing["id"] and resolve_id != firing["id"]
    assert prior_receipt == {"channel": "C1", "ts": f"{firing['id']}.000100"}
    assert ed.posts == [firing["id"]]


async def test_an_analysis_that_lands_late_edits_the_sent_page(make_client: MakeClient):
    ed, rec = Editing(), Recorder()
    client = await make_client({}, notifiers=[ed, rec])
    assert (await post(client, webhook_body())).status == 200
    [page] = await wait_pages(client, 1)
    svc: Service = service_of(client)
    late = Page.model_validate(page).analysis  # None: no evidence configured
    from enricher.analysis.model import Analysis

    analysis = late or Analysis.model_validate({"hypotheses": []})
    await svc.pipeline._late_analysis(page["id"], analysis)
    deadline = time.monotonic() + 5
    while not ed.edits_seen:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    [(pid, receipt, update)] = ed.edits_seen
    assert pid == page["id"] and update is True and receipt["ts"]
    assert ed.posts == [page["id"]] and len(rec.pages) == 1  # only editors get the update
    await wait_pages(client, 1)
    doc: dict[str, Any] = await (await client.get(f"/api/v1/pages/{page['id']}")).json()
    by = {d["notifier"]: d for d in doc["deliveries"]}
    assert by["editing"]["kind"] == "update" and by["editing"]["state"] == "sent"
    assert by["recorder"]["kind"] == "page"


class Seen:
    """Saves a receipt on the first send and records what every send was given."""

    name = "seen"
    edits = True

    def __init__(self) -> None:
        self.sends: list[tuple[int, str, bool, bool]] = []  # id, status, resolved?, update

    async def send(self, page: Page, ctx: SendContext) -> None:
        self.sends.append((page.id, page.status, page.resolved_at is not None, ctx.update))
        if not ctx.receipt:
            await ctx.save({"channel": "C1", "ts": f"{page.id}.000100"})

    async def close(self) -> None:
        return None


async def test_a_late_analysis_of_a_resolved_page_keeps_it_resolved(make_client: MakeClient):
    """The LLM answers after the alert resolved: the edit must not make the message look
    firing again, so the update carries the record's resolution."""
    from enricher.analysis.model import Analysis

    seen = Seen()
    client = await make_client({}, notifiers=[seen])
    assert (await post(client, webhook_body())).status == 200
    [firing] = await wait_pages(client, 1)
    body = webhook_body(status="resolved", alert={"status": "resolved"})
    body["alerts"][0]["endsAt"] = "2026-01-01T00:00:00Z"
    assert (await post(client, body)).status == 200
    await wait_pages(client, 2)
    svc: Service = service_of(client)
    await svc.pipeline._late_analysis(firing["id"], Analysis.model_validate({"hypotheses": []}))
    deadline = time.monotonic() + 5
    while not any(update for *_, update in seen.sends):
        assert time.monotonic() < deadline, seen.sends
        await asyncio.sleep(0.05)
    [update] = [s for s in seen.sends if s[3]]
    assert update == (firing["id"], "resolved", True, True)

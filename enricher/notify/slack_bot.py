"""The `slack` notifier, bot-token mode: `chat.postMessage`, then `chat.update` and threads.

Why edits instead of new messages: a channel where every retry, analysis update and
resolution posts again is a channel people mute. So the first accepted post saves its
receipt (`channel`, `ts`) before anything else; from then on every retry and update edits
that message, the detail goes in one thread reply under it (`detail_ts`), and the resolution
rewrites the firing message and says so once in its thread (`resolved_reply_ts`).

Why the error mapping: the Web API answers almost every error as HTTP 200 with
`{"ok": false, "error": "..."}`. Slack being busy (`ratelimited`/HTTP 429, `internal_error`,
`fatal_error`, `service_unavailable`, `request_timeout`, HTTP 5xx, an unreadable body) is
worth a retry; every other code (bad blocks, unknown channel, bad token) will fail the same
way again, so it is permanent and named in the error. The token is sent only in the
`Authorization` header and scrubbed from every error text.

Every request to a channel waits its turn in that channel's queue (`ChannelQueue`): spaced by
`min_interval`, paused for a 429's Retry-After. The notifier is `paced`: the outbox leaves the
queueing to it instead of bounding a whole send with its own timeout.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable
from typing import Any

from enricher.config import SlackNotifierConfig
from enricher.notify.base import DeliveryError, SendContext
from enricher.notify.channel_queue import ChannelQueue
from enricher.notify.http import Answer, Poster
from enricher.notify.page import Page
from enricher.notify.slack import (
    build_detail,
    build_message,
    build_resolved,
    esc,
    resolved_after,
)

log = logging.getLogger("enricher.notify.slack")

# Slack being busy: retry. Rate limits also pause the channel.
RETRYABLE_ERRORS = frozenset(
    {"internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
RATE_LIMIT_ERRORS = frozenset({"ratelimited", "rate_limited"})
# When Slack rate-limits without saying for how long.
DEFAULT_RETRY_AFTER = 1.0
# An answer echoes the message (at most 50 blocks of a few KB): far below this.
READ_LIMIT = 1_000_000


def post_body(
    message: dict[str, Any], channel: str, thread_ts: str | None = None
) -> dict[str, Any]:
    """The `chat.postMessage` body: the built message, where it goes, and no link previews
    (an unfurled runbook or dashboard would push the evidence off the screen)."""
    body: dict[str, Any] = {"channel": channel, **message, "unfurl_links": False}
    if thread_ts:
        body["thread_ts"] = thread_ts
    return body


def update_body(message: dict[str, Any], channel: str, ts: str) -> dict[str, Any]:
    return {"channel": channel, "ts": ts, **message}


class _MessageGone(Exception):
    """`chat.update` said `message_not_found`: someone deleted the message."""


class SlackBotNotifier:
    name = "slack"
    edits = True
    paced = True

    def __init__(self, config: SlackNotifierConfig, public_url: str | None = None) -> None:
        if not config.bot_token or not config.channel:
            raise ValueError("Slack bot mode needs bot_token and channel")
        self.config = config
        self.public_url = public_url
        self.http = Poster(config.timeout)
        self.queue = ChannelQueue(config.min_interval)
        self._token = config.bot_token
        api = str(config.api_url).rstrip("/")
        self._urls = {m: f"{api}/{m}" for m in ("chat.postMessage", "chat.update")}
        self._headers = {
            "Authorization": f"Bearer {self._token}",
            "Content-Type": "application/json; charset=utf-8",
        }

    async def send(self, page: Page, ctx: SendContext) -> None:
        prior = ctx.prior_receipt or {}
        if page.status == "resolved" and prior.get("ts") and prior.get("channel"):
            await self._resolve(page, ctx, prior["channel"], prior["ts"])
        else:
            await self._page(page, ctx)

    async def close(self) -> None:
        await self.http.close()

    # --- the three kinds of send ----------------------------------------------------------

    async def _page(self, page: Page, ctx: SendContext) -> None:
        """A firing page (or a resolution with no firing message to edit): post once, edit
        on every later attempt, and keep the detail in one thread reply."""
        receipt = dict(ctx.receipt)
        firing = page.status == "firing"
        # A late analysis update of a page whose alert has resolved meanwhile must not make
        # the message look firing again.
        message = (
            build_message(page, self.public_url, edits=True)
            if firing and page.resolved_at is None
            else build_resolved(None, page, self.public_url)
        )
        channel = receipt.get("channel") or ctx.target.channel or self.config.channel or ""
        ts = receipt.get("ts")
        if ts:
            try:
                await self._update(channel, ts, message)
            except _MessageGone:
                ts, receipt = None, {}
        posted = False
        if not ts:
            channel, ts = await self._post(channel, message)
            receipt = {"channel": channel, "ts": ts}
            await ctx.save(receipt)  # before anything else: no retry may post it again
            posted = True
        if not (firing and self.config.thread_detail):
            return
        detail = build_detail(page)
        detail_ts = None if posted else receipt.get("detail_ts")
        if detail_ts and ctx.update:
            try:
                await self._update(channel, detail_ts, detail)
                return
            except _MessageGone:
                detail_ts = None
        if detail_ts:
            return
        got = await self._optional(self._post(channel, detail, thread_ts=ts), "detail reply")
        if got is not None:
            await ctx.save({**receipt, "detail_ts": got[1]})

    async def _resolve(self, page: Page, ctx: SendContext, channel: str, ts: str) -> None:
        """Rewrite the firing message as resolved, then say so once in its thread."""
        receipt = dict(ctx.receipt)
        if receipt.get("resolved_reply_ts"):
            return  # a retry after the last step was saved: all done
        channel, ts = receipt.get("channel") or channel, receipt.get("ts") or ts
        message = build_resolved(ctx.prior_page, page, self.public_url)
        try:
            await self._update(channel, ts, message)
        except _MessageGone:  # deleted: the resolution gets a message of its own
            channel, ts = await self._post(channel, message)
            await ctx.save({"channel": channel, "ts": ts})
        text = esc(resolved_after(ctx.prior_page or page, page))
        reply = {"text": text}
        got = await self._optional(self._post(channel, reply, thread_ts=ts), "resolved reply")
        if got is not None:
            await ctx.save({"channel": channel, "ts": ts, "resolved_reply_ts": got[1]})

    async def _optional(
        self, call: Awaitable[tuple[str, str]], what: str
    ) -> tuple[str, str] | None:
        """A thread reply that Slack rejects for good (not a busy Slack, which is retried)
        must not fail a page whose main message is already there."""
        try:
            result = await call
        except DeliveryError as exc:
            if exc.retryable:
                raise
            log.warning("slack %s not posted: %s", what, exc)
            return None
        return result

    # --- Web API calls --------------------------------------------------------------------

    async def _post(
        self, channel: str, message: dict[str, Any], thread_ts: str | None = None
    ) -> tuple[str, str]:
        """`chat.postMessage`; returns the channel ID and ts Slack answered."""
        doc = await self._call("chat.postMessage", channel, post_body(message, channel, thread_ts))
        got_channel, got_ts = doc.get("channel"), doc.get("ts")
        if not isinstance(got_channel, str) or not isinstance(got_ts, str) or not got_ts:
            raise DeliveryError("slack chat.postMessage: answer without channel and ts")
        self.queue.alias(channel, got_channel)
        return got_channel, got_ts

    async def _update(self, channel: str, ts: str, message: dict[str, Any]) -> None:
        await self._call("chat.update", channel, update_body(message, channel, ts))

    async def _call(self, method: str, channel: str, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        async with self.queue.turn(channel) as lane:
            try:
                answer = await self.http.post(
                    self._urls[method], data, self._headers, read_limit=READ_LIMIT
                )
                doc = self._check(method, answer)
            except DeliveryError as exc:
                if exc.retry_after is not None:
                    lane.pause(exc.retry_after, self.queue.clock())
                raise DeliveryError(
                    self._scrub(str(exc)), retryable=exc.retryable, retry_after=exc.retry_after
                ) from None
            lane.accepted()
            return doc

    def _check(self, method: str, answer: Answer) -> dict[str, Any]:
        """Slack's answer -> its JSON document, or the `DeliveryError` it means."""
        what = f"slack {method}"
        if answer.status == 429:
            raise DeliveryError(
                f"{what}: ratelimited (HTTP 429)",
                retry_after=(
                    answer.retry_after if answer.retry_after is not None else DEFAULT_RETRY_AFTER
                ),
            )
        if answer.status >= 500:
            raise DeliveryError(f"{what}: HTTP {answer.status}", retry_after=answer.retry_after)
        if answer.status != 200:
            raise DeliveryError(
                f"{what}: HTTP {answer.status}: {answer.text[:200]}", retryable=False
            )
        try:
            doc = json.loads(answer.text)
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or not isinstance(doc.get("ok"), bool):
            raise DeliveryError(f"{what}: malformed answer: {answer.text[:100]!r}")
        if doc["ok"]:
            return doc
        error = str(doc.get("error") or "unknown_error")[:100]
        if error in RATE_LIMIT_ERRORS:
            after = answer.retry_after if answer.retry_after is not None else DEFAULT_RETRY_AFTER
            raise DeliveryError(f"{what}: {error}", retry_after=after)
        if error in RETRYABLE_ERRORS:
            raise DeliveryError(f"{what}: {error}", retry_after=answer.retry_after)
        if error == "message_not_found" and method == "chat.update":
            raise _MessageGone()
        meta = doc.get("response_metadata")
        notes = meta.get("messages") if isinstance(meta, dict) else None
        detail = f" ({'; '.join(map(str, notes[:3]))[:300]})" if isinstance(notes, list) else ""
        raise DeliveryError(f"{what}: {error}{detail}", retryable=False)

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "xoxb-***") if self._token else text

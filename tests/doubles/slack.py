"""A Slack double: the incoming webhook and the Web API's `chat.postMessage` / `chat.update`,
checking what Slack checks and answering as Slack answers.

Webhook (`PATH`): `200 ok` for a valid message and `400 invalid_blocks` / `400 no_text` /
`400 invalid_payload` for what Slack rejects (more than 50 blocks, a header over 150
characters or not plain_text, section text over 3,000, more than 10 fields or one over
2,000, more than 10 context elements, more than 25 actions, a button text over 75 or a URL
over 3,000). Accepted messages are recorded in `messages`.

Web API (`/api/chat.postMessage`, `/api/chat.update`): errors come as HTTP 200
`{"ok": false, "error": ...}` as Slack sends them: `not_authed` without a bearer token,
`invalid_auth` for a wrong one, `channel_not_found` for a channel the double does not know
(IDs such as `C0PAYMENTS` and names such as `#payments-oncall` are both accepted; answers
always carry the ID), `invalid_blocks` for what `problems()` finds, `no_text`,
`msg_too_long`, `message_not_found` for an update of an unknown ts, `thread_not_found` for a
reply to one. With `rate_per_channel` set, writes to a channel faster than that (after a
`burst`) get HTTP 429 with `Retry-After` and `{"ok": false, "error": "ratelimited"}`.

Faults: `inject()` (from `DoubleServer`, by path prefix: 5xx, malformed bodies, delays) and
`fail()` (a Web API error code, optionally as a 429, for the next N calls of one method).

Recorded state, for tests and the benchmark to assert on: `bot_messages(channel)` (top-level
messages in post order, each with its current content and edit history), `replies(channel,
ts)`, `message(channel, ts)`, and the counters `posts`, `updates`, `rate_limited`, `api_calls`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.doubles._server import DoubleServer

PATH = "/services/T000/B000/XXXX"
API = "/api"
POST_MESSAGE = "/api/chat.postMessage"
UPDATE = "/api/chat.update"
TOKEN = "xoxb-1234567890-0987654321-DoubleSecretToken"
CHANNELS = {
    "#payments-oncall": "C0PAYMENTS",
    "#search-oncall": "C0SEARCH",
    "#alerts": "C0ALERTS",
}


def problems(msg: dict[str, Any]) -> list[str]:
    out: list[str] = []
    blocks = msg.get("blocks") or []
    if not msg.get("text") and not blocks:
        return ["no_text"]
    if len(blocks) > 50:
        out.append("more than 50 blocks")
    for b in blocks:
        t = b.get("type")
        if t == "header":
            txt = b.get("text") or {}
            if txt.get("type") != "plain_text" or len(txt.get("text", "")) > 150:
                out.append("header")
        elif t == "section":
            if len((b.get("text") or {}).get("text", "")) > 3000:
                out.append("section text")
            fields = b.get("fields") or []
            if len(fields) > 10 or any(len(f.get("text", "")) > 2000 for f in fields):
                out.append("section fields")
            if not b.get("text") and not fields:
                out.append("empty section")
        elif t == "context":
            if not 1 <= len(b.get("elements") or []) <= 10:
                out.append("context elements")
        elif t == "actions":
            els = b.get("elements") or []
            if not 1 <= len(els) <= 25:
                out.append("actions elements")
            for e in els:
                if len((e.get("text") or {}).get("text", "")) > 75 or len(e.get("url", "")) > 3000:
                    out.append("button")
        elif t != "divider":
            out.append(f"unknown block type {t}")
    return out


@dataclass
class SlackMessage:
    """One message as Slack holds it: its current content and every earlier version."""

    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    replies: list[SlackMessage] = field(default_factory=list)

    @property
    def edits(self) -> int:
        return len(self.history)

    @property
    def content(self) -> dict[str, Any]:
        return {"text": self.text, "blocks": self.blocks}

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "type": "message",
            "bot_id": "B0DOUBLE",
            "ts": self.ts,
            "text": self.text,
            "blocks": self.blocks,
        }
        if self.thread_ts:
            doc["thread_ts"] = self.thread_ts
        return doc


@dataclass
class ApiFault:
    method: str
    error: str
    times: int | None = 1
    status: int = 200
    retry_after: int | None = None
    after: int = 0  # let this many matching calls through first
    seen: int = 0
    hits: int = 0


class SlackDouble(DoubleServer):
    def __init__(
        self,
        latency: float = 0.0,
        *,
        token: str = TOKEN,
        channels: dict[str, str] | None = None,
        rate_per_channel: float | None = None,
        burst: int = 1,
        retry_after: int = 1,
    ) -> None:
        super().__init__(latency=latency)
        self.messages: list[dict[str, Any]] = []  # webhook mode
        self.token = token
        names = dict(CHANNELS if channels is None else channels)
        self.channel_ids = set(names.values())
        self.channel_names = names
        self.rate_per_channel = rate_per_channel
        self.burst = burst
        self.retry_after = retry_after
        self.api_faults: list[ApiFault] = []
        self.posts = 0
        self.updates = 0
        self.rate_limited = 0
        self.api_calls: list[tuple[str, dict[str, Any]]] = []
        self._top: dict[str, list[SlackMessage]] = {}
        self._by_ts: dict[tuple[str, str], SlackMessage] = {}
        self._seq = 0
        self._buckets: dict[str, tuple[float, float]] = {}  # channel -> (tokens, at)

    def routes(self, app: web.Application) -> None:
        app.router.add_post(PATH, self._post)
        app.router.add_post(POST_MESSAGE, self._post_message)
        app.router.add_post(UPDATE, self._update)

    @property
    def webhook_url(self) -> str:
        return self.url + PATH

    @property
    def api_url(self) -> str:
        return self.url + API

    # --- recorded state -------------------------------------------------------------------

    def channel_id(self, channel: str) -> str | None:
        if channel in self.channel_ids:
            return channel
        name = channel if channel.startswith("#") else "#" + channel
        return self.channel_names.get(name)

    def bot_messages(self, channel: str) -> list[SlackMessage]:
        """Top-level messages in the channel (name or ID), in post order."""
        return list(self._top.get(self.channel_id(channel) or channel, []))

    def message(self, channel: str, ts: str) -> SlackMessage | None:
        return self._by_ts.get((self.channel_id(channel) or channel, ts))

    def replies(self, channel: str, ts: str) -> list[SlackMessage]:
        parent = self.message(channel, ts)
        return list(parent.replies) if parent is not None else []

    def delete(self, channel: str, ts: str) -> None:
        """As if someone deleted the message in the Slack client."""
        cid = self.channel_id(channel) or channel
        msg = self._by_ts.pop((cid, ts))
        if msg.thread_ts:
            parent = self._by_ts.get((cid, msg.thread_ts))
            if parent is not None:
                parent.replies.remove(msg)
        else:
            self._top[cid].remove(msg)
            for r in msg.replies:
                self._by_ts.pop((cid, r.ts), None)

    # --- faults ---------------------------------------------------------------------------

    def fail(
        self,
        method: str,
        error: str,
        times: int | None = 1,
        *,
        status: int = 200,
        retry_after: int | None = None,
        after: int = 0,
    ) -> ApiFault:
        """After letting `after` of them through, the next `times` calls of `method`
        (`chat.postMessage`, `chat.update`, or `*`) answer `{"ok": false, "error": error}`
        with this status (and Retry-After, if given)."""
        f = ApiFault(method, error, times, status, retry_after, after)
        self.api_faults.append(f)
        return f

    # --- webhook --------------------------------------------------------------------------

    async def _post(self, request: web.Request) -> web.Response:
        try:
            msg = json.loads(await request.read())
        except ValueError:
            return web.Response(status=400, text="invalid_payload")
        found = problems(msg)
        if found == ["no_text"]:
            return web.Response(status=400, text="no_text")
        if found:
            return web.Response(status=400, text="invalid_blocks")
        self.messages.append(msg)
        return web.Response(text="ok")

    # --- Web API --------------------------------------------------------------------------

    @staticmethod
    def _err(error: str, status: int = 200, **extra: Any) -> web.Response:
        headers = {k: str(v) for k, v in extra.items()}
        return web.json_response({"ok": False, "error": error}, status=status, headers=headers)

    def _next_ts(self) -> str:
        self._seq += 1
        micros = self._seq * 100
        return f"{1_700_000_000 + micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _limited(self, channel: str) -> int | None:
        """Token bucket per channel: None if this write may pass, else the Retry-After."""
        if not self.rate_per_channel:
            return None
        now = time.monotonic()
        tokens, at = self._buckets.get(channel, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate_per_channel)
        if tokens >= 1.0:
            self._buckets[channel] = (tokens - 1.0, now)
            return None
        self._buckets[channel] = (tokens, now)
        wait = (1.0 - tokens) / self.rate_per_channel
        return max(self.retry_after, math.ceil(wait))

    async def _begin(
        self, request: web.Request, method: str
    ) -> tuple[dict[str, Any], str] | web.Response:
        """What every Web API method checks first: faults, auth, body, channel, rate."""
        try:
            body = json.loads(await request.read())
        except ValueError:
            body = None
        self.api_calls.append((method, body if isinstance(body, dict) else {}))
        for f in self.api_faults:
            if f.method not in (method, "*"):
                continue
            f.seen += 1
            if f.seen > f.after and (f.times is None or f.hits < f.times):
                f.hits += 1
                if f.status == 429:
                    self.rate_limited += 1
                extra = {"Retry-After": f.retry_after} if f.retry_after is not None else {}
                return self._err(f.error, f.status, **extra)
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            return self._err("not_authed")
        if auth[7:].strip() != self.token:
            return self._err("invalid_auth")
        if not isinstance(body, dict):
            return self._err("invalid_json")
        cid = self.channel_id(str(body.get("channel") or ""))
        if cid is None:
            return self._err("channel_not_found")
        wait = self._limited(cid)
        if wait is not None:
            self.rate_limited += 1
            return self._err("ratelimited", 429, **{"Retry-After": wait})
        return body, cid

    @staticmethod
    def _content_error(body: dict[str, Any]) -> str | None:
        blocks = body.get("blocks")
        if blocks is not None and not isinstance(blocks, list):
            return "invalid_blocks_format"
        found = problems(body)
        if found == ["no_text"]:
            return "no_text"
        if found:
            return "invalid_blocks"
        if len(str(body.get("text") or "")) > 40_000:
            return "msg_too_long"
        return None

    async def _post_message(self, request: web.Request) -> web.Response:
        begun = await self._begin(request, "chat.postMessage")
        if isinstance(begun, web.Response):
            return begun
        body, cid = begun
        error = self._content_error(body)
        if error:
            return self._err(error)
        thread_ts = body.get("thread_ts")
        parent = None
        if thread_ts:
            parent = self._by_ts.get((cid, str(thread_ts)))
            if parent is None or parent.thread_ts:
                return self._err("thread_not_found")
        msg = SlackMessage(
            cid, self._next_ts(), str(body.get("text") or ""), list(body.get("blocks") or [])
        )
        if parent is not None:
            msg.thread_ts = parent.ts
            parent.replies.append(msg)
        else:
            self._top.setdefault(cid, []).append(msg)
        self._by_ts[(cid, msg.ts)] = msg
        self.posts += 1
        return web.json_response(
            {"ok": True, "channel": cid, "ts": msg.ts, "message": msg.as_json()}
        )

    async def _update(self, request: web.Request) -> web.Response:
        begun = await self._begin(request, "chat.update")
        if isinstance(begun, web.Response):
            return begun
        body, cid = begun
        msg = self._by_ts.get((cid, str(body.get("ts") or "")))
        if msg is None:
            return self._err("message_not_found")
        error = self._content_error(body)
        if error:
            return self._err(error)
        msg.history.append(msg.content)
        msg.text, msg.blocks = str(body.get("text") or ""), list(body.get("blocks") or [])
        self.updates += 1
        return web.json_response(
            {"ok": True, "channel": cid, "ts": msg.ts, "text": msg.text, "message": msg.as_json()}
        )

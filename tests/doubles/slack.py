"""A Slack incoming-webhook double that checks Block Kit limits as Slack does.

It answers `200 ok` for a valid message and `400 invalid_blocks` / `400 no_text` /
`400 invalid_payload` for what Slack rejects (more than 50 blocks, a header over 150
characters or not plain_text, section text over 3,000, more than 10 fields or one over
2,000, more than 10 context elements, more than 25 actions, a button text over 75 or a URL
over 3,000). Faults (429 with Retry-After, 5xx) are injected per test; accepted messages
are recorded.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from tests.doubles._server import DoubleServer

PATH = "/services/T000/B000/XXXX"


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


class SlackDouble(DoubleServer):
    def __init__(self, latency: float = 0.0) -> None:
        super().__init__(latency=latency)
        self.messages: list[dict[str, Any]] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_post(PATH, self._post)

    @property
    def webhook_url(self) -> str:
        return self.url + PATH

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

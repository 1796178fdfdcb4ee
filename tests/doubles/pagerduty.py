"""A PagerDuty Events API v2 double that validates events as the real endpoint documents.

It answers 202 with `{"status": "success", "message": "Event processed", "dedup_key"}` for a
valid event, and 400 with `{"status", "message", "errors": [...]}` for what the real one
rejects: unparsable JSON, a missing or unknown `event_action`, a missing `routing_key`, a
trigger without `payload.summary` / `source` / a valid `severity`, a summary over 1,024
characters, a `dedup_key` over 255, a body over 512 KB, and acknowledge/resolve without a
`dedup_key`. Faults (429, 5xx) are injected per test; accepted events are recorded.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from tests.doubles._server import DoubleServer

PATH = "/v2/enqueue"


def _bad(message: str, *errors: str) -> web.Response:
    return web.json_response(
        {"status": "invalid event", "message": message, "errors": list(errors) or [message]},
        status=400,
    )


class PagerDutyDouble(DoubleServer):
    def __init__(self, latency: float = 0.0) -> None:
        super().__init__(latency=latency)
        self.events: list[dict[str, Any]] = []
        self.rejected: list[str] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_post(PATH, self._enqueue)

    @property
    def endpoint(self) -> str:
        return self.url + PATH

    async def _enqueue(self, request: web.Request) -> web.Response:
        raw = await request.read()
        resp = self._check(raw)
        if resp.status != 202:
            self.rejected.append(resp.text or "")
        return resp

    def _check(self, raw: bytes) -> web.Response:
        if len(raw) > 512 * 1024:
            return _bad("Event object is too large", "payload over 512 KB")
        try:
            ev = json.loads(raw)
        except ValueError:
            return web.json_response(
                {
                    "status": "Unrecognized object",
                    "message": "Event object format is unrecognized",
                    "errors": ["JSON parse error"],
                },
                status=400,
            )
        if not isinstance(ev, dict):
            return _bad("Event object is invalid", "event must be an object")
        errors = []
        if not ev.get("routing_key"):
            errors.append("'routing_key' is missing or blank")
        action = ev.get("event_action")
        if action not in ("trigger", "acknowledge", "resolve"):
            errors.append("'event_action' is missing or invalid")
        dedup = ev.get("dedup_key")
        if dedup is not None and (not isinstance(dedup, str) or len(dedup) > 255):
            errors.append("'dedup_key' must be a string of at most 255 characters")
        if action in ("acknowledge", "resolve") and not dedup:
            errors.append("'dedup_key' is required for acknowledge and resolve")
        if action == "trigger":
            p = ev.get("payload")
            if not isinstance(p, dict):
                errors.append("'payload' is missing")
            else:
                summary = p.get("summary")
                if not summary:
                    errors.append("'payload.summary' is missing or blank")
                elif len(summary) > 1024:
                    errors.append("'payload.summary' is longer than 1024 characters")
                if not p.get("source"):
                    errors.append("'payload.source' is missing or blank")
                if p.get("severity") not in ("critical", "error", "warning", "info"):
                    errors.append("'payload.severity' is missing or invalid")
            for link in ev.get("links") or []:
                if not isinstance(link, dict) or not link.get("href"):
                    errors.append("'links' entries need an 'href'")
        if errors:
            return _bad("Event object is invalid", *errors)
        self.events.append(ev)
        return web.json_response(
            {"status": "success", "message": "Event processed", "dedup_key": dedup or "generated"},
            status=202,
        )

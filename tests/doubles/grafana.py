"""A tiny Grafana double: `POST /api/annotations` and `GET /api/annotations` (protocols 5.1)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tests.doubles._server import DoubleServer, answer


class GrafanaDouble(DoubleServer):
    def __init__(self, latency: float = 0.0) -> None:
        self.annotations: list[dict[str, Any]] = []
        super().__init__(latency)

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/api/annotations", self._create)
        app.router.add_get("/api/annotations", self._list)

    def add(self, time_ms: int, text: str, tags: list[str]) -> int:
        aid = len(self.annotations) + 1
        self.annotations.append(
            {
                "id": aid,
                "alertId": 0,
                "dashboardId": 0,
                "dashboardUID": "",
                "panelId": 0,
                "userId": 1,
                "newState": "",
                "prevState": "",
                "time": time_ms,
                "timeEnd": time_ms,
                "text": text,
                "tags": tags,
                "data": {},
            }
        )
        return aid

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not body.get("text"):
            return answer({"message": "text is required"}, 400)
        aid = self.add(int(body.get("time", 0)), body["text"], list(body.get("tags", [])))
        return answer({"message": "Annotation added", "id": aid})

    async def _list(self, request: web.Request) -> web.Response:
        q = request.query
        tags = q.getall("tags", [])
        match_any = q.get("matchAny") == "true"
        frm = int(q.get("from", "0"))
        to = int(q.get("to", str(2**62)))
        limit = int(q.get("limit", "100"))
        out = []
        for a in sorted(self.annotations, key=lambda a: -a["time"]):
            if not frm <= a["time"] <= to:
                continue
            if tags:
                hit = [t in a["tags"] for t in tags]
                if not (any(hit) if match_any else all(hit)):
                    continue
            out.append(a)
        return answer(out[:limit])

"""Grafana: deploy annotations (GET /api/annotations) and Explore links for the page.

Links are built only from the configured Grafana URL and data source uids; URLs found in an
alert (dashboard_url, runbook_url) are shown as links but never fetched.
"""

from __future__ import annotations

import json
from urllib.parse import quote

from pydantic import BaseModel, Field, ValidationError

from enricher.sources.config import GrafanaSourceConfig
from enricher.sources.http import BackendError, HttpBackend


class Annotation(BaseModel):
    id: int | None = None
    time: int = 0  # epoch ms
    timeEnd: int | None = None
    text: str = ""
    tags: list[str] = Field(default_factory=list)
    dashboardUID: str | None = None


class GrafanaClient:
    def __init__(self, http: HttpBackend, config: GrafanaSourceConfig) -> None:
        self.http = http
        self.config = config

    @property
    def configured(self) -> bool:
        return self.http.configured

    async def deploy_annotations(
        self, from_ms: int, to_ms: int, deadline: float | None = None
    ) -> list[Annotation]:
        resp = await self.http.get(
            "annotations",
            "/api/annotations",
            [
                ("from", from_ms),
                ("to", to_ms),
                ("tags", self.config.deploy_tag),
                ("limit", 100),
                ("type", "annotation"),
            ],
            deadline=deadline,
        )
        if resp.status != 200:
            kind = "bad_request" if 400 <= resp.status < 500 else "http_error"
            raise BackendError(
                "grafana", "annotations", kind, f"HTTP {resp.status}: {resp.text(200)}", resp.status
            )

        def parse() -> list[Annotation]:
            try:
                doc = json.loads(resp.body)
                return [Annotation.model_validate(a) for a in doc]
            except (ValueError, TypeError, ValidationError) as exc:
                raise BackendError(
                    "grafana", "annotations", "bad_response", str(exc)[:200]
                ) from None

        return self.http.parsed(resp, "annotations", parse)

    # --- links ----------------------------------------------------------------------------

    def _explore(
        self, datasource: str, query: dict[str, object], from_ms: int, to_ms: int
    ) -> str | None:
        base = self.config.base_url
        if base is None:
            return None
        panes = {
            "a": {
                "datasource": datasource,
                "queries": [{"refId": "A", "datasource": {"uid": datasource}, **query}],
                "range": {"from": str(from_ms), "to": str(to_ms)},
            }
        }
        return f"{base}/explore?schemaVersion=1&orgId=1&panes=" + quote(
            json.dumps(panes, separators=(",", ":")), safe=""
        )

    def trace_link(self, trace_id: str, from_ms: int, to_ms: int) -> str | None:
        uid = self.config.tempo_datasource_uid
        return self._explore(uid, {"queryType": "traceql", "query": trace_id}, from_ms, to_ms)

    def logs_link(self, logql: str, from_ms: int, to_ms: int) -> str | None:
        uid = self.config.loki_datasource_uid
        return self._explore(uid, {"expr": logql, "queryType": "range"}, from_ms, to_ms)

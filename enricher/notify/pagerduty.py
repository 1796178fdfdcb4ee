"""The `pagerduty` notifier: Events API v2, trigger on firing and resolve on resolved.

Why the page's `dedup_key`: it is derived from the Alertmanager group, so re-deliveries, a
later analysis update and the resolve all land on one PagerDuty alert; together with
PagerDuty's own dedup that makes at-least-once delivery effectively once. The event is built
by a pure function (`build_event`, golden-tested) and sent by a thin client that maps
PagerDuty's answers onto the retry rules written once in the pipeline: 202 is success, 400
is a bad event (logged with its body, not retried), 429 and 5xx are retried.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Literal

from pydantic import BaseModel, Field

from enricher.bundle.build import safe_link
from enricher.config import PagerDutyNotifierConfig
from enricher.notify.base import DeliveryError, SendContext
from enricher.notify.http import Poster
from enricher.notify.page import Page, clip, evidence_summary

log = logging.getLogger("enricher.notify.pagerduty")

MAX_SUMMARY = 1024
MAX_DEDUP = 255
MAX_EVENT_BYTES = 512 * 1024
# Well under the limit: a page is read on a phone, and PagerDuty shows custom_details whole.
_DETAILS_BUDGET = 16 * 1024
_LINK_KINDS = (
    ("grafana_trace", "Trace in Grafana"),
    ("tempo_trace", "Trace (Tempo API)"),
    ("grafana_logs", "Logs in Grafana"),
)


class PDLink(BaseModel):
    href: str
    text: str = ""


class PDPayload(BaseModel):
    summary: str
    source: str
    severity: Literal["critical", "error", "warning", "info"]
    timestamp: str | None = None
    component: str | None = None
    group: str | None = None
    # `class` is a Python keyword
    class_: str | None = Field(default=None, serialization_alias="class")
    custom_details: dict[str, Any] = Field(default_factory=dict)


class PDEvent(BaseModel):
    routing_key: str
    event_action: Literal["trigger", "acknowledge", "resolve"]
    dedup_key: str
    client: str | None = None
    client_url: str | None = None
    payload: PDPayload | None = None
    links: list[PDLink] | None = None

    def body(self) -> str:
        return json.dumps(self.model_dump(by_alias=True, exclude_none=True), ensure_ascii=False)


def _summary(page: Page) -> str:
    """The hypothesis first: that is what the responder acts on; then the alert's title."""
    a = page.analysis
    head = ""
    if a is not None and a.hypotheses:
        top = a.hypotheses[0]
        head = top.statement if top.kind == "cause" else "Cause unknown"
    text = f"{head} | {page.title}" if head else page.title
    return clip(" ".join(text.split()), MAX_SUMMARY)


def _component(page: Page) -> str | None:
    a = page.analysis
    if a is not None and a.hypotheses and a.hypotheses[0].service:
        return a.hypotheses[0].service
    if page.evidence is not None and page.evidence.culprit is not None:
        return page.evidence.culprit.service
    return page.labels.get("service") or None


def _source(page: Page) -> str:
    labels = page.labels
    svc = labels.get("service") or labels.get("job") or labels.get("alertname") or "alert"
    env = labels.get("environment") or labels.get("env") or labels.get("cluster")
    return clip(f"{svc}.{env}" if env else svc, 255)


def _links(page: Page, public_url: str | None) -> list[PDLink]:
    out: list[PDLink] = []
    if public_url:
        out.append(PDLink(href=f"{public_url.rstrip('/')}/pages/{page.id}", text="Enriched page"))
    if page.evidence is not None:
        for kind, text in _LINK_KINDS:
            link = next((x for x in page.evidence.links if x.kind == kind), None)
            if link is not None and safe_link(link.url):
                out.append(PDLink(href=link.url, text=text))
    for url, text in ((page.runbook_url, "Runbook"), (page.dashboard_url, "Dashboard")):
        if url and safe_link(url):
            out.append(PDLink(href=clip(url, 2048), text=text))
    return out


def _details(page: Page) -> dict[str, Any]:
    d: dict[str, Any] = {"page_id": page.id, "alert_count": page.alert_count}
    d.update(evidence_summary(page))
    d.pop("links", None)  # they are the event's links
    if page.degraded:
        d["degraded"] = page.reasons[:5]
    d["labels"] = {k: clip(v, 200) for k, v in list(page.labels.items())[:30]}
    # Stay compact: drop the largest entries until it fits.
    while len(json.dumps(d, default=str)) > _DETAILS_BUDGET and len(d) > 2:
        biggest = max(
            (k for k in d if k not in ("page_id", "alert_count")),
            key=lambda k: len(json.dumps(d[k], default=str)),
        )
        d.pop(biggest)
    return d


def build_event(
    page: Page,
    routing_key: str,
    severities: dict[str, str],
    default_severity: str,
    public_url: str | None = None,
) -> PDEvent:
    """The Events v2 event for a page: pure, so it is tested against golden files."""
    dedup = page.dedup_key[:MAX_DEDUP]
    if page.status == "resolved":
        return PDEvent(routing_key=routing_key, event_action="resolve", dedup_key=dedup)
    sev = severities.get((page.severity or "").lower(), default_severity)
    first = min((a.starts_at for a in page.alerts), default=page.received_at)
    client_url = page.external_url if page.external_url and safe_link(page.external_url) else None
    return PDEvent(
        routing_key=routing_key,
        event_action="trigger",
        dedup_key=dedup,
        client="alert-enricher",
        client_url=client_url,
        payload=PDPayload(
            summary=_summary(page),
            source=_source(page),
            severity=sev,  # type: ignore[arg-type]
            timestamp=first.isoformat(),
            component=_component(page),
            group=page.labels.get("team") or None,
            class_=page.labels.get("alertname") or None,
            custom_details=_details(page),
        ),
        links=_links(page, public_url) or None,
    )


class PagerDutyNotifier:
    name = "pagerduty"
    edits = False  # PagerDuty folds a second trigger into the open alert; nothing to edit

    def __init__(self, config: PagerDutyNotifierConfig, public_url: str | None = None) -> None:
        self.config = config
        self.public_url = public_url
        self.http = Poster(config.timeout)

    async def send(self, page: Page, ctx: SendContext) -> None:
        # A route may send to another PagerDuty service; the config refuses to load without
        # a default key.
        key = ctx.target.routing_key or self.config.routing_key
        assert key is not None
        event = build_event(
            page,
            key,
            self.config.severities,
            self.config.default_severity,
            self.public_url,
        )
        body = event.body()
        if len(body.encode()) > MAX_EVENT_BYTES:  # cannot happen with the budgets above
            raise DeliveryError("event over PagerDuty's 512 KB limit", retryable=False)
        answer = await self.http.post(
            str(self.config.url), body, {"Content-Type": "application/json"}
        )
        if answer.status in (200, 201, 202):
            return
        if answer.status < 500 and answer.status != 429:
            # 400: the event is wrong; sending it again cannot help.
            log.error(
                "PagerDuty rejected the event",
                extra={"status": answer.status, "body": answer.text, "page_id": page.id},
            )
        raise answer.error()

    async def close(self) -> None:
        await self.http.close()

"""The page: what an on-call engineer receives, whichever notifier carries it."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from enricher.analysis.model import Analysis
from enricher.bundle.model import EvidenceBundle
from enricher.intake.webhook import WebhookMessage
from enricher.sanitize import clean_text, safe_url

if TYPE_CHECKING:
    from enricher.store.base import PageRecord

# A 10,000-alert group still makes a readable page: the rest are counted, not listed.
MAX_LISTED_ALERTS = 20
MAX_VALUE_CHARS = 1024


def clip(value: str, limit: int = MAX_VALUE_CHARS) -> str:
    """Bound a label or annotation value for display; the stored notification keeps it whole."""
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _text(value: str, limit: int = MAX_VALUE_CHARS) -> str:
    return clip(clean_text(value), limit)


def _clip_map(m: dict[str, str]) -> dict[str, str]:
    """Labels or annotations as people will read them (the stored notification keeps the
    raw values)."""
    return {_text(k, 256): _text(v) for k, v in m.items()}


class PageAlert(BaseModel):
    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: datetime
    ends_at: datetime | None = None
    generator_url: str = ""
    fingerprint: str


class Page(BaseModel):
    id: int
    status: Literal["firing", "resolved"]
    title: str
    severity: str
    group_key: str
    dedup_key: str
    # The notification's own identity (its idempotency key: group, status, each alert's state),
    # the same on every replica and data directory for the same notification; "" on pages
    # stored before it existed.
    notification_key: str = ""
    receiver: str
    labels: dict[str, str]
    annotations: dict[str, str]
    alerts: list[PageAlert]
    alert_count: int
    truncated_alerts: int = 0
    received_at: datetime
    deadline: datetime
    paged_at: datetime
    degraded: bool = False
    reasons: list[str] = Field(default_factory=list)
    runbook_url: str | None = None
    dashboard_url: str | None = None
    external_url: str = ""
    resolves: int | None = None
    resolved_at: datetime | None = None
    resolved_by: int | None = None
    evidence: EvidenceBundle | None = None
    analysis: Analysis | None = None
    # Milliseconds each pipeline stage took for this page (gather, analyse), for the detail.
    timings: dict[str, float] = Field(default_factory=dict)


def dedup_key(group_key: str) -> str:
    """Stable per alert group, so PagerDuty and friends fold re-deliveries into one incident."""
    return "enricher-" + hashlib.sha256(group_key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def build_page(
    page_id: int,
    msg: WebhookMessage,
    *,
    received_at: float,
    deadline: float,
    reasons: list[str],
    resolves: int | None = None,
    evidence: EvidenceBundle | None = None,
    analysis: Analysis | None = None,
) -> Page:
    first = msg.alerts[0]
    labels = msg.commonLabels or first.labels
    annotations = msg.commonAnnotations or first.annotations
    name = labels.get("alertname") or first.labels.get("alertname", "alert")
    severity = msg.severity()
    summary = annotations.get("summary") or annotations.get("description") or ""
    title = f"[{(severity or msg.status).upper()}] {name}"
    if summary:
        title += f" - {summary}"
    if msg.status == "resolved":
        title = f"[RESOLVED] {name}" + (f" - {summary}" if summary else "")
    listed = msg.alerts[:MAX_LISTED_ALERTS]
    # Every value below comes from the validated message or from us: construct, don't re-check.
    return Page.model_construct(
        id=page_id,
        status=msg.status,
        title=clip(clean_text(title, one_line=True), 300),
        severity=severity,
        group_key=msg.groupKey,
        dedup_key=dedup_key(msg.groupKey),
        notification_key=msg.idempotency_key(),
        receiver=msg.receiver,
        labels=_clip_map(labels),
        annotations=_clip_map(annotations),
        alerts=[
            PageAlert.model_construct(
                status=a.status,
                labels=_clip_map(a.labels),
                annotations=_clip_map(a.annotations),
                starts_at=a.starts_at,
                ends_at=a.ends_at,
                generator_url=safe_url(a.generatorURL) or "",
                fingerprint=a.identity,
            )
            for a in listed
        ],
        alert_count=len(msg.alerts) + msg.truncatedAlerts,
        truncated_alerts=msg.truncatedAlerts + len(msg.alerts) - len(listed),
        received_at=datetime.fromtimestamp(received_at, UTC),
        deadline=datetime.fromtimestamp(deadline, UTC),
        paged_at=datetime.now(UTC),
        # A reason that only informs (no sources configured: nothing was meant to be
        # gathered) does not make the page degraded; every other reason is something cut short.
        degraded=any(r != NO_SOURCES for r in reasons),
        reasons=reasons,
        runbook_url=safe_url(
            annotations.get("runbook_url") or first.annotations.get("runbook_url")
        ),
        dashboard_url=safe_url(
            annotations.get("dashboard_url") or first.annotations.get("dashboard_url")
        ),
        external_url=msg.externalURL,
        resolves=resolves,
        resolved_at=None,
        resolved_by=None,
        evidence=evidence,
        analysis=analysis,
        timings={},
    )


NO_SOURCES = (
    "no evidence: no evidence source (sources.prometheus, sources.tempo, sources.loki) "
    "is configured, so this page shows the alert only"
)


def no_evidence_note(page: Page) -> str | None:
    """Why a firing page has no evidence when no backend was asked: its service has no
    sources configured. A reader must not take that for "the backends found nothing";
    gathering that failed or ran out of time says so in its own reasons."""
    if page.status != "firing" or page.evidence is not None:
        return None
    # Pages stored before the reason existed carry no reasons at all.
    return NO_SOURCES if NO_SOURCES in page.reasons or not page.reasons else None


def evidence_summary(page: Page) -> dict[str, Any]:
    """The few lines of evidence a person reads first, for notifiers with little room."""
    b = page.evidence
    out: dict[str, Any] = {}
    a = page.analysis
    if a is not None and a.hypotheses:
        top = a.hypotheses[0]
        out["hypothesis"] = clip(top.statement, 600)
        out["confidence"] = top.confidence
        if len(a.hypotheses) > 1:
            out["other_hypotheses"] = [clip(h.statement, 200) for h in a.hypotheses[1:3]]
        ruled = [f"{v.service}: {v.reason}" for v in a.deploys if v.verdict == "ruled_out"]
        if ruled:
            out["ruled_out"] = ruled[:3]
    if b is None:
        note = no_evidence_note(page)
        if note:
            out["evidence"] = note
        return out
    if b.culprit is not None:
        c = b.culprit
        out["suspect"] = f"{c.service} {c.operation} {c.duration_ms:.0f} ms ({c.status})" + (
            f"; {c.contrast}" if c.contrast else ""
        )
        if c.key_attributes:
            out["suspect_attributes"] = {k: c.key_attributes[k] for k in list(c.key_attributes)[:6]}
        for item_id in c.log_item_ids[:1]:
            item = b.item(item_id)
            if item is not None and item.log is not None:
                out["log"] = clip(item.log.line, 300)
    blamed = [v.service for v in a.deploys if v.verdict == "suspect"] if a is not None else []
    recent = [d for d in b.deploy if d.minutes_before_alert is not None]
    deploy = next((d for d in b.deploy if d.service in blamed), None)
    if deploy is None and a is None:  # no analysis: the nearest deploy, as the bundle says
        deploy = recent[0] if recent else b.deploy[0] if b.deploy else None
    if deploy is not None and deploy.summary:
        out["deploy"] = deploy.summary
    links = {link.kind: link.url for link in b.links}
    if links:
        out["links"] = links
    if b.missing:
        out["missing"] = [f"{m.source}: {m.what}: {m.reason}" for m in b.missing][:5]
    return out


def page_from_record(rec: PageRecord) -> Page:
    """The stored page as a `Page`, with the record's later facts (resolved, and when)."""
    doc = json.loads(rec.doc) if isinstance(rec.doc, str) else dict(rec.doc)
    doc["status"] = rec.status
    if rec.resolved_at is not None:
        doc["resolved_at"] = datetime.fromtimestamp(rec.resolved_at, UTC)
        doc["resolved_by"] = rec.resolved_by
    return Page.model_validate(doc)

"""The `alertmanager` notifier: enriched alerts posted back to an Alertmanager.

Why back to Alertmanager: every receiver a team already has (Opsgenie, Teams, email, ...)
then gets the evidence without a new integration. Each alert of the page is re-posted to
`POST /api/v2/alerts` with its own labels plus a marker label (`enriched="true"`) and the
evidence as annotations (`enricher_hypothesis`, `enricher_page_url`, ...). The marker is what
keeps this from looping: the Alertmanager route sends marked alerts to the real receivers and
never to the enricher (docs/alertmanager-forward.md), and the intake ignores marked alerts
that reach it anyway.

Why no receipt: Alertmanager identifies an alert by its label set, so a retried or repeated
post of the same alert merges into the alert it already holds and notifies nobody twice;
at-least-once delivery is effectively once without our own bookkeeping.

Why a firing copy carries an explicit `endsAt` (`FIRING_HOLD` after the page): Alertmanager
resolves an alert posted without one after its `resolve_timeout` (5 minutes by default), and
the enricher posts an alert once per firing, not every minute as Prometheus does. Without it
every incident longer than five minutes would be resolved downstream while still firing. The
resolve of the original alert reaches the enricher, whose resolved page posts the copy again
with the real `endsAt`, which ends it; the hold only bounds how long a copy outlives a lost
resolve.

The alerts are built by a pure function (`build_alerts`, golden-tested) and posted by a thin
client: 200 is success, other 4xx than 429 are permanent (the alert is malformed), 429 and 5xx
are retried by the outbox.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from enricher.config import AlertmanagerForwardConfig
from enricher.notify.base import SendContext
from enricher.notify.http import Poster
from enricher.notify.page import Page, PageAlert, clip, evidence_summary
from enricher.sanitize import clean_text, safe_url

log = logging.getLogger("enricher.notify.alertmanager")

API_PATH = "/api/v2/alerts"
MAX_VALUE = 1024
MAX_URL = 2048
FIRING_HOLD = timedelta(days=7)
# Alertmanager 0.25 refuses (400, the whole batch) a label or annotation name outside this.
_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_TRACE_KINDS = ("grafana_trace", "tempo_trace")


def clean(value: str, *, one_line: bool = False) -> str:
    """A value Alertmanager and every downstream receiver can show as it is: no control
    characters, within `MAX_VALUE` characters; our own facts also on one line."""
    return clip(clean_text(value, one_line=one_line), MAX_VALUE)


def _url(value: str | None) -> str | None:
    """A link only if it is plain http(s) and whole: a clipped URL is a broken one."""
    return safe_url(value)


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _evidence(page: Page, public_url: str | None) -> dict[str, str]:
    """The evidence annotations, without prefix, only those the page has."""
    out: dict[str, str] = {}
    summary = evidence_summary(page)
    a = page.analysis
    if a is not None and a.hypotheses:
        out["hypothesis"] = a.hypotheses[0].statement
        out["confidence"] = f"{a.hypotheses[0].confidence:.2f}"
    for ours, theirs in (("suspect_span", "suspect"), ("deploy", "deploy"), ("log", "log")):
        if summary.get(theirs):
            out[ours] = str(summary[theirs])
    if public_url:
        out["page_url"] = f"{public_url.rstrip('/')}/pages/{page.id}"
    if page.evidence is not None:
        links = {x.kind: x.url for x in page.evidence.links}
        trace = next((u for k in _TRACE_KINDS if (u := _url(links.get(k))) is not None), None)
        if trace is not None:
            out["trace_url"] = trace
    if page.degraded:
        out["degraded"] = "; ".join(page.reasons) or "degraded"
    return {k: clean(v, one_line=True) for k, v in out.items() if v}


def _pairs(values: dict[str, str]) -> dict[str, str]:
    """Names Alertmanager accepts, cleaned values, empty ones left out (they mean unset)."""
    out = {}
    for k, v in values.items():
        if _NAME.match(k):
            v = clean(v)
            if v:
                out[k] = v
    return out


def _alert(
    alert: PageAlert,
    config: AlertmanagerForwardConfig,
    evidence: dict[str, str],
    now: datetime,
) -> dict[str, Any]:
    labels = _pairs(alert.labels)
    labels[config.label] = "true"
    prefix = config.annotation_prefix
    # An annotation that looks like ours but is not (a forged or stale one) is dropped.
    annotations = {k: v for k, v in _pairs(alert.annotations).items() if not k.startswith(prefix)}
    annotations.update({prefix + k: v for k, v in evidence.items()})
    out: dict[str, Any] = {
        "labels": labels,
        "annotations": annotations,
        "startsAt": _ts(alert.starts_at),
    }
    ends = (alert.ends_at or now) if alert.status == "resolved" else now + FIRING_HOLD
    # Alertmanager refuses an alert that ends before it starts.
    out["endsAt"] = _ts(max(ends, alert.starts_at))
    generator = _url(alert.generator_url)
    if generator is not None:
        out["generatorURL"] = generator
    return out


def build_alerts(
    page: Page,
    config: AlertmanagerForwardConfig,
    public_url: str | None = None,
) -> list[dict[str, Any]]:
    """The postable alerts (Alertmanager API v2) for a page: one per alert the page lists.

    Pure (the only clock is `page.paged_at`), so it is tested against golden files. Labels are
    the alert's own plus the marker, so downstream routing on `team` or `severity` keeps
    working and the firing and resolved posts land on the same Alertmanager alert.
    """
    evidence = _evidence(page, public_url)
    return [_alert(a, config, evidence, page.paged_at) for a in page.alerts]


def alerts_url(base: str) -> str:
    """`{base}/api/v2/alerts`, with or without a trailing slash or a path prefix
    (`http://am:9093/alertmanager`), and as is when it already names the endpoint."""
    parts = urlsplit(base)
    path = parts.path.rstrip("/")
    if not path.endswith(API_PATH):
        path += API_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def auth_headers(config: AlertmanagerForwardConfig) -> dict[str, str]:
    if config.bearer_token:
        return {"Authorization": f"Bearer {config.bearer_token}"}
    if config.basic is not None:
        raw = f"{config.basic.username}:{config.basic.password or ''}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode("ascii")}
    return {}


class AlertmanagerForwarder:
    name = "alertmanager"
    edits = False  # a repost would be merged by Alertmanager, not shown as an edit

    def __init__(self, config: AlertmanagerForwardConfig, public_url: str | None = None) -> None:
        self.config = config
        self.public_url = public_url
        self.url = alerts_url(str(config.url))
        self.headers = {"Content-Type": "application/json", **auth_headers(config)}
        self.http = Poster(config.timeout)

    async def send(self, page: Page, ctx: SendContext) -> None:
        alerts = build_alerts(page, self.config, self.public_url)
        if not alerts:
            return
        body = json.dumps(alerts, ensure_ascii=False, separators=(",", ":"))
        answer = await self.http.post(self.url, body, self.headers)
        if 200 <= answer.status < 300:
            return
        if answer.status < 500 and answer.status != 429:
            # 400: Alertmanager refused the alerts; sending them again cannot help.
            log.error(
                "Alertmanager refused the enriched alerts",
                extra={"status": answer.status, "body": answer.text, "page_id": page.id},
            )
        raise answer.error()

    async def close(self) -> None:
        await self.http.close()

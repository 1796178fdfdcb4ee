"""The `slack` notifier, incoming-webhook mode: one Block Kit message per page.

Why a pure builder with its own limits: Slack rejects a whole message for one block over
its limit (`invalid_blocks`), and a page must never be lost to a long label or log line. So
`build_message` escapes every piece of alert and log content (`&`, `<`, `>`: this also
disarms `<!channel>`, `<!here>` and `<@U…>` mentions; a bare `@channel` gets a zero-width
joiner) and cuts each text to its Block Kit limit on code points, with an ellipsis.
"""

from __future__ import annotations

import json
import re
from typing import Any

from enricher.bundle.build import safe_link
from enricher.config import SlackNotifierConfig
from enricher.notify.base import SendContext
from enricher.notify.http import Poster
from enricher.notify.page import Page

MAX_BLOCKS = 50
MAX_HEADER = 150
MAX_SECTION = 3000
MAX_FIELD = 2000
MAX_FIELDS = 10
MAX_CONTEXT = 10
MAX_BUTTON_TEXT = 75
MAX_URL = 3000
MAX_TEXT = 4000
_MENTION = re.compile(r"@(channel|here|everyone)\b", re.I)
# single angle quotation marks: visible, and no client reads them as markup
_ANGLES = str.maketrans({"<": "\u2039", ">": "\u203a"})
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u202a-\u202e\u2066-\u2069]")


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def esc(text: str) -> str:
    """Alert or log content made inert for mrkdwn."""
    text = _CONTROL.sub("", text)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MENTION.sub(lambda m: "@\u2060" + m.group(1), text)


def _plain(text: str, limit: int) -> dict[str, Any]:
    return {
        "type": "plain_text",
        # plain_text is shown as is; angle brackets become look-alikes so that no client
        # that does parse them (notifications, older apps) sees a mention
        "text": cut(
            _MENTION.sub("@\u2060\\1", _CONTROL.sub("", text)).translate(_ANGLES),
            limit,
        ),
    }


def _md(text: str, limit: int = MAX_SECTION) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": cut(text, limit)}


def _code(text: str, limit: int) -> str:
    body = esc(text).replace("```", "'''")
    return "```" + cut(body, limit - 6) + "```"


def build_message(page: Page, public_url: str | None = None) -> dict[str, Any]:
    """The webhook body for a page: header, hypothesis, facts, key log line, links, context."""
    labels = page.labels
    sev = (page.severity or page.status).upper()
    name = labels.get("alertname", "alert")
    where = " · ".join(x for x in (labels.get("service"), labels.get("environment")) if x)
    status = "RESOLVED" if page.status == "resolved" else sev
    header = f"[{status}] {name}" + (f" · {where}" if where else "")
    blocks: list[dict[str, Any]] = [{"type": "header", "text": _plain(header, MAX_HEADER)}]

    a, b = page.analysis, page.evidence
    summary = page.annotations.get("summary", "")
    if a is not None and a.hypotheses and page.status == "firing":
        top = a.hypotheses[0]
        label = "Cause unknown" if top.kind == "unknown" else f"Likely cause ({top.confidence:.0%})"
        blocks.append({"type": "section", "text": _md(f"*{label}*\n{esc(top.statement)}")})
    elif summary:
        blocks.append({"type": "section", "text": _md(esc(summary))})

    fields: list[dict[str, Any]] = []
    if b is not None and b.culprit is not None:
        c = b.culprit
        fields.append(
            _md(
                f"*Suspect span*\n{esc(c.service)} `{esc(c.operation)}` {c.duration_ms:.0f} ms",
                MAX_FIELD,
            )
        )
        flags = [
            f"{k}={str(v).lower() if isinstance(v, bool) else v}"
            for k, v in c.key_attributes.items()
            if k.startswith("feature_flag.")
        ]
        if flags:
            fields.append(_md("*Feature flag*\n" + esc(", ".join(flags[:3])), MAX_FIELD))
    if a is not None:
        blamed = next((v for v in a.deploys if v.verdict == "suspect"), None)
        if blamed is not None:
            when = (
                f", deployed {blamed.minutes_before_alert:g} min before"
                if blamed.minutes_before_alert is not None
                else ""
            )
            ver = " -> ".join(x for x in (blamed.version, blamed.commit) if x)
            fields.append(_md(f"*Deploy*\n{esc(blamed.service)} {esc(ver)}{esc(when)}", MAX_FIELD))
        ruled = [v for v in a.deploys if v.verdict == "ruled_out"]
        if ruled:
            text = "; ".join(f"{v.service} {v.version or ''}".strip() for v in ruled[:3])
            fields.append(_md(f"*Ruled out*\n{esc(text)}", MAX_FIELD))
    fields.append(_md(f"*Alerts*\n{page.alert_count}", MAX_FIELD))
    blocks.append({"type": "section", "fields": fields[:MAX_FIELDS]})

    if b is not None and b.culprit is not None:
        for item_id in b.culprit.log_item_ids[:1]:
            item = b.item(item_id)
            if item is not None and item.log is not None:
                blocks.append({"type": "section", "text": _md(_code(item.log.line, 1000))})

    buttons = _buttons(page, public_url)
    if buttons:
        blocks.append({"type": "actions", "elements": buttons[:25]})
    context = []
    if page.degraded:
        context.append(_md("Degraded: " + esc("; ".join(page.reasons[:3])), MAX_SECTION))
    if b is not None:
        context.append(
            _md(f"{len(b.items)} evidence items · {len(b.missing)} missing", MAX_SECTION)
        )
    context.append(_md(f"page {page.id} · alert-enricher", MAX_SECTION))
    blocks.append({"type": "context", "elements": context[:MAX_CONTEXT]})
    text = cut(page.title if page.status == "firing" else f"[RESOLVED] {name}", MAX_TEXT)
    return {"text": esc(text), "blocks": blocks[:MAX_BLOCKS]}


def _buttons(page: Page, public_url: str | None) -> list[dict[str, Any]]:
    links: list[tuple[str, str]] = []
    if public_url:
        links.append(("Page", f"{public_url.rstrip('/')}/pages/{page.id}"))
    if page.evidence is not None:
        for kind, text in (("grafana_trace", "Trace"), ("grafana_logs", "Logs")):
            link = next((x for x in page.evidence.links if x.kind == kind), None)
            if link is not None:
                links.append((text, link.url))
    links += [("Runbook", page.runbook_url or ""), ("Dashboard", page.dashboard_url or "")]
    out = []
    for i, (text, url) in enumerate(links):
        if url and safe_link(url) and len(url) <= MAX_URL:
            out.append(
                {
                    "type": "button",
                    "text": _plain(text, MAX_BUTTON_TEXT),
                    "url": url,
                    "action_id": f"link-{i}",
                }
            )
    return out


class SlackWebhookNotifier:
    name = "slack"
    edits = False  # an incoming webhook can only post

    def __init__(self, config: SlackNotifierConfig, public_url: str | None = None) -> None:
        self.config = config
        self.public_url = public_url
        self.http = Poster(config.timeout)

    async def send(self, page: Page, ctx: SendContext) -> None:
        assert self.config.webhook_url is not None
        answer = await self.http.post(
            self.config.webhook_url,
            json.dumps(build_message(page, self.public_url)),
            {"Content-Type": "application/json"},
            secret_url=True,
        )
        if answer.status != 200:  # 429 and 5xx are Slack being busy; the rest is permanent
            raise answer.error()

    async def close(self) -> None:
        await self.http.close()

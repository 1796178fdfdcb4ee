"""The `slack` notifier's Block Kit builders, and its incoming-webhook mode (one message per
page; bot mode, which edits and threads, is in `slack_bot`).

The builders are pure: `build_message` (the page), `build_detail` (the thread reply in bot
mode: every hypothesis, more log lines, deploys, missing evidence, stage timings) and
`build_resolved` (the firing message rewritten once its alert resolved).

Why a pure builder with its own limits: Slack rejects a whole message for one block over
its limit (`invalid_blocks`), and a page must never be lost to a long label or log line. So
every builder escapes every piece of alert and log content (`&`, `<`, `>`: this also
disarms `<!channel>`, `<!here>` and `<@U…>` mentions; a bare `@channel` gets a zero-width
joiner) and cuts each text to its Block Kit limit on code points, with an ellipsis.
"""

from __future__ import annotations

import json
import re
from typing import Any

from enricher.analysis.model import Hypothesis
from enricher.bundle.build import safe_link
from enricher.config import SlackNotifierConfig
from enricher.notify.base import SendContext
from enricher.notify.http import Poster
from enricher.notify.page import Page, no_evidence_note
from enricher.sanitize import clean_text

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


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def esc(text: str) -> str:
    """Alert or log content made inert for mrkdwn."""
    text = clean_text(text)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MENTION.sub(lambda m: "@\u2060" + m.group(1), text)


def _plain(text: str, limit: int) -> dict[str, Any]:
    return {
        "type": "plain_text",
        # plain_text is shown as is; angle brackets become look-alikes so that no client
        # that does parse them (notifications, older apps) sees a mention
        "text": cut(
            _MENTION.sub("@\u2060\\1", clean_text(text)).translate(_ANGLES),
            limit,
        ),
    }


def _md(text: str, limit: int = MAX_SECTION) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": cut(text, limit)}


def _code(text: str, limit: int) -> str:
    body = esc(text).replace("```", "'''")
    return "```" + cut(body, limit - 6) + "```"


def _header(page: Page, status: str) -> dict[str, Any]:
    labels = page.labels
    name = labels.get("alertname", "alert")
    where = " · ".join(x for x in (labels.get("service"), labels.get("environment")) if x)
    header = f"[{status}] {name}" + (f" · {where}" if where else "")
    return {"type": "header", "text": _plain(header, MAX_HEADER)}


def _cause_label(h: Hypothesis) -> str:
    return "Cause unknown" if h.kind == "unknown" else f"Likely cause ({h.confidence:.0%})"


def _facts(page: Page) -> dict[str, Any]:
    """The fields section: suspect span, feature flags, deploys, alert count."""
    a, b = page.analysis, page.evidence
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
    return {"type": "section", "fields": fields[:MAX_FIELDS]}


def _key_log(page: Page) -> list[dict[str, Any]]:
    b = page.evidence
    if b is None or b.culprit is None:
        return []
    for item_id in b.culprit.log_item_ids[:1]:
        item = b.item(item_id)
        if item is not None and item.log is not None:
            return [{"type": "section", "text": _md(_code(item.log.line, 1000))}]
    return []


def _context(page: Page, tail: str, *, live: bool = True, edits: bool = False) -> dict[str, Any]:
    b = page.evidence
    context = []
    if page.degraded:
        context.append(_md("Degraded: " + esc("; ".join(page.reasons[:3])), MAX_SECTION))
    if b is not None:
        context.append(
            _md(f"{len(b.items)} evidence items · {len(b.missing)} missing", MAX_SECTION)
        )
    elif note := no_evidence_note(page):
        context.append(_md(note[:1].upper() + note[1:]))
    a = page.analysis
    if (
        live
        and page.status == "firing"
        and a is not None
        and a.llm is not None
        and a.llm.status == "pending"
    ):
        # The page went out at its deadline before the LLM answered: say the message will change.
        note = "this message is updated when it lands" if edits else "the page shows its answer"
        context.append(_md(f"LLM analysis pending: {note}"))
    context.append(_md(tail, MAX_SECTION))
    return {"type": "context", "elements": context[:MAX_CONTEXT]}


def build_message(
    page: Page, public_url: str | None = None, *, edits: bool = False
) -> dict[str, Any]:
    """The message for a page: header, hypothesis, facts, key log line, links, context.
    `edits`: the sender edits it later (bot mode), so a pending LLM answer will appear in it."""
    name = page.labels.get("alertname", "alert")
    sev = (page.severity or page.status).upper()
    blocks = [_header(page, "RESOLVED" if page.status == "resolved" else sev)]

    a = page.analysis
    summary = page.annotations.get("summary", "")
    if a is not None and a.hypotheses and page.status == "firing":
        top = a.hypotheses[0]
        blocks.append(
            {"type": "section", "text": _md(f"*{_cause_label(top)}*\n{esc(top.statement)}")}
        )
    elif summary:
        blocks.append({"type": "section", "text": _md(esc(summary))})
    blocks.append(_facts(page))
    blocks += _key_log(page)

    buttons = _buttons(page, public_url)
    if buttons:
        blocks.append({"type": "actions", "elements": buttons[:25]})
    blocks.append(_context(page, f"page {page.id} · alert-enricher", edits=edits))
    text = cut(page.title if page.status == "firing" else f"[RESOLVED] {name}", MAX_TEXT)
    return {"text": cut(esc(text), MAX_TEXT), "blocks": blocks[:MAX_BLOCKS]}


def resolved_minutes(prior: Page, resolved: Page) -> int:
    """Whole minutes from the first alert's start to the last alert's end (or, when
    Alertmanager gave no end, until the resolution arrived)."""
    starts = [x.starts_at for x in prior.alerts] or [prior.received_at]
    ends = [x.ends_at for x in resolved.alerts if x.ends_at is not None]
    end = max(ends) if ends else resolved.resolved_at or resolved.received_at
    return max(0, round((end - min(starts)).total_seconds() / 60))


def resolved_after(prior: Page, resolved: Page) -> str:
    n = resolved_minutes(prior, resolved)
    return "Resolved after under 1 min" if n < 1 else f"Resolved after {n} min"


def _without_actions(h: Hypothesis) -> str:
    """The statement without its ` -> do this` tail: once resolved, nobody should act on it."""
    tail = " -> " + "; ".join(h.actions[:2])
    if h.actions and h.statement.endswith(tail):
        return h.statement[: -len(tail)]
    return h.statement


def build_resolved(
    prior: Page | None, resolved: Page, public_url: str | None = None
) -> dict[str, Any]:
    """The firing message rewritten once its alert resolved (Slack bot mode edits it in
    place): a `[RESOLVED]` header, how long it lasted, the hypothesis and evidence kept for the
    record, but no severity, no "do this" and no runbook button. Without the firing page
    (`prior` None) it is rendered from the resolved page alone."""
    first = prior or resolved
    name = first.labels.get("alertname", "alert")
    after = resolved_after(first, resolved)
    blocks = [_header(first, "RESOLVED")]
    blocks.append({"type": "section", "text": _md(f"*{after}.* No action needed.")})
    a = first.analysis
    summary = first.annotations.get("summary", "")
    if a is not None and a.hypotheses:
        top = a.hypotheses[0]
        text = f"*{_cause_label(top)}*\n{esc(_without_actions(top))}"
        blocks.append({"type": "section", "text": _md(text)})
    elif summary:
        blocks.append({"type": "section", "text": _md(esc(summary))})
    blocks.append(_facts(first))
    blocks += _key_log(first)
    buttons = _buttons(first, public_url, skip=("Runbook",))
    if buttons:
        blocks.append({"type": "actions", "elements": buttons[:25]})
    tail = f"page {first.id}" + (f" · resolved by page {resolved.id}" if prior else "")
    blocks.append(_context(first, tail + " · alert-enricher", live=False))
    text = cut(f"[RESOLVED] {name} - {after[0].lower()}{after[1:]}", MAX_TEXT)
    return {"text": cut(esc(text), MAX_TEXT), "blocks": blocks[:MAX_BLOCKS]}


MAX_HYPOTHESES = 10
MAX_DETAIL_LOGS = 5
MAX_LIST = 10


def _inline(text: str, limit: int = 200) -> str:
    """Content as inline code; a backtick in it would end the code span early."""
    return "`" + cut(esc(text).replace("`", "'"), limit) + "`"


def _bullets(lines: list[str], per_line: int = 400) -> str:
    return "\n".join("• " + cut(x, per_line) for x in lines[:MAX_LIST])


def _detail_logs(page: Page) -> list[str]:
    """Up to five log lines, the culprit's first, then the bundle's other lines, then
    templates (their example line with a count)."""
    b = page.evidence
    if b is None:
        return []
    ids = list(b.culprit.log_item_ids) if b.culprit is not None else []
    ids += [i.id for i in b.items if i.kind in ("log", "log_template") and i.id not in ids]
    out: list[str] = []
    for item_id in ids:
        item = b.item(item_id)
        if item is None:
            continue
        if item.log is not None:
            out.append(item.log.line)
        elif item.template is not None:
            out.append(f"[x{item.template.count}] {item.template.example}")
        if len(out) >= MAX_DETAIL_LOGS:
            break
    return out


def build_detail(page: Page) -> dict[str, Any]:
    """The thread reply under a bot-mode page: what the main message has no room for (every
    hypothesis with its confidence and evidence ids, more log lines, each deploy's verdict,
    what could not be gathered, how long each stage took), under the same limits and escaping
    as the main message."""
    name = page.labels.get("alertname", "alert")
    blocks: list[dict[str, Any]] = []
    a, b = page.analysis, page.evidence
    if a is None or not a.hypotheses:
        why = (a.unknown_reason if a is not None else "") or "no analysis on this page"
        blocks.append({"type": "section", "text": _md(f"*No hypothesis*\n{esc(cut(why, 2000))}")})
    else:
        for i, h in enumerate(a.hypotheses[:MAX_HYPOTHESES], 1):
            label = "cause unknown" if h.kind == "unknown" else f"{h.confidence:.0%} confidence"
            src = " · LLM" if h.source == "llm" else ""
            parts = [f"*Hypothesis {i} · {label}{src}*", cut(esc(h.statement), 2000)]
            if h.evidence_ids:
                ids = ", ".join(_inline(x, 120) for x in h.evidence_ids[:8])
                parts.append(cut(f"_Evidence:_ {ids}", 500))
            if h.signals:
                sig = ", ".join(f"{s.name} +{s.weight:.2f}" for s in h.signals[:8])
                parts.append(cut(f"_Signals:_ {esc(sig)}", 300))
            blocks.append({"type": "section", "text": _md("\n".join(parts))})
        more = len(a.hypotheses) - MAX_HYPOTHESES
        if more > 0:
            blocks.append({"type": "context", "elements": [_md(f"+{more} more hypotheses")]})
    logs = _detail_logs(page)
    if logs:
        body = "\n".join(cut(x, 500) for x in logs)
        blocks.append({"type": "section", "text": _md("*Log lines*\n" + _code(body, 2900))})
    if a is not None and a.deploys:
        lines = []
        for v in a.deploys:
            ver = " -> ".join(x for x in (v.version, v.commit) if x)
            when = (
                f" ({v.minutes_before_alert:g} min before)"
                if v.minutes_before_alert is not None
                else ""
            )
            verdict = v.verdict.replace("_", " ")
            lines.append(esc(f"{v.service} {ver}".strip() + f"{when}: {verdict}: {v.reason}"))
        blocks.append({"type": "section", "text": _md("*Deploys*\n" + _bullets(lines))})
    elif b is not None and b.deploy:
        lines = [esc(d.summary or d.service) for d in b.deploy]
        blocks.append({"type": "section", "text": _md("*Deploys*\n" + _bullets(lines))})
    if b is not None and b.missing:
        lines = [esc(f"{m.source}: {m.what}: {m.reason}") for m in b.missing]
        if len(b.missing) > MAX_LIST:
            lines = [*lines[: MAX_LIST - 1], f"and {len(b.missing) - MAX_LIST + 1} more"]
        blocks.append({"type": "section", "text": _md("*Missing evidence*\n" + _bullets(lines))})
    context = []
    if page.timings:
        stages = " · ".join(f"{esc(k)} {v:.0f} ms" for k, v in list(page.timings.items())[:8])
        context.append(_md(f"Stage timings: {stages}", MAX_SECTION))
    if a is not None and a.llm is not None:
        llm = a.llm
        what = f"LLM {llm.status}" + (
            f" ({llm.model}, {llm.latency_ms:.0f} ms)" if llm.model else ""
        )
        context.append(_md(esc(what), MAX_SECTION))
    context.append(_md(f"page {page.id} · detail · alert-enricher", MAX_SECTION))
    blocks.append({"type": "context", "elements": context[:MAX_CONTEXT]})
    n = len(a.hypotheses) if a is not None else 0
    text = cut(f"Detail for {name}: {n} hypotheses, {len(logs)} log lines", MAX_TEXT)
    return {"text": cut(esc(text), MAX_TEXT), "blocks": blocks[:MAX_BLOCKS]}


def _buttons(
    page: Page, public_url: str | None, skip: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
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
        if text in skip:
            continue
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

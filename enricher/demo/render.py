"""A page in the terminal, as the README's "After" block shows it: the title, then one labelled
line each for the suspect span, its log line, the deploy, the likely cause and the links.

Colour (ANSI) only when asked for (`colour=True`: stdout is a terminal); page content is alert
and backend content, so every value goes through `clean_text` and no escape sequence of its
own reaches the screen.
"""

from __future__ import annotations

from typing import Any

from enricher.sanitize import clean_text

_RESET = "\x1b[0m"
_STYLES = {
    "title": "\x1b[1;31m",  # bold red
    "label": "\x1b[36m",  # cyan
    "culprit": "\x1b[1;33m",  # bold yellow
    "dim": "\x1b[2m",
    "good": "\x1b[32m",
}
_WIDTH = 15  # label column


def _t(value: Any, limit: int = 300) -> str:
    text = clean_text(str(value), one_line=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _trim_ids(line: str) -> str:
    """A log line without the trace/span ids it repeats (they are shown after it)."""
    words = [w for w in line.split(" ") if not w.startswith(("trace_id=", "span_id="))]
    return " ".join(words)


class _Out:
    def __init__(self, colour: bool) -> None:
        self.colour = colour
        self.lines: list[str] = []

    def style(self, text: str, name: str) -> str:
        return f"{_STYLES[name]}{text}{_RESET}" if self.colour and text else text

    def row(self, label: str, text: str) -> None:
        pad = label.ljust(_WIDTH)
        self.lines.append(self.style(pad, "label") + text if label else " " * _WIDTH + text)


def render(page: dict[str, Any], colour: bool = False, html_url: str | None = None) -> list[str]:
    """The page as terminal lines; `html_url` adds where its HTML page is served."""
    out = _Out(colour)
    out.lines.append(out.style(_t(page.get("title", ""), 300), "title"))
    evidence = page.get("evidence") or {}
    culprit = evidence.get("culprit")
    if culprit:
        head = (
            f"{_t(culprit.get('service'))}  {_t(culprit.get('operation'))}   "
            f"{culprit.get('duration_ms', 0):.0f} ms"
        )
        why = (culprit.get("contrast") or culprit.get("status") or "").split(";")[0]
        out.row("Suspect span", out.style(head, "culprit") + (f" ({_t(why)})" if why else ""))
        attrs = culprit.get("key_attributes") or {}
        if attrs.get("db.query.text"):
            out.row("", _t(attrs["db.query.text"]))
        shown = [
            f"{_t(k, 60)}={_t(str(v).lower() if isinstance(v, bool) else v, 80)}"
            for k, v in attrs.items()
            if k not in ("db.query.text", "db.system", "db.operation.name")
        ][:4]
        if shown:
            out.row("", "  ".join(shown))
        if culprit.get("exception"):
            out.row("", out.style(_t(culprit["exception"]), "dim"))
    logs = [i["log"] for i in evidence.get("items", []) if i.get("kind") == "log" and i.get("log")]
    if logs:
        first = logs[0]
        ids = []
        if first.get("trace_id"):
            ids.append(f"trace {_t(first['trace_id'])[:8]}…")
        if first.get("span_id"):
            ids.append(f"span {_t(first['span_id'])[:8]}…")
        where = f"   ({', '.join(ids)})" if ids else ""
        out.row("Log", _t(_trim_ids(first.get("line", ""))) + out.style(where, "dim"))
    deploy = _deploy(page)
    if deploy:
        out.row("Deploy", deploy)
    hypotheses = (page.get("analysis") or {}).get("hypotheses") or []
    if hypotheses:
        top = hypotheses[0]
        conf = top.get("confidence")
        tag = f"  ({conf:.0%} confidence)" if isinstance(conf, int | float) else ""
        out.row("Likely cause", _t(top.get("statement", ""), 600) + out.style(tag, "dim"))
    links = [
        link
        for link in evidence.get("links") or []
        # Explore links need a Grafana, and the recorded generatorURL names the recording
        # stack's Prometheus: neither opens anything here.
        if link.get("kind") not in ("grafana_trace", "grafana_logs", "generator")
    ]
    if links:
        out.row("Links", " · ".join(_link_name(link) for link in links))
        for link in links:
            out.row("", out.style(f"{_link_name(link)}: {_t(link['url'], 2000)}", "dim"))
    reasons = page.get("reasons") or []
    if page.get("degraded") and reasons:
        out.row("Degraded", "; ".join(_t(r) for r in reasons))
    if html_url:
        out.row("HTML page", out.style(html_url, "good"))
    return out.lines


def _link_name(link: dict[str, Any]) -> str:
    return {
        "tempo_trace": "Tempo trace",
        "dashboard": "dashboard",
        "runbook": "runbook",
        "generator": "alert expression",
    }.get(str(link.get("kind")), _t(link.get("title") or link.get("kind"), 40))


def _deploy(page: dict[str, Any]) -> str:
    """The deploy the analysis suspects (or the most recent one), in one line."""
    contexts = [d for d in (page.get("evidence") or {}).get("deploy") or [] if d.get("service")]
    verdicts = {v.get("service"): v for v in (page.get("analysis") or {}).get("deploys") or []}
    timed = [d for d in contexts if d.get("minutes_before_alert") is not None]
    if not timed:
        return ""
    suspect = [d for d in timed if verdicts.get(d["service"], {}).get("verdict") == "suspect"]
    d = (suspect or sorted(timed, key=lambda d: d["minutes_before_alert"]))[0]
    text = f"{_t(d['service'])} {_t(d.get('current_version') or '?')}"
    if d.get("current_commit"):
        text += f" (commit {_t(d['current_commit'])})"
    text += f", deployed {d['minutes_before_alert']:g} min before the alert started"
    if d.get("previous_version"):
        text += f"; previous {_t(d['previous_version'])}"
    verdict = verdicts.get(d["service"], {}).get("verdict")
    if verdict:
        text += f"  [{_t(verdict)}]"
    return text

"""`enricher pages` and `enricher pages show ID`: the pages a running service sent, in a
terminal.

Why through the HTTP API and not the data directory: the API is where read access is
enforced (`api.auth`), it works against a service on another host, and it never touches a
store a running service holds. Credentials come from `--token`/`--token-file` (bearer) or
`--user NAME:PASSWORD` (basic), as Alertmanager would send them.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from enricher.notify.page import NO_SOURCES
from enricher.sanitize import clean_text

TIMEOUT_S = 10.0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="enricher pages",
        description="List the pages a running enricher sent, or show one.",
    )
    p.add_argument("action", nargs="?", choices=("list", "show"), default="list")
    p.add_argument("id", nargs="?", help="the page id, for `show`")
    p.add_argument("--url", default="http://127.0.0.1:8080", help="the service's base URL")
    p.add_argument("--limit", type=int, default=20, help="pages to list (1-500)")
    p.add_argument("--before", type=int, help="list pages with ids below this one")
    p.add_argument("--json", action="store_true", help="print the API's JSON as it is")
    auth = p.add_mutually_exclusive_group()
    auth.add_argument("--token", help="bearer token (api.auth, or intake.auth when unset)")
    auth.add_argument("--token-file", type=Path, help="file holding the bearer token")
    auth.add_argument("--user", help="NAME:PASSWORD for basic auth")
    return p


def _authorization(args: argparse.Namespace) -> str | None:
    if args.token_file is not None:
        return "Bearer " + args.token_file.read_text(encoding="utf-8").strip()
    if args.token:
        return "Bearer " + args.token
    if args.user:
        return "Basic " + base64.b64encode(args.user.encode()).decode()
    return None


class CliError(Exception):
    pass


def _get(args: argparse.Namespace, path: str) -> Any:
    url = args.url.rstrip("/") + path
    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    authorization = _authorization(args)
    if authorization:
        req.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("message", exc.reason)
        except (ValueError, AttributeError):
            message = exc.reason
        hint = " (pass --token, --token-file or --user)" if exc.code == 401 else ""
        raise CliError(f"{url}: HTTP {exc.code}: {message}{hint}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CliError(f"{url}: cannot reach the service: {reason}") from None


def _t(value: Any, limit: int = 200) -> str:
    """Page content is alert content: no terminal escapes reach the screen."""
    text = clean_text(str(value), one_line=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _deliveries(doc: dict[str, Any]) -> str:
    return ", ".join(f"{d['notifier']} {d['state']}" for d in doc.get("deliveries", [])) or "-"


def _list(docs: list[dict[str, Any]]) -> list[str]:
    if not docs:
        return ["no pages yet"]
    out = [f"{'ID':>6}  {'STATUS':<8}  {'PAGED AT':<20}  {'DELIVERIES':<24}  TITLE"]
    for d in docs:
        status = d["status"] + ("*" if d.get("degraded") else "")
        paged = str(d.get("paged_at", ""))[:19].replace("T", " ")
        out.append(
            f"{d['id']:>6}  {status:<8}  {paged:<20}  {_t(_deliveries(d), 24):<24}  "
            f"{_t(d.get('title', ''), 100)}"
        )
    if any(d.get("degraded") for d in docs):
        out.append("* degraded: paged without part of its evidence (`show ID` says why)")
    return out


def _show(d: dict[str, Any]) -> list[str]:
    out = [_t(d.get("title", ""), 300), ""]
    status = d["status"]
    if d.get("resolved_by"):
        status += f" (resolved by page {d['resolved_by']})"
    rows: list[tuple[str, Any]] = [
        ("page", d["id"]),
        ("status", status),
        ("severity", d.get("severity") or "-"),
        ("received", d.get("received_at")),
        ("paged", d.get("paged_at")),
        ("deadline", d.get("deadline")),
        ("deliveries", _deliveries(d)),
    ]
    if d.get("degraded"):
        rows.append(("degraded", "; ".join(_t(r, 300) for r in d.get("reasons", []))))
    for key in ("runbook_url", "dashboard_url"):
        if d.get(key):
            rows.append((key.replace("_url", ""), d[key]))
    out += [f"{k:<11} {_t(v, 300)}" for k, v in rows]
    analysis = d.get("analysis") or {}
    hypotheses = analysis.get("hypotheses") or []
    if hypotheses:
        out += ["", "Hypotheses"]
        for n, h in enumerate(hypotheses[:5], 1):
            tag = f"{h.get('confidence', 0):.0%} {h.get('source', '')}"
            out.append(f"  {n}. [{tag}] {_t(h['statement'], 400)}")
    evidence = d.get("evidence")
    if evidence:
        culprit = evidence.get("culprit")
        if culprit:
            out += ["", "Suspect span"]
            out.append(
                f"  {_t(culprit.get('service'))} {_t(culprit.get('operation'))} "
                f"{culprit.get('duration_ms', 0):.0f} ms ({_t(culprit.get('status'))})"
            )
        logs = [i for i in evidence.get("items", []) if i.get("kind") == "log" and i.get("log")]
        if logs:
            out += ["", "Log lines"]
            out += [f"  {_t(i['log'].get('line', ''), 300)}" for i in logs[:3]]
        links = evidence.get("links") or []
        if links:
            out += ["", "Links"]
            out += [
                f"  {_t(link.get('title') or link.get('kind'), 40)}: {_t(link['url'], 2000)}"
                for link in links[:8]
            ]
    elif d.get("status") == "firing" and NO_SOURCES in (d.get("reasons") or [NO_SOURCES]):
        out += ["", NO_SOURCES[:1].upper() + NO_SOURCES[1:] + "."]
    out += ["", f"HTML page: {{url}}/pages/{d['id']}"]
    return out


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    try:
        if args.action == "show":
            if not args.id or not args.id.isdigit():
                print("enricher pages show: give a page id (a number)", file=sys.stderr)
                return 2
            doc = _get(args, f"/api/v1/pages/{args.id}")
            if args.json:
                print(json.dumps(doc, indent=2, ensure_ascii=False))
                return 0
            lines = _show(doc)
            lines[-1] = lines[-1].replace("{url}", args.url.rstrip("/"))
        else:
            query = {"limit": str(max(1, min(500, args.limit)))}
            if args.before is not None:
                query["before"] = str(args.before)
            doc = _get(args, "/api/v1/pages?" + urllib.parse.urlencode(query))
            if args.json:
                print(json.dumps(doc, indent=2, ensure_ascii=False))
                return 0
            lines = _list(doc.get("pages", []))
    except CliError as exc:
        print(f"enricher pages: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # an unreadable --token-file
        print(f"enricher pages: {exc}", file=sys.stderr)
        return 1
    try:
        print("\n".join(lines))
    except BrokenPipeError:  # `enricher pages | head`
        sys.stderr.close()
    return 0

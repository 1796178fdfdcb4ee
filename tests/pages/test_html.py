"""The HTML page: the checkout incident rendered (hypothesis, culprit bar, evidence anchors),
hostile content made inert and bounded, no external asset, resolved and evidence-less pages,
render cost; and the service routes with their headers and read access."""

from __future__ import annotations

import asyncio
import base64
from html.parser import HTMLParser
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st

from enricher.analysis.eval import GATHER_BUDGET_S, ReplayDeploys, ReplayServer, load_scenario
from enricher.analysis.hypotheses import analyse_bundle
from enricher.analysis.spans import SpanFacts
from enricher.bundle.build import safe_link
from enricher.bundle.model import EvidenceBundle, EvidenceItem, Link, Missing
from enricher.evidence import Gatherer
from enricher.intake.webhook import WebhookMessage
from enricher.notify.page import Page, build_page
from enricher.pages import CSP, page_from_record, render_index, render_page, render_waterfall
from enricher.pages.text import anchor
from enricher.pipeline.stages import GatherInput, GatherOutput
from enricher.sources.loki import LogLine
from enricher.store.base import DeliveryRecord, PageRecord
from tests.conftest import REPO, MakeClient, Recorder, checkout_bundle, post, webhook_body

SCENARIO = REPO / "tests" / "scenarios" / "checkout-slow-query-flag"

HOSTILE = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "'><svg onload=alert(1)>",
    "</style><script>alert(1)</script>",
    "\u202egnp.exe\u202c \x1b[31m\x00\x07\ud800",
]


class Tags(HTMLParser):
    """Every start tag with its attributes, every id, and the text, as a browser parses them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.ids: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if a.get("id"):
            self.ids.append(str(a["id"]))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(doc: str) -> Tags:
    p = Tags()
    p.feed(doc)
    p.close()
    return p


def checkout_page(page_id: int = 7, **body_changes: Any) -> Page:
    msg = WebhookMessage.model_validate(webhook_body(**body_changes))
    bundle = checkout_bundle()
    return build_page(
        page_id,
        msg,
        received_at=1_900_000_000.0,
        deadline=1_900_000_030.0,
        reasons=[],
        evidence=bundle,
        analysis=analyse_bundle(bundle),
    )


async def scenario_bundle() -> EvidenceBundle:
    """The checkout incident as the real gatherer builds it from its recorded backends:
    culprit span, contrast, flag, log lines and the deploy history of every service."""
    sc = load_scenario(SCENARIO)
    async with ReplayServer() as server:
        server.load(sc.exchanges or [])
        g = Gatherer(server.sources_config(), deploys=ReplayDeploys(server))
        await g.start()
        try:
            return await g.gather(sc.message, sc.spec.received_at, GATHER_BUDGET_S)
        finally:
            await g.close()


def hostile_page() -> Page:
    """Every field a sender controls carries markup, control characters or 100 KB."""
    huge = "y" * 100_000
    labels = {**webhook_body()["commonLabels"]}
    for n, h in enumerate(HOSTILE):
        labels[f"evil{n}"] = h
    labels["service"] = HOSTILE[1]
    labels["huge"] = huge
    labels[HOSTILE[0]] = "key"
    annotations = {
        "summary": HOSTILE[0] + huge,
        "description": HOSTILE[1],
        "runbook_url": "javascript:alert(1)",
        "dashboard_url": 'https://ok.example/"><script>alert(1)</script>',
    }
    page = checkout_page(
        commonLabels=labels,
        commonAnnotations=annotations,
        externalURL="data:text/html,<script>alert(1)</script>",
        alert={"labels": labels, "generatorURL": "javascript:alert(2)"},
    )
    b = page.evidence
    assert b is not None
    for n, h in enumerate([*HOSTILE, huge]):
        b.items.append(
            EvidenceItem(
                id=f'log:{h[:40]}"{n}',
                kind="log",
                source="loki",
                priority=2,
                summary=h,
                query=h,
                log=LogLine(ts_ns=1_900_000_000_000_000_000 + n, line=h, service=h[:50]),
            )
        )
    b.links += [
        Link(kind="runbook", title=HOSTILE[0], url="javascript:alert(3)", from_alert=True),
        Link(kind="dashboard", title="d", url=" javascript:alert(4)", from_alert=True),
        Link(kind="grafana_trace", title=HOSTILE[1], url="https://grafana.example/x?a=1&b=2"),
    ]
    b.missing.append(Missing(what=HOSTILE[0], source="loki", reason=huge, query=HOSTILE[1]))
    assert page.analysis is not None
    page.analysis.hypotheses[0].statement = HOSTILE[0] + huge
    page.analysis.hypotheses[0].evidence_ids.append(HOSTILE[1])
    page.reasons = [HOSTILE[0], huge]
    page.degraded = True
    return page


def test_the_checkout_page_shows_the_cause_the_culprit_bar_and_anchored_evidence(
    real_fixtures: Any,
) -> None:
    page = checkout_page()
    doc = render_page(page)
    p = parse(doc)
    text = "".join(p.text)
    a = page.analysis
    assert a is not None and page.evidence is not None
    for h in a.hypotheses:
        assert h.statement in text  # every hypothesis, not only the top one
    top = next(attrs for tag, attrs in p.tags if attrs.get("id") == "hypothesis")
    assert top is not None
    assert "db-primary" in text and "SELECT orders" in text and "1210 ms" in text
    culprits = [(t, at) for t, at in p.tags if at.get("data-culprit") == "true"]
    assert len(culprits) == 1
    tag, attrs = culprits[0]
    assert tag == "rect" and "culprit" in str(attrs["class"]).split()
    # one bar per span of the failing trace, durations in ms
    bars = [at for t, at in p.tags if t == "rect" and "bar" in str(at.get("class", "")).split()]
    assert len(bars) == 4
    assert "1421 ms" in text and "15.4 ms" in text
    errors = [at for at in bars if "err" in str(at["class"]).split()]
    assert len(errors) == 2  # the culprit and the root it fails
    # failing vs healthy per operation: 1210 ms against 16 ms
    assert "16.0 ms" in text
    # every in-page link lands on an element that exists, and ids are unique
    assert len(p.ids) == len(set(p.ids))
    targets = [
        str(at["href"])[1:] for t, at in p.tags if t == "a" and str(at.get("href", "#"))[:1] == "#"
    ]
    assert targets and set(targets) <= set(p.ids)
    for item in page.evidence.items:
        assert anchor(item.id) in p.ids
    for h in a.hypotheses:
        for i in h.evidence_ids:
            assert f'href="#{anchor(i)}"' in doc
    assert "feature_flag.new_checkout=true" in text
    assert "Every configured source answered" in text


def test_hostile_content_is_escaped_dropped_and_bounded(real_fixtures: Any) -> None:
    doc = render_page(hostile_page())
    assert len(doc.encode()) < 200_000, len(doc)
    p = parse(doc)
    allowed = {
        "html", "head", "meta", "title", "style", "body", "main", "header", "section", "div",
        "footer", "nav", "h1", "h2", "h3", "p", "span", "b", "br", "code", "pre", "time", "a",
        "ul", "ol", "li", "dl", "dt", "dd", "table", "tr", "th", "td", "svg", "line", "text",
        "tspan", "rect", "circle",
    }  # fmt: skip
    assert {t for t, _ in p.tags} <= allowed
    for tag, attrs in p.tags:
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name)
            assert name not in ("src", "srcdoc", "style", "formaction"), (tag, name)
            if name == "href":
                assert value is not None
                assert value[:1] in ("#", "/") or safe_link(value), value
    for bad in ("javascript:", "\u202e", "\u202c", "\x1b", "\x00", "\x07", "\ud800"):
        assert bad not in doc, repr(bad)
    text = "".join(p.text)
    assert "<script>alert(1)</script>" in text  # shown as text, for the reader to see
    assert doc.count("<script") == 0 and doc.count("<img") == 0
    # the one legitimate link from the bundle survives, with its & escaped
    assert 'href="https://grafana.example/x?a=1&amp;b=2"' in doc
    # a hostile evidence id still gets a valid, unique anchor
    assert len(p.ids) == len(set(p.ids))
    assert all(" " not in i and '"' not in i for i in p.ids)


def test_no_asset_is_loaded_from_anywhere(real_fixtures: Any) -> None:
    doc = render_page(checkout_page())
    p = parse(doc)
    for tag, attrs in p.tags:
        assert tag not in ("script", "link", "img", "iframe", "object", "embed", "source")
        assert "src" not in attrs
    style = doc[doc.index("<style>") : doc.index("</style>")]
    for bad in ("url(", "@import", "@font-face", "http:", "https:"):
        assert bad not in style
    external = [str(a["href"]) for t, a in p.tags if t == "a" and "//" in str(a.get("href"))]
    # only user-facing links: the runbook and dashboard from the alert, the Alertmanager,
    # and the alert's generator URL
    assert external and all(safe_link(u) for u in external)


async def test_the_recorded_checkout_page_has_its_deploys_logs_and_links() -> None:
    bundle = await scenario_bundle()
    msg = WebhookMessage.model_validate_json((SCENARIO / "alert.json").read_bytes())
    page = build_page(
        1,
        msg,
        received_at=1_900_259_240.0,
        deadline=1_900_259_270.0,
        reasons=[],
        evidence=bundle,
        analysis=analyse_bundle(bundle),
    )
    doc = render_page(page)
    text = "".join(parse(doc).text)
    assert "checkout 2.4.1 -> 7a3f9c2, deployed 4 min before the alert" in text
    assert "(previously 2.4.0 -> 1b9d4e0)" in text
    # the timeline: the decoy deploy, then the culprit's caller, then the alert
    order = [text.index(x) for x in ("T\u22128.3 min", "T\u22124.0 min", "T0alert started")]
    assert order == sorted(order), order
    assert "search-api" in text and "ruled out" in text and "suspect" in text
    assert "feature_flag.new_checkout=true only in failing traces (3/3 failing, 0/3 healthy)" in (
        text
    )
    # key log lines with their time and service
    assert "2030-03-20 17:47:04.948Z" in text and "WARN slow query: seq scan on orders" in text
    # links: Grafana trace and logs from the bundle, runbook and dashboard from the alert
    links = doc[doc.index('<section id="links">') : doc.index('<section id="evidence">')]
    for title in ("in Grafana", "Logs of the trace", "Runbook", "Dashboard"):
        assert title in links, title
    assert links.index("in Grafana") < links.index("Runbook")


@pytest.mark.parametrize("late", [False, True])
def test_a_resolved_page_says_so_and_when(real_fixtures: Any, late: bool) -> None:
    if late:  # a firing page that a later resolution closed
        page = checkout_page(3)
        rec = PageRecord(
            id=3,
            group_key=page.group_key,
            status="resolved",
            paged_at=1_900_000_001.0,
            degraded=False,
            doc=page.model_dump(mode="json"),
            resolved_at=1_900_000_600.0,
            resolved_by=4,
        )
        doc = render_page(page_from_record(rec))
        assert "Resolved at <time>2030-03-17 17:56:40Z</time>" in doc
        assert 'href="/pages/4"' in doc
        assert "Likely cause" in doc  # the cause stays readable after the fact
    else:  # the resolution itself
        page = checkout_page(
            4, status="resolved", alert={"status": "resolved", "endsAt": "2026-11-27T16:30:00Z"}
        )
        page.evidence, page.analysis, page.resolves = None, None, 3
        doc = render_page(page)
        assert "Resolved at <time>2026-11-27 16:30:00Z</time>" in doc
        assert 'this resolves <a href="/pages/3">page 3</a>' in doc
        assert "evidence is gathered for firing alerts only" in doc
    assert "<title>[RESOLVED]" in doc and 'class="badge st-resolved"' in doc


def test_a_page_without_evidence_or_analysis_says_why(real_fixtures: Any) -> None:
    page = checkout_page()
    page.evidence, page.analysis = None, None
    doc = render_page(page)
    assert 'id="no-evidence"' in doc and "no evidence source" in doc
    assert "No root-cause analysis ran" in doc
    page.reasons = ["gather: timed out after 8 s"]
    page.degraded = True
    doc = render_page(page)
    assert "did not finish in time or failed: gather: timed out after 8 s" in doc
    assert 'id="degraded"' in doc


def _span(n: int, **kw: Any) -> SpanFacts:
    base: dict[str, Any] = {
        "trace_id": "t" * 32,
        "span_id": f"{n:016x}",
        "name": f"op-{n}",
        "service": "svc",
        "kind": "SPAN_KIND_INTERNAL",
        "depth": n % 5,
        "start_ns": 1_000_000_000 + n * 1_000_000,
        "duration_ms": 1.0,
        "self_ms": 1.0,
        "status": "unset",
    }
    return SpanFacts(**{**base, **kw})


def test_a_huge_trace_draws_at_most_sixty_bars_and_keeps_the_culprit() -> None:
    spans = [_span(n) for n in range(5000)]
    spans[4321] = _span(4321, status="error", duration_ms=900.0)
    svg = render_waterfall(spans, culprit_span_id=spans[4321].span_id, span_count=20_000)
    p = parse(svg)
    bars = [a for t, a in p.tags if t == "rect" and "bar" in str(a.get("class", "")).split()]
    assert len(bars) == 60
    assert sum(a.get("data-culprit") == "true" for a in bars) == 1
    assert "19940 more spans not drawn" in svg
    assert len(svg) < 30_000


@given(st.text(max_size=200), st.text(max_size=200))
def test_anchors_are_valid_ids_and_never_collide(a: str, b: str) -> None:
    x, y = anchor(a), anchor(b)
    assert all(c.isascii() and (c.isalnum() or c in ":._-") for c in x)
    if a != b:
        assert x != y


def test_the_index_lists_pages_and_pages_back(real_fixtures: Any) -> None:
    page = checkout_page(9)
    rec = PageRecord(
        id=9,
        group_key=page.group_key,
        status="firing",
        paged_at=1_900_000_001.0,
        degraded=True,
        doc=page.model_dump(mode="json"),
        deliveries=[DeliveryRecord(page_id=9, notifier="slack", state="sent")],
    )
    bad = rec.model_copy(update={"id": 8, "doc": "not json"})
    doc = render_index([rec, bad], older=8)
    assert 'href="/pages/9"' in doc and 'href="/pages/8"' in doc
    assert 'href="/pages?before=8"' in doc
    assert "CheckoutHighErrorRate" in doc and "slack sent" in doc and "degraded" in doc


# --- the service ---------------------------------------------------------------------------


class _Gatherer:
    async def gather(self, inp: GatherInput) -> GatherOutput:
        return GatherOutput(bundle=checkout_bundle())


async def _paged(client: TestClient, headers: dict[str, str], n: int = 1) -> list[int]:
    end = asyncio.get_running_loop().time() + 10
    while True:
        resp = await client.get("/api/v1/pages", headers=headers)
        assert resp.status == 200
        pages = (await resp.json())["pages"]
        if len(pages) >= n:
            return [p["id"] for p in pages]
        assert asyncio.get_running_loop().time() < end, pages
        await asyncio.sleep(0.05)


def _assert_html(resp: Any) -> None:
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    assert resp.headers["Content-Security-Policy"] == CSP
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert resp.headers["Cache-Control"] == "no-store"


async def test_pages_need_the_intake_credentials_when_it_has_some(
    make_client: MakeClient, real_fixtures: Any
) -> None:
    good = {"Authorization": "Bearer s3cret"}
    client = await make_client(
        {"intake": {"auth": {"bearer_token": "s3cret"}}},
        notifiers=[Recorder()],
        gatherer=_Gatherer(),
    )
    assert (await post(client, webhook_body(), headers=good)).status == 200
    [pid] = await _paged(client, good)
    paths = [f"/pages/{pid}", "/pages", "/api/v1/pages", f"/api/v1/pages/{pid}"]
    for path in paths:
        for headers in ({}, {"Authorization": "Bearer s3creT"}, {"Authorization": "Basic eDp5"}):
            resp = await client.get(path, headers=headers)
            assert resp.status == 401, (path, headers)
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            assert "db-primary" not in await resp.text()
            if path.startswith("/pages"):
                _assert_html(resp)
        resp = await client.get(path, headers=good)
        assert resp.status == 200, path
    resp = await client.get(f"/pages/{pid}", headers=good)
    _assert_html(resp)
    doc = await resp.text()
    assert "db-primary" in doc and 'data-culprit="true"' in doc
    assert "recorder" in doc  # its delivery
    for path, status in (("/pages/nope", 400), ("/pages/999999", 404), ("/pages?before=x", 400)):
        resp = await client.get(path, headers=good)
        assert resp.status == status, path
        _assert_html(resp)
    for path in ("/healthz", "/metrics"):  # untouched: no credentials needed
        assert (await client.get(path)).status == 200, path


async def test_api_auth_overrides_the_intake_credentials(
    make_client: MakeClient, real_fixtures: Any
) -> None:
    intake = {"Authorization": "Bearer am-token"}
    reader = {"Authorization": "Basic " + base64.b64encode(b"oncall:pw").decode()}
    client = await make_client(
        {
            "intake": {"auth": {"bearer_token": "am-token"}},
            "api": {"auth": {"basic": {"username": "oncall", "password": "pw"}}},
        },
        notifiers=[Recorder()],
        gatherer=_Gatherer(),
    )
    assert (await post(client, webhook_body(), headers=intake)).status == 200
    [pid] = await _paged(client, reader)
    for path in (f"/pages/{pid}", "/pages", "/api/v1/pages", f"/api/v1/pages/{pid}"):
        resp = await client.get(path, headers=intake)
        assert resp.status == 401, path
        assert resp.headers["WWW-Authenticate"].startswith("Basic")
        assert (await client.get(path, headers=reader)).status == 200, path


async def test_the_index_pages_back_with_before(
    make_client: MakeClient, real_fixtures: Any
) -> None:
    client = await make_client(notifiers=[Recorder()], gatherer=_Gatherer())
    for n in range(3):
        body = webhook_body(groupKey=f"g{n}", alert={"startsAt": f"2026-11-27T1{n}:00:00Z"})
        assert (await post(client, body)).status == 200
    ids = await _paged(client, {}, 3)
    resp = await client.get("/pages?limit=2")
    _assert_html(resp)
    doc = await resp.text()
    assert f'href="/pages/{ids[0]}"' in doc and f'href="/pages/{ids[1]}"' in doc
    assert f'href="/pages/{ids[2]}"' not in doc
    assert f'href="/pages?before={ids[1]}"' in doc
    older = await (await client.get(f"/pages?before={ids[1]}")).text()
    assert f'href="/pages/{ids[2]}"' in older and "?before=" not in older

"""Shared fixtures: in-process services on a real socket, and the recorded fixtures."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from enricher.analysis.spans import analyse_traces
from enricher.bundle.build import GatheredEvidence, build_bundle
from enricher.bundle.model import AlertInfo, EvidenceBundle
from enricher.config import load_config
from enricher.notify.base import SendContext
from enricher.notify.page import Page
from enricher.server import SERVICE, Service, create_app
from enricher.sources.tempo import parse_trace

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
REAL = SHARED / "fixtures" / "real" / "checkout-slow-query"


@pytest.fixture
def real_fixtures() -> Path:
    if not REAL.is_dir():
        pytest.skip(f"shared fixtures not found at {REAL}")
    return REAL


def webhook_body(**changes: Any) -> dict[str, Any]:
    """The recorded single-alert notification, with top-level or first-alert changes."""
    body = json.loads((REAL / "alertmanager-webhook-1.json").read_text())
    alert_changes = changes.pop("alert", {})
    body.update(changes)
    body["alerts"][0].update(alert_changes)
    return body


def checkout_bundle() -> EvidenceBundle:
    """The recorded checkout trace against a healthy copy of it without the slow query."""
    doc = json.loads((REAL / "tempo-trace-v2.json").read_text())
    failing = parse_trace("b22fc2a2caac4451e1a7afb90ea05a3b", doc)
    assert failing is not None
    healthy_spans = []
    for s in failing.spans:
        s = s.model_copy(deep=True)
        s.status, s.status_message, s.events = "ok", "", []
        if s.name == "SELECT orders":
            s.end_ns = s.start_ns + 16_000_000
        if s.parent_id is None:
            s.end_ns = s.start_ns + 60_000_000
        healthy_spans.append(s)
    healthy = failing.model_copy(update={"trace_id": "1" * 32, "spans": healthy_spans}, deep=True)
    findings = analyse_traces([failing], [healthy])
    now = datetime.now(UTC)
    ev = GatheredEvidence(
        alert=AlertInfo(alertname="CheckoutHighErrorRate", status="firing", starts_at=now),
        service="checkout",
        window_start=now,
        window_end=now,
        findings=findings,
    )
    return build_bundle(ev, 6000)


class Recorder:
    """A notifier that keeps what it was given; the in-process stand-in for a pager."""

    name = "recorder"

    def __init__(self) -> None:
        self.pages: list[Page] = []
        self.event = asyncio.Event()

    edits = False

    async def send(self, page: Page, ctx: SendContext) -> None:
        self.pages.append(page)
        self.event.set()

    async def close(self) -> None:
        return None


MakeClient = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def make_client(tmp_path: Path) -> AsyncIterator[MakeClient]:
    clients: list[TestClient] = []

    async def make(overrides: dict[str, Any] | None = None, **service_kwargs: Any) -> TestClient:
        over = {"data_dir": str(tmp_path / f"data{len(clients)}"), **(overrides or {})}
        config = load_config(environ={}, overrides=over)
        app = create_app(config, **service_kwargs)
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for c in clients:
        await c.close()


def service_of(client: TestClient) -> Service:
    return client.server.app[SERVICE]


async def post(client: TestClient, body: Any, **kw: Any) -> Any:
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
    return await client.post("/api/v1/alerts", data=data, headers=headers, **kw)


async def wait_pages(client: TestClient, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        resp = await client.get("/api/v1/pages?limit=500")
        pages = (await resp.json())["pages"]
        done = [p for p in pages if all(d["state"] != "pending" for d in p["deliveries"])]
        if len(done) >= n:
            return pages
        if loop.time() > end:
            raise AssertionError(f"expected {n} delivered pages, have {len(done)}: {pages!r}")
        await asyncio.sleep(0.05)

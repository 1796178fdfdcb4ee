"""End to end on real components: Prometheus evaluates rules, Alertmanager delivers its
webhook (with a bearer token, as `http_config` sends it), the enricher pages."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.realstack import (
    REAL_STACK,
    Alertmanager,
    Enricher,
    Prometheus,
    free_port,
    running,
    wait_until,
)

pytestmark = REAL_STACK

TOKEN = "e2e-token-0123456789"
SHORT_LIVED_S = 8


def rules(resolve_at: float) -> str:
    labels = "        labels: {severity: critical, team: payments, service: checkout}\n"
    return (
        "groups:\n"
        "  - name: e2e\n"
        "    rules:\n"
        "      - alert: EnricherE2EAlwaysFiring\n"
        "        expr: vector(1) > 0\n" + labels + "        annotations:\n"
        "          summary: always firing\n"
        "          runbook_url: https://runbooks.example.com/payments/e2e\n"
        "      - alert: EnricherE2EShortLived\n"
        f"        expr: vector(time()) < {resolve_at:.0f}\n"
        + labels
        + "        annotations: {summary: fires for a few seconds then resolves}\n"
    )


class Stack:
    def __init__(self, enricher: Enricher, am: Alertmanager, prom: Prometheus) -> None:
        self.enricher, self.am, self.prom = enricher, am, prom

    def pages_named(self, name: str) -> list[dict]:
        return [p for p in self.enricher.pages() if p["labels"].get("alertname") == name]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root: Path = tmp_path_factory.mktemp("e2e")
    port = free_port()
    enricher = Enricher(
        root / "enricher", port=port, config={"intake": {"auth": {"bearer_token": TOKEN}}}
    )
    am = Alertmanager(
        root / "am", webhook_url=f"http://127.0.0.1:{port}/api/v1/alerts", bearer_token=TOKEN
    )
    with running(enricher, am):
        prom = Prometheus(
            root / "prom", rules_yaml=rules(time.time() + SHORT_LIVED_S), alertmanager_url=am.url
        )
        with prom:
            yield Stack(enricher, am, prom)
    log = enricher.log()
    assert "Traceback" not in log, log[-3000:]


def test_real_alertmanager_delivers_a_page(stack: Stack):
    pages = wait_until(
        lambda: stack.pages_named("EnricherE2EAlwaysFiring"), 60, 0.5, "a page from Alertmanager"
    )
    page = pages[0]
    assert page["status"] == "firing"
    assert page["labels"]["team"] == "payments"
    assert page["runbook_url"] == "https://runbooks.example.com/payments/e2e"
    assert "g0.expr=vector%281%29+%3E+0" in page["alerts"][0]["generator_url"]
    assert page["deliveries"] == [
        {
            "notifier": "log",
            "state": "sent",
            "attempts": 1,
            "last_error": None,
            "delivered_at": page["deliveries"][0]["delivered_at"],
            "next_try": None,
            "receipt": None,
            "kind": "page",
        }
    ]
    assert page["paged_at"] <= page["deadline"]


def test_real_alertmanager_resolution_marks_the_page_resolved(stack: Stack):
    def resolved() -> list[dict]:
        pages = stack.pages_named("EnricherE2EShortLived")
        return [p for p in pages if p["status"] == "resolved" and p.get("resolves")]

    [resolution] = wait_until(resolved, 60, 0.5, "a resolved notification")
    original = next(p for p in stack.enricher.pages() if p["id"] == resolution["resolves"])
    assert original["status"] == "resolved"
    assert original["resolved_by"] == resolution["id"]
    # Alertmanager may repeat itself; the enricher must not page twice for one firing.
    firing = [p for p in stack.pages_named("EnricherE2EShortLived") if p["resolves"] is None]
    assert len(firing) == 1

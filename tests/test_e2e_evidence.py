"""The whole evidence chain on real components: a service's exporter -> real Prometheus (exemplar
storage) -> rule fires -> real Alertmanager -> enricher -> exemplars from Prometheus -> trace
from Tempo -> logs from Loki -> deploy context -> the stored page and its bundle.

Tempo, Loki and Grafana are the doubles held to the recorded answers by the contract tests.
They are loaded with the incident recorded on a real stack, moved to the present so that it
falls inside the alert's window.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.checkout_stack import FAILING, RULES, checkout_backends, post_deploy
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


@pytest.fixture(scope="module")
def incident(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Enricher]:
    root: Path = tmp_path_factory.mktemp("evidence-e2e")
    with checkout_backends() as backends:
        port = free_port()
        enricher = Enricher(root / "enricher", port=port, config={"sources": backends.sources()})
        am = Alertmanager(root / "am", webhook_url=f"http://127.0.0.1:{port}/api/v1/alerts")
        prom = Prometheus(
            root / "prom",
            rules_yaml=RULES,
            scrape_targets=[f"127.0.0.1:{backends.exporter_port}"],
            alertmanager_url=am.url,
        )
        with prom:
            # The enricher must know the real Prometheus, which exists only now.
            enricher.config_path.write_text(  # type: ignore[union-attr]
                enricher.config_path.read_text()  # type: ignore[union-attr]
                + f"  prometheus:\n    url: {prom.url}\n"
            )
            with running(enricher, am):
                post_deploy(enricher)
                yield enricher
            assert "Traceback" not in enricher.log(), enricher.log()[-3000:]


def _page(enricher: Enricher) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        for p in enricher.pages():
            if p["labels"].get("alertname") == "CheckoutHighErrorRate":
                return p
        return None

    summary = wait_until(found, 90, 0.5, "the CheckoutHighErrorRate page")
    return dict(enricher.get(f"/api/v1/pages/{summary['id']}"))


def test_page_names_the_culprit_span_log_line_and_deploy(incident: Enricher) -> None:
    page = _page(incident)
    bundle = page["evidence"]
    assert bundle is not None, page
    culprit = bundle["culprit"]
    assert culprit["service"] == "db-primary", bundle
    assert culprit["operation"].startswith("SELECT orders")
    assert culprit["trace_id"] == FAILING
    assert 1100 <= culprit["duration_ms"] <= 1300
    assert culprit["key_attributes"]["db.rows_affected"] == 1110482
    assert culprit["key_attributes"]["feature_flag.new_checkout"] is True
    assert culprit["contrast"].startswith("error in 1/1 failing traces, 0/2 healthy")

    lines = [i["log"]["line"] for i in bundle["items"] if i.get("log")]
    assert any("slow query: seq scan on orders (1.1M rows), index not used" in ln for ln in lines)

    deploy = next(d for d in bundle["deploy"] if d["service"] == "checkout")
    assert (deploy["current_version"], deploy["current_commit"]) == ("2.4.1", "7a3f9c2")
    assert deploy["deploy_time_source"] == "ci_event"
    assert 3 <= deploy["minutes_before_alert"] <= 6

    kinds = {link["kind"]: link["url"] for link in bundle["links"]}
    assert FAILING in kinds["tempo_trace"] and FAILING in kinds["grafana_trace"]
    assert "grafana_logs" in kinds
    assert kinds["runbook"] == "https://runbooks.example.com/payments/checkout-5xx"
    assert page["paged_at"] <= page["deadline"]
    assert page["degraded"] is False, page["reasons"]


def test_the_log_pager_line_carries_the_evidence(incident: Enricher) -> None:
    page = _page(incident)
    lines = [json.loads(x) for x in incident.log().splitlines() if '"enricher.page"' in x]
    line = next(x for x in lines if x.get("page_id") == page["id"])
    assert line["suspect"].startswith("db-primary SELECT orders 1210 ms (error)")
    assert "slow query: seq scan on orders" in line["log"]
    assert "2.4.1" in line["deploy"] and "7a3f9c2" in line["deploy"]
    assert "b22fc2a2caac4451e1a7afb90ea05a3b" in line["links"]["tempo_trace"]


def test_the_page_names_the_cause_the_flag_and_the_deploy_to_roll_back(incident: Enricher) -> None:
    """The root-cause stage on the real chain: the top hypothesis is the slow query, cites
    the evidence it rests on, and blames the deploy of the service that issues it."""
    page = _page(incident)
    analysis = page["analysis"]
    top = analysis["hypotheses"][0]
    assert (top["service"], top["operation"]) == ("db-primary", "SELECT orders"), top
    assert top["source"] == "deterministic" and top["kind"] == "cause"
    ids = {i["id"] for i in page["evidence"]["items"]}
    assert top["evidence_ids"] and set(top["evidence_ids"]) <= ids
    # (the healthy traces of this recording carry the flag too, so it is no signal here)
    assert "only with feature_flag" not in top["statement"]
    assert "seq scan on orders" in top["statement"]
    assert "checkout 2.4.1 (7a3f9c2)" in top["statement"]
    assert any("roll back 7a3f9c2" in a for a in top["actions"])
    verdicts = {v["service"]: v["verdict"] for v in analysis["deploys"]}
    assert verdicts["checkout"] == "suspect"
    assert "suspect" not in {v for s, v in verdicts.items() if s != "checkout"}

"""`enricher replay`: a stored page or bundle goes through analysis and delivery again."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from enricher.bundle.model import AlertInfo, BudgetInfo, CulpritSummary, EvidenceBundle, Link
from enricher.pipeline.stages import GatherInput, GatherOutput
from tests.conftest import post, wait_pages, webhook_body
from tests.realstack import REPO


def _bundle() -> EvidenceBundle:
    return EvidenceBundle(
        alert=AlertInfo(
            alertname="CheckoutHighErrorRate",
            status="firing",
            service="checkout",
            severity="critical",
            starts_at=datetime(2026, 11, 27, 16, 20, 37, tzinfo=UTC),
            fingerprint="ff22eb4ea0ff7a6f",
            labels={"team": "payments", "service": "checkout"},
            summary="Checkout 5xx rate is above 5%",
            group_key='{}:{alertname="X"}',
        ),
        culprit=CulpritSummary(
            item_id="span:db-primary:SELECT orders",
            trace_id="b22fc2a2caac4451e1a7afb90ea05a3b",
            service="db-primary",
            operation="SELECT orders",
            duration_ms=1210.0,
            self_ms=1210.0,
            status="error",
            reason="deepest error span",
        ),
        links=[
            Link(
                kind="runbook",
                title="Runbook",
                url="https://runbooks.example.com/x",
                from_alert=True,
            )
        ],
        budget=BudgetInfo(token_budget=6000),
    )


class FixedEvidence:
    async def gather(self, inp: GatherInput) -> GatherOutput:
        return GatherOutput(bundle=_bundle())


def _replay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "enricher", "replay", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


async def test_a_stored_page_replays_to_the_same_evidence(make_client, tmp_path: Path):
    client = await make_client(gatherer=FixedEvidence())
    await post(client, webhook_body())
    [summary] = await wait_pages(client, 1)
    stored = await (await client.get(f"/api/v1/pages/{summary['id']}")).json()
    f = tmp_path / "page.json"
    f.write_text(json.dumps(stored))

    res = _replay(str(f))
    assert res.returncode == 0, res.stderr
    page = json.loads(res.stdout)
    assert page["id"] == stored["id"]
    assert page["evidence"] == stored["evidence"]
    assert page["labels"] == stored["labels"]
    assert page["title"] == stored["title"]
    # Delivered through the default notifier: the log line names the page.
    line = next(json.loads(x) for x in res.stderr.splitlines() if '"enricher.page"' in x)
    assert line["msg"] == stored["title"] and line["page_id"] == stored["id"]


def test_a_bare_bundle_replays_with_its_alert_rebuilt(tmp_path: Path):
    f = tmp_path / "bundle.json"
    f.write_text(_bundle().model_dump_json())
    res = _replay(str(f), "--no-deliver")
    assert res.returncode == 0, res.stderr
    page = json.loads(res.stdout)
    assert page["title"] == "[CRITICAL] CheckoutHighErrorRate - Checkout 5xx rate is above 5%"
    assert page["runbook_url"] == "https://runbooks.example.com/x"
    assert page["evidence"]["culprit"]["operation"] == "SELECT orders"
    assert '"enricher.page"' not in res.stderr


def test_a_file_that_is_neither_is_refused_clearly(tmp_path: Path):
    f = tmp_path / "x.json"
    f.write_text('{"alert": {"alertname": 3}}')
    res = _replay(str(f))
    assert res.returncode == 2
    assert "not a page or bundle" in res.stderr
    missing = _replay(str(tmp_path / "nope.json"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr

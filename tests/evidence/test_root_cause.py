"""The deterministic root-cause analyzer on bundles the real gatherer built from the doubles.

Each incident is generated (tests/doubles/scenario.py), so these hold the analyzer to its
general rules, not to one recorded trace.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from enricher.analysis.hypotheses import analyse_bundle
from enricher.analysis.model import Analysis
from enricher.analysis.stage import RootCauseAnalyser
from enricher.bundle.model import EvidenceBundle
from enricher.intake.webhook import WebhookMessage
from enricher.pipeline.stages import AnalyseInput
from tests.doubles.scenario import Incident, TwoRegressions
from tests.evidence.conftest import Doubles, GathererFactory


async def _analysed(
    make_gatherer: GathererFactory, doubles: Doubles, inc: Incident
) -> tuple[EvidenceBundle, Analysis]:
    doubles.load(inc)
    g = await make_gatherer()
    msg = WebhookMessage.model_validate(inc.alert_message())
    bundle = await g.gather(msg, datetime.fromtimestamp(inc.end, UTC), 5)
    return bundle, analyse_bundle(bundle)


def _cited_ids_exist(bundle: EvidenceBundle, analysis: Analysis) -> None:
    ids = {i.id for i in bundle.items}
    for h in analysis.hypotheses:
        assert set(h.evidence_ids) <= ids, (h.statement, set(h.evidence_ids) - ids)
        for s in h.signals:
            assert set(s.evidence_ids) <= ids, (s.name, set(s.evidence_ids) - ids)


async def test_error_in_a_dependency_is_the_top_hypothesis_and_the_caller_deploy_is_ruled_out(
    make_gatherer: GathererFactory, doubles: Doubles
) -> None:
    bundle, a = await _analysed(make_gatherer, doubles, Incident())
    top = a.hypotheses[0]
    assert (top.service, top.operation, top.kind) == ("ledger", "INSERT entries", "cause")
    assert not a.unknown and top.confidence >= 0.7
    names = {s.name for s in top.signals}
    assert {"recurrence", "error_contrast", "exception", "log_template", "feature_flag"} <= names
    assert "DeadlockDetected" in top.statement and "deadlock detected" in top.statement
    assert "batch_ledger" in " ".join(top.actions)
    _cited_ids_exist(bundle, a)
    # payments deployed 6 min before, but failing and healthy traces both run it and nothing
    # of its own stands out: named, never blamed.
    v = {d.service: d for d in a.deploys}
    assert v["payments"].verdict == "ruled_out", v["payments"]
    assert "both run 5.2.0" in v["payments"].reason
    assert "roll back" not in " ".join(top.actions)
    assert a.deterministic_ms < 50


async def test_two_independent_regressions_are_two_hypotheses(
    make_gatherer: GathererFactory, doubles: Doubles
) -> None:
    inc = TwoRegressions(failing=8, healthy=8)
    bundle, a = await _analysed(make_gatherer, doubles, inc)
    ops = [(h.service, h.operation) for h in a.hypotheses if h.kind == "cause"]
    assert ("ledger", "INSERT entries") in ops and ("fraud", "POST /fraud/score") in ops, ops
    assert len(bundle.culprits) >= 2
    assert {c.service for c in bundle.culprits[:2]} == {"ledger", "fraud"}
    _cited_ids_exist(bundle, a)


async def test_nothing_standing_out_is_unknown_with_the_reason(
    make_gatherer: GathererFactory, doubles: Doubles
) -> None:
    # The "culprit" behaves exactly as in healthy requests: no error, same latency, no flag.
    inc = Incident(
        mode="latency",
        culprit_ms=12.0,
        culprit_attrs={},
        background=None,
        culprit_log="inserted ledger entries",
    )
    bundle, a = await _analysed(make_gatherer, doubles, inc)
    assert a.unknown and a.hypotheses[0].kind == "unknown", a.hypotheses[0]
    assert "healthy traces" in a.unknown_reason
    assert all(h.confidence <= 0.25 for h in a.hypotheses[1:])
    assert bundle.culprits == [] and bundle.no_standout
    assert bundle.culprit is None or bundle.culprit.confidence == "low"
    _cited_ids_exist(bundle, a)


async def test_background_errors_in_every_request_are_not_the_cause(
    make_gatherer: GathererFactory, doubles: Doubles
) -> None:
    # promo errs in every request, failing or healthy; ledger errs only in failing ones.
    bundle, a = await _analysed(make_gatherer, doubles, Incident())
    assert all(h.service != "promo" for h in a.hypotheses)
    assert all(c.service != "promo" for c in bundle.culprits)


async def test_the_stage_answers_unknown_without_a_bundle() -> None:
    msg = WebhookMessage.model_validate(Incident().build().alert_message())
    out = await RootCauseAnalyser().analyse(AnalyseInput(message=msg, bundle=None, budget_s=1.0))
    assert out.analysis is not None and out.analysis.unknown
    assert "no evidence" in out.analysis.unknown_reason


def test_schema_1_bundles_migrate_on_read() -> None:
    v1: dict[str, Any] = {
        "schema_version": "1",
        "alert": {"alertname": "A", "status": "firing", "starts_at": "2030-01-01T00:00:00Z"},
        "culprit": {
            "item_id": "span:s:op",
            "trace_id": "t",
            "service": "s",
            "operation": "op",
            "duration_ms": 1.0,
            "self_ms": 1.0,
            "status": "error",
            "reason": "r",
        },
        "deploy": {"service": "s", "current_version": "1.2.3", "summary": "s 1.2.3"},
        "budget": {"token_budget": 6000},
    }
    b = EvidenceBundle.model_validate(v1)
    assert b.schema_version == "2"
    assert [d.current_version for d in b.deploy] == ["1.2.3"]
    assert [c.service for c in b.culprits] == ["s"]
    assert EvidenceBundle.model_validate({**v1, "deploy": None}).deploy == []
    # and a current bundle passes through untouched
    again = EvidenceBundle.model_validate_json(b.model_dump_json())
    assert again == b

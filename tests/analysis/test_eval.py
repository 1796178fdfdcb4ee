"""The evaluation harness: recordings current, replay faithful, output shaped, and the
deterministic analyzer's acceptance on the ten recorded scenarios."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from enricher.analysis.eval import (
    Exchange,
    ReplayServer,
    deploy_correct,
    evaluate,
    find_scenarios,
    load_scenario,
    main,
    op_matches,
    top1_correct,
)
from enricher.analysis.model import Analysis, DeployVerdict, Hypothesis
from enricher.bundle.model import EvidenceBundle
from tests.scenarios.generate import SCENARIOS, generate

SCENARIO_DIR = Path(__file__).resolve().parents[1] / "scenarios"
ARTICLE = "checkout-slow-query-flag"
# Scenarios whose window holds a deploy: the culprit's own, or a decoy to be ruled out.
WITH_DEPLOY = {
    "checkout-slow-query-flag",
    "storefront-inventory-timeout",
    "cart-pricing-canary",
    "payments-pool-saturation",
    "gateway-log-storm",
    "profile-build-info-deploy",
}


def culprit_analyser(bundle: EvidenceBundle) -> Analysis:
    """A stand-in analyzer for the harness tests: the bundle's own culprit, no verdicts."""
    if bundle.culprit is None:
        return Analysis(
            unknown=True, hypotheses=[Hypothesis(statement="?", kind="unknown", confidence=0.0)]
        )
    c = bundle.culprit
    return Analysis(
        hypotheses=[
            Hypothesis(statement="x", service=c.service, operation=c.operation, confidence=0.5)
        ]
    )


def scenarios() -> list[Any]:
    return [load_scenario(p) for p in find_scenarios([SCENARIO_DIR])]


# --- the recordings -------------------------------------------------------------------------


def test_every_generator_scenario_is_recorded_and_nothing_else() -> None:
    recorded = {p.name for p in find_scenarios([SCENARIO_DIR])}
    assert recorded == set(SCENARIOS)
    assert len(recorded) >= 10
    for p in find_scenarios([SCENARIO_DIR]):
        size = sum(f.stat().st_size for f in p.iterdir())
        assert size < 200_000, f"{p.name}: {size} bytes"


def test_regenerating_a_scenario_gives_the_recorded_files(tmp_path: Path) -> None:
    generate([ARTICLE], tmp_path, quiet=True)
    for f in ("responses.json", "alert.json", "scenario.yaml"):
        assert (tmp_path / ARTICLE / f).read_bytes() == (SCENARIO_DIR / ARTICLE / f).read_bytes(), (
            f"{ARTICLE}/{f} is stale: python -m tests.scenarios.generate --only {ARTICLE}"
        )


# --- replay ---------------------------------------------------------------------------------


async def test_replay_serves_recordings_and_reports_unmatched_requests() -> None:
    sc = load_scenario(SCENARIO_DIR / ARTICLE)
    assert sc.exchanges
    trace = next(x for x in sc.exchanges if x.path.startswith("/api/v2/traces/"))
    logs = next(x for x in sc.exchanges if x.backend == "loki")
    async with ReplayServer() as server, aiohttp.ClientSession() as http:
        server.load(sc.exchanges)
        async with http.get(server.url("tempo") + trace.path) as r:
            assert r.status == trace.status
            assert r.headers["Content-Type"] == trace.content_type
            assert await r.json() == trace.body
        # Time parameters do not take part in matching; the query does.
        q = {k: v for k, v in logs.query.items() if isinstance(v, str)}
        q.update(start="1", end="2")
        async with http.get(server.url("loki") + logs.path, params=q) as r:
            assert (await r.json())["data"]["result"] == logs.body["data"]["result"]
        assert server.matched == 2 and server.unmatched == []

        async with http.get(server.url("tempo") + "/api/v2/traces/" + "ab" * 16) as r:
            assert r.status == 200 and await r.json() == {"trace": {}, "metrics": {}}
        async with http.get(
            server.url("prometheus") + "/api/v1/query_exemplars", params={"query": "up"}
        ) as r:
            assert await r.json() == {"status": "success", "data": []}
        async with http.get(server.url("grafana") + "/api/nothing") as r:
            assert r.status == 404
        assert [u.text() for u in server.unmatched] == [
            "tempo GET /api/v2/traces/" + "ab" * 16,
            "prometheus GET /api/v1/query_exemplars?query=up",
            "grafana GET /api/nothing",
        ]


async def test_the_gatherer_replays_every_scenario_without_unmatched_requests() -> None:
    report = await evaluate(scenarios(), analyse=culprit_analyser)
    for r in report.scenarios:
        assert r.error is None, r
        assert r.unmatched_requests == 0, (r.name, r.unmatched)
        assert r.replayed_requests > 10 and r.missing == [], (r.name, r.missing)
        if r.evidence_recall is not None:
            assert r.evidence_recall > 0, (r.name, r.facts)
    assert report.summary.total == len(SCENARIOS)


async def test_a_stored_bundle_is_evaluated_as_is(tmp_path: Path) -> None:
    sc = load_scenario(SCENARIO_DIR / ARTICLE)
    first = await evaluate([sc], analyse=culprit_analyser)
    # Gather once through the replay, store the bundle, and evaluate the stored copy.
    captured: list[EvidenceBundle] = []

    def keep(b: EvidenceBundle) -> Analysis:
        captured.append(b)
        return culprit_analyser(b)

    await evaluate([sc], analyse=keep)
    d = tmp_path / "stored"
    d.mkdir()
    for f in ("scenario.yaml", "alert.json"):
        (d / f).write_bytes((SCENARIO_DIR / ARTICLE / f).read_bytes())
    (d / "bundle.json").write_text(captured[0].model_dump_json())
    report = await evaluate([load_scenario(d)], analyse=culprit_analyser)
    r = report.scenarios[0]
    assert r.source == "bundle" and r.gather_ms == 0 and r.replayed_requests == 0
    assert r.top1_correct == first.scenarios[0].top1_correct
    assert r.facts == first.scenarios[0].facts


# --- scoring --------------------------------------------------------------------------------


def _h(service: str | None, op: str | None, kind: str = "cause") -> Hypothesis:
    return Hypothesis(statement="s", service=service, operation=op, confidence=0.5, kind=kind)  # type: ignore[arg-type]


def test_scoring_rules() -> None:
    sc = load_scenario(SCENARIO_DIR / ARTICLE)
    t = sc.spec.truth
    assert op_matches("SELECT orders", "select orders WHERE user_id=$1")
    assert not op_matches("SELECT carts", "SELECT orders WHERE user_id=$1")
    assert top1_correct(Analysis(hypotheses=[_h("db-primary", "SELECT orders")]), t)
    assert not top1_correct(Analysis(hypotheses=[_h("checkout", "SELECT orders")]), t)
    assert not top1_correct(Analysis(hypotheses=[_h(None, None, "unknown")]), t)

    def v(service: str, version: str, verdict: str) -> DeployVerdict:
        return DeployVerdict(service=service, version=version, verdict=verdict, reason="r")  # type: ignore[arg-type]

    assert deploy_correct(Analysis(deploys=[v("checkout", "2.4.1", "suspect")]), t)
    assert not deploy_correct(Analysis(deploys=[v("checkout", "2.4.0", "suspect")]), t)
    assert not deploy_correct(
        Analysis(deploys=[v("checkout", "2.4.1", "suspect"), v("cart", "3.1.2", "suspect")]), t
    )

    two = load_scenario(SCENARIO_DIR / "booking-two-regressions").spec.truth
    both = [_h("loyalty", "INSERT accruals"), _h("seat-map", "GET /seatmap/{flight}")]
    assert top1_correct(Analysis(hypotheses=both), two)
    assert not top1_correct(Analysis(hypotheses=both[:1]), two)
    assert deploy_correct(Analysis(deploys=[v("seat-map", "3.0.1", "ruled_out")]), two)

    unknown = load_scenario(SCENARIO_DIR / "reports-unknown-queueing").spec.truth
    assert top1_correct(Analysis(unknown=True, hypotheses=[_h(None, None, "unknown")]), unknown)
    assert not top1_correct(Analysis(hypotheses=[_h("reports-api", "render pdf")]), unknown)


# --- the command ------------------------------------------------------------------------------


def test_usage_errors_and_unreadable_scenarios_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([]) == 2
    assert main([str(tmp_path / "absent")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert main([str(tmp_path)]) == 2
    assert "no scenario directories" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "scenario.yaml").write_text("name: bad\ntruth: {unknown: true}\n")
    assert main([str(bad)]) == 2
    assert "received_at" in capsys.readouterr().err
    (bad / "scenario.yaml").write_text(
        yaml.safe_dump(
            {"name": "bad", "received_at": "2030-01-01T00:00:00Z", "truth": {"unknown": True}}
        )
    )
    (bad / "alert.json").write_text("{")
    assert main([str(bad)]) == 2
    assert "alert.json: invalid JSON" in capsys.readouterr().err
    assert main([str(SCENARIO_DIR), "--llm"]) == 2
    assert "--llm needs --config" in capsys.readouterr().err


def test_json_output_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "eval.json"
    names = ["--only", ARTICLE, "--only", "reports-unknown-queueing"]
    assert main([str(SCENARIO_DIR), *names, "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert ARTICLE in table and "top-1 " in table
    doc = json.loads(out.read_text())
    assert set(doc) == {"scenarios", "summary"}
    assert [s["name"] for s in doc["scenarios"]] == [ARTICLE, "reports-unknown-queueing"]
    for s in doc["scenarios"]:
        assert {
            "name",
            "top1_correct",
            "evidence_recall",
            "deploy_correct",
            "tokens",
            "calls",
            "latency_ms",
            "gather_ms",
            "unmatched_requests",
        } <= set(s)
        assert s["tokens"] == 0 and s["calls"] == 0
    assert doc["summary"]["total"] == 2
    assert {"top1", "total"} <= set(doc["summary"])


def test_llm_stage_is_run_and_its_usage_reported(tmp_path: Path) -> None:
    from tests.doubles.llm import LLMDouble

    double = LLMDouble("valid", stream_delay=0.0)
    url = double.start_in_thread()
    try:
        cfg = tmp_path / "enricher.yaml"
        cfg.write_text(
            yaml.safe_dump(
                {
                    "analysis": {
                        "llm": {
                            "base_url": f"{url}/v1",
                            "model": "scripted",
                            "total_timeout": "10s",
                        }
                    }
                }
            )
        )
        out = tmp_path / "eval.json"
        args = [str(SCENARIO_DIR / ARTICLE), "--llm", "--config", str(cfg), "--json", str(out)]
        assert main(args) == 0
    finally:
        double.stop_thread()
    s = json.loads(out.read_text())["scenarios"][0]
    assert s["llm_status"] == "ok", s
    assert s["calls"] >= 1 and s["tokens"] > 0
    assert s["top1_correct"]


# --- acceptance: the deterministic analyzer on the recorded scenarios --------------------------


async def test_deterministic_analyzer_acceptance() -> None:
    from enricher.analysis.hypotheses import analyse_bundle

    scs = scenarios()
    report = await evaluate(scs, analyse=analyse_bundle)
    by_name = {r.name: r for r in report.scenarios}
    wrong = {r.name: r.hypotheses for r in report.scenarios if not r.top1_correct}
    assert report.summary.top1 >= 9, wrong
    for sc in scs:
        r = by_name[sc.spec.name]
        assert r.error is None, r
        if sc.spec.truth.unknown:
            assert r.top1_correct, (r.name, r.hypotheses)
        if sc.spec.truth.deploy is not None or r.name in WITH_DEPLOY:
            assert r.deploy_correct, (r.name, r.deploy_verdicts)
    assert report.summary.latency_ms_max < 1000


def test_exchanges_round_trip_their_bodies() -> None:
    x = Exchange(backend="loki", method="GET", path="/p", status=200, body={"a": [1, 2.5]})
    assert json.loads(x.raw()) == {"a": [1, 2.5]}
    assert (
        Exchange(backend="t", method="GET", path="/", status=404, body_format="empty").raw() == b""
    )

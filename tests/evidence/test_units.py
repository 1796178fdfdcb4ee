"""Component behaviour: span analysis limits, attribute truncation, log capping, redaction,
PromQL narrowing, exemplar ranking, budget priority, deploy merging."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from enricher.analysis.spans import analyse_traces
from enricher.bundle.budget import apply_budget, estimate_tokens
from enricher.bundle.model import AlertInfo, BudgetInfo, EvidenceBundle, EvidenceItem
from enricher.bundle.redact import redact_deep, redact_text
from enricher.sources.deploys import DeploySignal, combine, from_build_info
from enricher.sources.loki import LogLine, mask, process
from enricher.sources.prometheus import (
    SeriesSamples,
    WireExemplar,
    WireExemplarSeries,
    normalize_trace_id,
    rank_exemplars,
)
from enricher.sources.promql import analyse_expression, expr_from_generator_url
from enricher.sources.tempo import Span, Trace, parse_trace

T0 = 1_900_000_000 * 10**9


def span(
    sid: str,
    parent: str | None,
    name: str,
    start_ms: float,
    end_ms: float,
    service: str = "svc",
    error: bool = False,
) -> Span:
    return Span(
        trace_id="a" * 32,
        span_id=sid,
        parent_id=parent,
        name=name,
        service=service,
        start_ns=T0 + int(start_ms * 1e6),
        end_ns=T0 + int(end_ms * 1e6),
        status="error" if error else "unset",
    )


def test_span_with_10000_children_is_analysed_without_recursion_blowup() -> None:
    spans = [span("root", None, "GET /batch", 0, 5000)]
    spans += [
        span(f"c{i:05d}", "root", "fetch item", i * 0.4, i * 0.4 + 0.3) for i in range(10_000)
    ]
    spans.append(span("deep", "c09999", "SELECT items", 3999.7, 3999.9, "db", error=True))
    # and a 3,000-deep chain, which recursion would not survive
    parent = "root"
    for i in range(3000):
        spans.append(span(f"d{i}", parent, "nested", 4000 + i * 0.1, 5000 - i * 0.1))
        parent = f"d{i}"
    t0 = time.perf_counter()
    f = analyse_traces([Trace(trace_id="a" * 32, spans=spans)])
    assert time.perf_counter() - t0 < 5
    assert f.culprit is not None and f.culprit.span.name == "SELECT items"
    assert f.suspects[0].span_count == 13_002


def test_self_time_excludes_overlapping_children_once() -> None:
    spans = [
        span("r", None, "root", 0, 100),
        span("a", "r", "a", 10, 60),
        span("b", "r", "b", 40, 90),
    ]
    f = analyse_traces([Trace(trace_id="a" * 32, spans=spans)])
    assert f.suspects[0].op_self_ms["svc:root"] == 20.0  # 100 - union(10..90)


def test_without_errors_the_largest_self_time_on_the_critical_path_is_blamed() -> None:
    spans = [
        span("r", None, "root", 0, 1000),
        span("a", "r", "cache", 0, 5),
        span("b", "r", "render", 5, 905),
        span("c", "r", "async audit", 10, 20),
    ]
    f = analyse_traces([Trace(trace_id="a" * 32, spans=spans)])
    assert f.culprit is not None and f.culprit.span.name == "render"
    assert f.culprit.span.on_critical_path


def test_one_megabyte_attribute_values_are_truncated_while_parsing() -> None:
    big = "x" * 1_000_000
    doc = {
        "batches": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "api"}}]
                },
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "si/CosqsRFHhp6+5DqBaOw==",
                                "spanId": "g5EGmMrFLLA=",
                                "name": "q",
                                "startTimeUnixNano": "1",
                                "endTimeUnixNano": "2",
                                "attributes": [
                                    {"key": "db.query.text", "value": {"stringValue": big}}
                                ],
                                "events": [
                                    {
                                        "name": "exception",
                                        "attributes": [
                                            {
                                                "key": "exception.stacktrace",
                                                "value": {"stringValue": big},
                                            }
                                        ],
                                    }
                                ],
                                "status": {},
                            }
                        ]
                    }
                ],
            }
        ]
    }
    trace = parse_trace("b22fc2a2caac4451e1a7afb90ea05a3b", doc, limit=2000)
    assert trace is not None
    text = trace.spans[0].attributes["db.query.text"]
    assert isinstance(text, str) and len(text) < 2100 and text.endswith("chars]")
    assert len(str(trace.spans[0].events[0].attributes["exception.stacktrace"])) < 2100


def test_5000_lines_are_sorted_deduplicated_capped_and_templated() -> None:
    lines = [
        LogLine(
            ts_ns=T0 + (i % 2500) * 1000,
            line=f"timeout calling inventory after {i % 2500}ms",
            service="api",
        )
        for i in range(5000)
    ]
    p = process(lines, max_lines=200)
    assert p.lines_in == 5000 and p.duplicates == 2500
    assert len(p.lines) == 200 and p.dropped == 2300
    assert [ln.ts_ns for ln in p.lines] == sorted(ln.ts_ns for ln in p.lines)
    assert len(p.templates) == 1 and p.templates[0].count == 2500
    assert p.templates[0].template == "timeout calling inventory after <n>"


def test_masking_keeps_words_and_replaces_ids_and_numbers() -> None:
    assert mask("user 42 got 500 for trace 4bf92f3577b34da6a3ce929d0e0e4736 from 10.1.2.3:80") == (
        "user <n> got <n> for trace <id> from <ip>"
    )


def test_redaction_covers_common_credential_shapes_and_spares_ids() -> None:
    cases = {
        "postgres://app:pw123@db:5432/x": "postgres://app:[REDACTED]@db:5432/x",
        "Authorization: Bearer abc.def.ghi123": "Authorization: Bearer [REDACTED]",
        "api_key=sk_live_abcdef": "api_key=[REDACTED]",
        '{"password": "hunter2"}': '{"password": "[REDACTED]"}',
        "key AKIAIOSFODNN7EXAMPLE": "key [REDACTED AWS KEY]",
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG": "aws_secret_access_key = [REDACTED]",
    }
    for raw, want in cases.items():
        assert redact_text(raw) == want, raw
    keep = (
        "trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span_id=00f067aa0ba902b7 version=2.4.1 "
        "SELECT * FROM users WHERE password = $1"
    )
    assert redact_text(keep) == keep
    assert redact_deep({"http.request.header.authorization": "Basic dXNlcjpw", "n": 3}) == {
        "http.request.header.authorization": "[REDACTED]",
        "n": 3,
    }
    assert "BEGIN" not in redact_text(
        "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----"
    )


def test_generator_url_expression_is_read_from_the_query_string_only() -> None:
    url = "http://evil.example:9090/graph?g0.expr=rate%28x%5B5m%5D%29+%3E+1&g0.tab=1"
    assert expr_from_generator_url(url) == "rate(x[5m]) > 1"
    assert expr_from_generator_url("https://grafana/alerting/grafana/abc/view") is None
    assert expr_from_generator_url("") is None


def test_alert_labels_narrow_the_selector_only_where_they_survive_the_aggregation() -> None:
    labels = {"alertname": "X", "service": "api", "pod": "api-1", "severity": "page"}
    aq = analyse_expression(
        'sum by (service, pod) (rate(errors_total{code=~"5.."}[5m])) > 1', labels
    )
    assert aq.primary.render() == 'errors_total{code=~"5..",pod="api-1",service="api"}'
    assert aq.error_matcher is not None and aq.error_matcher.name == "code"
    aq = analyse_expression("rate(errors_total[5m]) > 1", labels)
    assert aq.primary.render() == "errors_total"  # unknown which labels exist: filter later
    assert aq.series_filter == {"pod": "api-1", "service": "api", "severity": "page"}


def test_average_latency_from_sum_and_count_uses_the_bucket_series() -> None:
    aq = analyse_expression(
        "sum(rate(rpc_duration_seconds_sum[5m])) / sum(rate(rpc_duration_seconds_count[5m])) > 2",
        {"alertname": "Slow"},
    )
    assert aq.kind == "latency" and aq.primary.metric == "rpc_duration_seconds_bucket"
    assert aq.threshold_seconds == 2.0


def _series(labels: dict[str, str], *ex: tuple[str, float, float]) -> WireExemplarSeries:
    return WireExemplarSeries(
        seriesLabels=labels,
        exemplars=[
            WireExemplar(labels={"trace_id": t}, value=str(v), timestamp=ts) for t, v, ts in ex
        ],
    )


def test_latency_ranking_prefers_slow_then_recent_and_keeps_fast_for_contrast() -> None:
    aq = analyse_expression(
        'histogram_quantile(0.99, sum by (le) (rate(h_seconds_bucket{job="a"}[1m]))) > 0.5',
        {"alertname": "L"},
    )
    series = [
        _series({"le": "0.1"}, ("1" * 32, 0.05, 100), ("2" * 32, 0.08, 101)),
        _series({"le": "2.5"}, ("3" * 32, 1.2, 50), ("4" * 32, 0.9, 90), ("3" * 32, 1.2, 50)),
    ]
    sel = rank_exemplars(series, aq, 3, 2, ["trace_id"])
    assert [c.trace_id for c in sel.suspects] == ["4" * 32, "3" * 32]
    assert [c.trace_id for c in sel.healthy] == ["1" * 32, "2" * 32]
    assert "above the alert threshold" in sel.suspects[0].reason


def test_trace_ids_are_normalised_and_invalid_ones_refused() -> None:
    assert normalize_trace_id("ABC") == "0" * 29 + "abc"
    assert normalize_trace_id("4bf92f35-77b3-4da6-a3ce-929d0e0e4736") == (
        "4bf92f3577b34da6a3ce929d0e0e4736"
    )
    for bad in ("", "0" * 32, "xyz", "1" * 33):
        assert normalize_trace_id(bad) is None


def _item(i: int, prio: int, size: int) -> EvidenceItem:
    return EvidenceItem(id=f"log:{i}", kind="log", source="loki", priority=prio, summary="x" * size)


def test_budget_keeps_high_priority_items_and_lists_what_it_dropped() -> None:
    alert = AlertInfo(alertname="A", status="firing", starts_at=datetime.now(UTC))
    items = [_item(1, 8, 2000), _item(2, 0, 400), _item(3, 1, 400), _item(4, 5, 4000)]
    b = EvidenceBundle(alert=alert, items=items, budget=BudgetInfo(token_budget=900))
    out = apply_budget(b, 900)
    assert [i.id for i in out.items][:2] == ["log:2", "log:3"]
    assert "log:1" in out.budget.dropped_ids or "log:1" in out.budget.shrunk_ids
    assert out.budget.tokens_estimated <= 900
    assert estimate_tokens(out.model_dump_json()) <= 900 + 50


def test_deploy_context_prefers_exact_times_and_reports_minutes_before_alert() -> None:
    start = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    sigs = [
        DeploySignal(source="trace_resource", service="api", version="2.0.0", commit="abc1234"),
        DeploySignal(
            source="build_info",
            service="api",
            version="2.0.0",
            commit="abc1234",
            previous_version="1.9.0",
            time=start - timedelta(minutes=9, seconds=40),
        ),
        DeploySignal(
            source="ci_event",
            service="api",
            version="2.0.0",
            commit="abc1234",
            time=start - timedelta(minutes=10),
        ),
    ]
    ctx = combine("api", start, sigs)
    assert ctx.deploy_time_source == "ci_event" and ctx.minutes_before_alert == 10.0
    assert ctx.previous_version == "1.9.0"
    assert ctx.summary.startswith("api 2.0.0 (abc1234) deployed 10 minutes before")
    quiet = combine("api", start, sigs[:1])
    assert quiet.minutes_before_alert is None and "no deploy found" in quiet.summary


def test_secrets_written_as_free_text_are_redacted_and_prose_is_not() -> None:
    from enricher.bundle.redact import redact_text

    aws = "aws key AKIAIOSFODNN7EXAMPLE secret wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    assert "wJalr" not in redact_text(aws) and "AKIA" not in redact_text(aws)
    assert "abcdefghijklmnop" not in redact_text("api key abcdefghijklmnopqrstuvwxyz0123 leaked")
    for prose in (
        "password reset link sent to user 12345",
        "token expired after 3600 seconds",
        "slow query: seq scan on orders (1.1M rows), index not used",
    ):
        assert redact_text(prose) == prose


def _bi(version: str, start: int, end: int) -> SeriesSamples:
    return SeriesSamples(
        labels={"version": version, "commit": f"c{version}"},
        samples=[(float(t), 1.0) for t in range(start, end + 1, 15)],
    )


def test_build_info_canary_new_version_is_the_one_first_seen_later() -> None:
    # old and new pods both report to the end of the window, as in a canary
    sig = from_build_info("s", [_bi("1.0", 0, 600), _bi("1.1", 300, 600)], "version", "commit")
    assert sig is not None and (sig.version, sig.previous_version) == ("1.1", "1.0")
    assert sig.time is not None and sig.time.timestamp() == 300


def test_build_info_rollback_keeps_the_running_version_and_says_what_went() -> None:
    sig = from_build_info("s", [_bi("1.0", 0, 600), _bi("1.1", 300, 390)], "version", "commit")
    assert sig is not None and sig.version == "1.0" and sig.time is None
    assert "1.1 ran from" in sig.detail and "gone again" in sig.detail


def test_a_healthy_candidate_whose_request_failed_is_no_contrast() -> None:
    from tests.evidence.conftest import fixture_json

    failing = parse_trace("b22fc2a2caac4451e1a7afb90ea05a3b", fixture_json("tempo-trace-v2.json"))
    assert failing is not None
    twin = failing.model_copy(update={"trace_id": "1" * 32}, deep=True)
    f = analyse_traces([failing], [twin])
    assert f.healthy == []  # the root of the "healthy" one erred: it is not healthy
    assert f.culprit is not None and "no healthy traces" in f.culprit.reason

"""The deterministic analyzer: ranked, cited hypotheses from the bundle alone.

Why deterministic first: it needs no network, answers in milliseconds and always runs, so a
page never waits for (or depends on) a model. It reads only the bundle, so a replayed or
re-analysed bundle gives the same answer.

One hypothesis per independent suspect the gather found standing out against healthy
traces (`bundle.culprits`). Its confidence is a sum of signal weights, each recorded with
its detail and evidence ids, so a reader sees why: recurrence across the sampled failing
traces, error and latency contrast with healthy traces of the same operation, exception
events, flags and versions seen only on failing traces, log lines of the culprit span,
errors passed on to the callers, and a deploy judged a suspect (see `deploys`). When
nothing stands out, the answer is "unknown" with what was compared and what was missing,
and no guess ranks above it.
"""

from __future__ import annotations

import re
import time

from enricher.analysis.deploys import describe, judge_deploys
from enricher.analysis.model import Analysis, DeployVerdict, Hypothesis, Signal
from enricher.bundle.model import CulpritSummary, EvidenceBundle, EvidenceItem

BASE = 0.1
MAX_CONFIDENCE = 0.97
# A low-confidence culprit (nothing stands out) is a guess, below the "unknown" answer.
GUESS_CAP = 0.25

_SEQ_SCAN = re.compile(r"seq(uential)? scan|index not used|full table scan|missing index", re.I)
_FROM = re.compile(r"\bFROM\s+([A-Za-z_][\w.]*)", re.I)
_WHERE_COL = re.compile(r"\bWHERE\s+([A-Za-z_][\w.]*)\s*(=|IN\b|LIKE\b|>|<)", re.I)
# Ids a log line carries for correlation: the page links the trace already.
_IDS = re.compile(r"\s*\b(trace_?id|span_?id|traceID|spanID)=[0-9a-fA-F]+", re.I)
_TIMEOUT = re.compile(r"time(d)?[ _-]?out|deadline exceeded|statement timeout", re.I)
_ERRORISH = re.compile(r"\b(error|fail(ed|ure)?|exception|slow|timeout|refused)\b", re.I)
_SATURATION = re.compile(
    r"(connection|thread|worker) pool|pool (is )?(exhausted|full)|queue (is )?full|saturat"
    r"|too many connections|throttl|waiting for a connection|acquire",
    re.I,
)


def analyse_bundle(bundle: EvidenceBundle) -> Analysis:
    t0 = time.perf_counter()
    verdicts = judge_deploys(bundle)
    hyps: list[Hypothesis] = []
    for n, c in enumerate(bundle.culprits):
        hyps.append(_hypothesis(c, bundle, verdicts, top=n == 0))
    hyps.sort(key=lambda h: -h.confidence)
    analysis = Analysis(deploys=verdicts, hypotheses=hyps)
    if not hyps:
        unknown = _unknown(bundle, verdicts)
        analysis.unknown = True
        analysis.unknown_reason = unknown.statement
        analysis.hypotheses = [unknown, *_guesses(bundle, verdicts)]
    top = analysis.hypotheses[0]
    analysis.summary = top.statement
    analysis.deterministic_ms = round((time.perf_counter() - t0) * 1000, 3)
    return analysis


# --- one suspect ------------------------------------------------------------------------


def _hypothesis(
    c: CulpritSummary, bundle: EvidenceBundle, verdicts: list[DeployVerdict], top: bool
) -> Hypothesis:
    signals: list[Signal] = []
    ids = [c.item_id]
    span_item = bundle.item(c.item_id)
    span = span_item.span if span_item is not None else None
    contrast_item = bundle.item(c.contrast_item_id) if c.contrast_item_id else None
    contrast = contrast_item.contrast if contrast_item is not None else None
    cids = [contrast_item.id] if contrast_item is not None else []

    frac = c.agreeing_traces / max(1, c.suspect_traces)
    every = c.agreeing_traces == c.suspect_traces and c.suspect_traces > 1
    where = (
        "in every sampled failing trace"
        if every
        else f"in {c.agreeing_traces}/{c.suspect_traces} sampled failing traces"
    )
    signals.append(
        Signal(
            name="recurrence", weight=round(0.25 * frac, 3), detail=where, evidence_ids=[c.item_id]
        )
    )
    healthy_note = ""
    if "error" in c.stands_out and contrast is not None:
        signals.append(
            Signal(name="error_contrast", weight=0.2, detail=contrast.text, evidence_ids=cids)
        )
        if contrast.healthy_total:
            healthy_note = f"errors in {contrast.healthy_errors}/{contrast.healthy_total} healthy"
    if "latency" in c.stands_out and contrast is not None:
        signals.append(
            Signal(name="latency_contrast", weight=0.2, detail=contrast.text, evidence_ids=cids)
        )
        if contrast.healthy_self_ms is not None:
            healthy_note = f"healthy: {_ms(contrast.healthy_self_ms)}"
    if "absent" in c.stands_out:
        signals.append(
            Signal(
                name="absent_in_healthy",
                weight=0.1,
                detail="the operation does not occur in healthy traces",
                evidence_ids=cids or [c.item_id],
            )
        )
        healthy_note = healthy_note or "absent from healthy traces"
    ids += cids
    if c.exception:
        signals.append(
            Signal(name="exception", weight=0.1, detail=c.exception, evidence_ids=[c.item_id])
        )

    flags = _failing_only_flags(bundle, c)
    for item in flags[:2]:
        assert item.attribute is not None
        signals.append(
            Signal(name="feature_flag", weight=0.1, detail=item.summary, evidence_ids=[item.id])
        )
        ids.append(item.id)
    versions = [
        i
        for i in bundle.items
        if i.attribute is not None
        and i.attribute.key == "service.version"
        and i.attribute.failing_only
        and i.attribute.service == c.service
    ]
    for item in versions[:1]:
        signals.append(
            Signal(
                name="version_contrast", weight=0.15, detail=item.summary, evidence_ids=[item.id]
            )
        )
        ids.append(item.id)

    logs = [i for i in (bundle.item(x) for x in c.log_item_ids) if i is not None and i.log]
    key_log = _key_log(logs)
    if key_log is not None:
        signals.append(
            Signal(
                name="log_template",
                weight=0.1,
                detail=f"log of the culprit span: {key_log.log.line[:200]}",  # type: ignore[union-attr]
                evidence_ids=[key_log.id],
            )
        )
        ids.append(key_log.id)
    callers = _callers_erring(bundle, c)
    if callers:
        signals.append(
            Signal(
                name="downstream_error",
                weight=0.05,
                detail="the failure is passed on to " + ", ".join(callers[:3]),
                evidence_ids=_trace_ids(bundle)[:2],
            )
        )

    deploy = _deploy_for(c, bundle, verdicts)
    if deploy is not None:
        v, ctx_text = deploy
        signals.append(
            Signal(
                name="deploy",
                weight=0.15,
                detail=f"{ctx_text}: {v.reason}",
                evidence_ids=v.evidence_ids,
            )
        )
        ids += v.evidence_ids

    confidence = min(MAX_CONFIDENCE, BASE + sum(s.weight for s in signals))
    if c.confidence == "low":
        confidence = min(confidence, GUESS_CAP)
    elif c.confidence == "medium":
        confidence = min(confidence, 0.8)

    # The statement, in the order a person reads it.
    dur = span.duration_ms if span is not None else c.duration_ms
    verb = f"took {_ms(dur)}"
    if c.status == "error" and "latency" not in c.stands_out:
        verb = (
            f"failed ({_short(span.status_message) if span and span.status_message else 'error'})"
        )
        if dur >= 200:
            verb += f" after {_ms(dur)}"
    statement = f"{c.service} `{c.operation}` {verb} {where}"
    if healthy_note:
        statement += f" ({healthy_note})"
    if c.exception:
        statement += f"; exception {_short(c.exception, 120)}"
    if key_log is not None and key_log.log is not None:
        statement += f"; log: {_short(_IDS.sub('', key_log.log.line), 140)}"
    if flags and flags[0].attribute is not None:
        a = flags[0].attribute
        statement += f"; only with {a.key}={a.value}"
    if deploy is not None:
        statement += f"; {deploy[1]}"
    actions = _actions(c, span_item, key_log, flags, deploy)
    if actions:
        statement += " -> " + "; ".join(actions[:2])
    return Hypothesis(
        statement=statement,
        service=c.service,
        operation=c.operation,
        evidence_ids=list(dict.fromkeys(ids)),
        confidence=round(confidence, 3),
        signals=signals,
        actions=actions,
    )


def _failing_only_flags(bundle: EvidenceBundle, c: CulpritSummary) -> list[EvidenceItem]:
    """Flags seen only on failing traces, those on the culprit span itself first."""
    on_span = {f"{k}={_val(v)}" for k, v in c.key_attributes.items() if k.startswith("feature_")}
    items = [
        i
        for i in bundle.items
        if i.attribute is not None
        and i.attribute.failing_only
        and i.attribute.key.startswith("feature_flag")
    ]
    return sorted(items, key=lambda i: f"{i.attribute.key}={i.attribute.value}" not in on_span)  # type: ignore[union-attr]


def _key_log(logs: list[EvidenceItem]) -> EvidenceItem | None:
    """The line of the culprit span most worth reading: an error-level one if any."""
    if not logs:
        return None

    def rank(i: EvidenceItem) -> int:
        ln = i.log
        assert ln is not None
        level = (ln.labels.get("detected_level") or ln.labels.get("level") or "").lower()
        if level in ("error", "fatal", "critical") or _ERRORISH.search(ln.line):
            return 0
        return 1 if level.startswith("warn") else 2

    return min(logs, key=rank)


def _callers_erring(bundle: EvidenceBundle, c: CulpritSummary) -> list[str]:
    out: list[str] = []
    for i in bundle.items:
        if i.trace is not None and i.trace.role == "suspect":
            for op in i.trace.error_ops:
                if op != f"{c.service}:{c.operation}" and op not in out:
                    out.append(op)
    return out if c.status == "error" else []


def _trace_ids(bundle: EvidenceBundle) -> list[str]:
    return [i.id for i in bundle.items if i.trace is not None and i.trace.role == "suspect"]


def _deploy_for(
    c: CulpritSummary, bundle: EvidenceBundle, verdicts: list[DeployVerdict]
) -> tuple[DeployVerdict, str] | None:
    """The suspect deploy that explains this culprit: its own service's first, then a
    caller's."""
    suspects = [v for v in verdicts if v.verdict == "suspect"]
    own = [v for v in suspects if v.service == c.service]
    for v in own or suspects:
        ctx = bundle.deploy_of(v.service)
        if ctx is None:
            continue
        if v.service != c.service and not ctx.calls_culprit:
            continue
        text = describe(ctx)
        if v.version and v.version != ctx.current_version:
            text = f"{v.service} {v.version} (on failing traces only)"
        elif ctx.previous_version:
            text += f"; previous {ctx.previous_version}"
        return v, text
    return None


def _actions(
    c: CulpritSummary,
    span_item: EvidenceItem | None,
    key_log: EvidenceItem | None,
    flags: list[EvidenceItem],
    deploy: tuple[DeployVerdict, str] | None,
) -> list[str]:
    out: list[str] = []
    rollback: list[str] = []
    if flags and flags[0].attribute is not None:
        rollback.append(f"disable the flag {flags[0].attribute.key.removeprefix('feature_flag.')}")
    if deploy is not None:
        v = deploy[0]
        rollback.append(f"roll back {v.commit or v.version or v.service}")
    if rollback:
        out.append(" or ".join(rollback))
    span = span_item.span if span_item is not None else None
    query = ""
    if span is not None:
        query = str(
            span.attributes.get("db.query.text") or span.attributes.get("db.statement") or ""
        )
    text = " ".join(
        x
        for x in (
            key_log.log.line if key_log is not None and key_log.log is not None else "",
            span.status_message if span is not None else "",
            c.exception,
        )
        if x
    )
    if _SEQ_SCAN.search(text):
        table = _FROM.search(query)
        col = _WHERE_COL.search(query)
        tname = table.group(1) if table else c.operation.split()[-1] if c.operation else ""
        if tname and col:
            out.append(f"add an index on {tname}.{col.group(1)}")
        elif tname:
            out.append(f"check the query plan of {c.operation} (index on {tname})")
    elif _SATURATION.search(text + " " + c.operation):
        out.append(f"relieve {c.service}: raise the pool/queue limit or shed load")
    elif _TIMEOUT.search(text):
        out.append(f"check {c.service} health and what slows `{c.operation}`")
    elif c.exception:
        out.append(f"fix {c.exception.split(':', 1)[0]} in {c.service} `{c.operation}`")
    if not out:
        out.append(f"open the trace at {c.service} `{c.operation}`")
    return out


# --- nothing stands out -----------------------------------------------------------------


def _unknown(bundle: EvidenceBundle, verdicts: list[DeployVerdict]) -> Hypothesis:
    """Say what was compared and what was missing, citing what there is."""
    if bundle.no_standout:
        why = bundle.no_standout
    elif bundle.culprit is not None:
        why = f"only {bundle.culprit.service} `{bundle.culprit.operation}` is suspect, and " + (
            bundle.culprit.reason
        )
    else:
        traces = [i for i in bundle.items if i.trace is not None]
        if not traces:
            why = "no trace of a failing request could be examined"
        else:
            why = "no operation could be singled out on the failing traces"
    missing = [m for m in bundle.missing if m.reason != "not configured"]
    if missing:
        why += "; missing: " + "; ".join(f"{m.source} {m.what}: {m.reason}" for m in missing[:3])
    ruled = [v for v in verdicts if v.verdict == "ruled_out"]
    if ruled:
        why += "; ruled out: " + ", ".join(f"{v.service} deploy ({v.reason})" for v in ruled[:2])
    ids = [i.id for i in bundle.items if i.kind in ("trace", "contrast")][:6]
    return Hypothesis(
        statement=f"Unknown: {why}",
        kind="unknown",
        confidence=0.0,
        evidence_ids=ids,
        actions=["compare the linked failing and healthy traces by hand"],
    )


def _guesses(bundle: EvidenceBundle, verdicts: list[DeployVerdict]) -> list[Hypothesis]:
    """Weak leads shown below "unknown": a culprit that does not stand out, a deploy."""
    out: list[Hypothesis] = []
    c = bundle.culprit
    if c is not None:
        out.append(
            Hypothesis(
                statement=f"Weak lead: {c.service} `{c.operation}` ({c.reason})",
                service=c.service,
                operation=c.operation,
                evidence_ids=[c.item_id],
                confidence=min(GUESS_CAP, 0.15),
                signals=[Signal(name="recurrence", weight=0.05, detail=c.reason[:200])],
                actions=[f"open the trace at {c.service} `{c.operation}`"],
            )
        )
    for v in verdicts:
        if v.verdict == "suspect" and v.evidence_ids:
            ctx = bundle.deploy_of(v.service)
            out.append(
                Hypothesis(
                    statement=f"Weak lead: {describe(ctx) if ctx else v.service} ({v.reason})",
                    service=v.service,
                    evidence_ids=v.evidence_ids,
                    confidence=0.2,
                    signals=[Signal(name="deploy", weight=0.1, detail=v.reason)],
                    actions=[f"roll back {v.commit or v.version or v.service} if in doubt"],
                )
            )
    return out


def _ms(ms: float) -> str:
    return f"{ms / 1000:.2f} s".replace(".00 s", " s") if ms >= 1000 else f"{ms:.0f} ms"


def _short(text: str, n: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _val(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)

"""`enricher eval DIR`: score the root-cause stage on recorded incidents.

Why replay instead of live doubles: a scenario is the exact set of answers the backends gave
the gatherer when it was recorded (`responses.json`), so evaluating it needs no generator,
no SDKs and no randomness, and a change in the gatherer or the analyzer shows up as a change
in score, not in input. The recorded answers are served from one in-process aiohttp server on
a loopback port (one path prefix per backend); the real `Gatherer` asks it exactly as it asks
Prometheus, Tempo, Loki and Grafana, and CI deploy events come from the recording too. A
request the recording does not hold gets the backend's ordinary empty answer and is counted
as unmatched, since a gatherer asking new questions is evaluated on stale evidence (the
recordings need regenerating: `python -m tests.scenarios.generate`).

A scenario directory holds `scenario.yaml` (name, description, received_at, truth),
`alert.json` (the Alertmanager webhook body) and either `responses.json` (recorded
exchanges) or `bundle.json` (a stored evidence bundle, analysed as is). The format is
described in tests/scenarios/README.md.

Scores per scenario: `top1_correct` (the top hypothesis names the truth's service and
operation, or is "unknown" when the truth is unknown), `evidence_recall` (the share of the
truth's facts present in the bundle: its span, its deploy's version, its flag),
`deploy_correct` (a "suspect" verdict for the truth's deploy and none for another service;
none at all when the truth has no deploy), LLM `tokens` and `calls`, and `latency_ms` (the
analysis; the gather is timed separately as `gather_ms`). Scores are reported, not asserted:
the exit status says whether the run itself worked (0), the input was unusable (2), or an
analysis raised (1).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from enricher.analysis.model import Analysis, Hypothesis
from enricher.bundle.model import EvidenceBundle
from enricher.intake.webhook import WebhookMessage
from enricher.sources.config import SourcesConfig
from enricher.sources.deploys import DeployEvent

# Query parameters that only place a request in time; ignored when matching a recording.
TIME_PARAMS = frozenset({"start", "end", "time", "from", "to", "step", "since", "until"})
# The parameter that says what a request asks, per backend, for the looser second match.
_IDENTITY_PARAMS = ("query", "q")
BACKENDS = ("prometheus", "tempo", "loki", "grafana")
GATHER_BUDGET_S = 8.0

Analyse = Callable[[EvidenceBundle], Any]


class ScenarioError(Exception):
    """A scenario directory that cannot be evaluated (missing or malformed files)."""


# --- the scenario format --------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TruthDeploy(_Model):
    service: str
    version: str | None = None
    commit: str | None = None


class TruthOp(_Model):
    service: str
    operation: str


class Truth(_Model):
    service: str | None = None
    operation: str | None = None
    deploy: TruthDeploy | None = None
    flag: str | None = None
    unknown: bool = False
    # Further causes at once: top-1 counts if the top hypothesis is any one of them and the
    # others appear among the hypotheses.
    also: list[TruthOp] = Field(default_factory=list)

    def targets(self) -> list[TruthOp]:
        first = (
            [TruthOp(service=self.service, operation=self.operation)]
            if self.service and self.operation
            else []
        )
        return first + list(self.also)


class ScenarioSpec(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    description: str = ""
    received_at: datetime
    truth: Truth


class Exchange(_Model):
    """One recorded backend request and its answer."""

    backend: str
    method: str
    path: str
    query: dict[str, str | list[str]] = Field(default_factory=dict)
    status: int
    content_type: str = ""
    body_format: Literal["json", "text", "empty"] = "json"
    body: Any = None

    def raw(self) -> bytes:
        if self.body_format == "json":
            return json.dumps(self.body, separators=(",", ":")).encode()
        if self.body_format == "text":
            return str(self.body).encode()
        return b""


class Scenario(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    path: Path
    spec: ScenarioSpec
    message: WebhookMessage
    exchanges: list[Exchange] | None = None
    bundle: EvidenceBundle | None = None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror}") from None
    except ValueError as exc:
        raise ScenarioError(f"{path}: invalid JSON: {exc}") from None


def _first_error(exc: ValidationError) -> str:
    e = exc.errors()[0]
    where = ".".join(str(p) for p in e["loc"]) or "(top level)"
    return f"{where}: {e['msg']}"


def load_scenario(path: Path) -> Scenario:
    spec_file = path / "scenario.yaml"
    try:
        doc = yaml.safe_load(spec_file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"{spec_file}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{spec_file}: invalid YAML: {exc}") from None
    try:
        spec = ScenarioSpec.model_validate(doc)
    except ValidationError as exc:
        raise ScenarioError(f"{spec_file}: {_first_error(exc)}") from None
    if spec.received_at.tzinfo is None:
        raise ScenarioError(f"{spec_file}: received_at needs a UTC offset (RFC 3339)")
    try:
        message = WebhookMessage.model_validate(_read_json(path / "alert.json"))
    except ValidationError as exc:
        raise ScenarioError(f"{path / 'alert.json'}: {_first_error(exc)}") from None
    sc = Scenario(path=path, spec=spec, message=message)
    responses, bundle = path / "responses.json", path / "bundle.json"
    if responses.exists():
        raw = _read_json(responses)
        if not isinstance(raw, list):
            raise ScenarioError(f"{responses}: expected a list of exchanges")
        try:
            sc.exchanges = [Exchange.model_validate(x) for x in raw]
        except ValidationError as exc:
            raise ScenarioError(f"{responses}: {_first_error(exc)}") from None
    elif bundle.exists():
        try:
            sc.bundle = EvidenceBundle.model_validate(_read_json(bundle))
        except ValidationError as exc:
            raise ScenarioError(f"{bundle}: {_first_error(exc)}") from None
    else:
        raise ScenarioError(f"{path}: neither responses.json nor bundle.json")
    return sc


def find_scenarios(paths: Sequence[Path]) -> list[Path]:
    """Each path is a scenario directory or a directory of them (sorted by name)."""
    out: list[Path] = []
    for p in paths:
        if not p.is_dir():
            raise ScenarioError(f"{p}: not a directory")
        if (p / "scenario.yaml").exists():
            out.append(p)
            continue
        found = sorted(d for d in p.iterdir() if (d / "scenario.yaml").exists())
        if not found:
            raise ScenarioError(f"{p}: no scenario directories (none has a scenario.yaml)")
        out.extend(found)
    return out


# --- replaying the recordings -------------------------------------------------------------


def _ident(params: Mapping[str, str | list[str]]) -> tuple[tuple[str, str], ...]:
    items: list[tuple[str, str]] = []
    for k, v in params.items():
        if k in TIME_PARAMS:
            continue
        for x in v if isinstance(v, list) else [v]:
            items.append((k, x))
    return tuple(sorted(items))


def _loose(params: Mapping[str, str | list[str]]) -> str:
    for k in _IDENTITY_PARAMS:
        v = params.get(k)
        if v is not None:
            return v if isinstance(v, str) else v[0]
    return ""


def empty_answer(backend: str, path: str) -> tuple[int, str, bytes]:
    """What the backend says when it has nothing (status, content type, body)."""
    ok = "application/json"
    if backend == "prometheus":
        data: Any = {
            "/api/v1/query_exemplars": [],
            "/api/v1/query_range": {"resultType": "matrix", "result": []},
            "/api/v1/query": {"resultType": "vector", "result": []},
            "/api/v1/rules": {"groups": []},
        }.get(path)
        if data is not None:
            return 200, ok, json.dumps({"status": "success", "data": data}).encode()
    elif backend == "tempo":
        if path.startswith("/api/v2/traces/"):
            return 200, ok, b'{"trace":{},"metrics":{}}'
        if path.startswith("/api/traces/"):
            return 404, "text/plain", b""
        if path == "/api/search":
            return 200, ok, b'{"traces":[],"metrics":{}}'
    elif backend == "loki":
        if path in ("/loki/api/v1/query_range", "/loki/api/v1/query"):
            body = {"status": "success", "data": {"resultType": "streams", "result": []}}
            return 200, "application/json; charset=UTF-8", json.dumps(body).encode()
    elif backend == "grafana" and path == "/api/annotations":
        return 200, ok, b"[]"
    return 404, "text/plain; charset=utf-8", b"404 page not found\n"


class Unmatched(BaseModel):
    backend: str
    method: str
    path: str
    query: dict[str, str | list[str]] = Field(default_factory=dict)

    def text(self) -> str:
        q = "&".join(f"{k}={v}" for k, v in _ident(self.query))
        return f"{self.backend} {self.method} {self.path}" + (f"?{q}" if q else "")


class ReplayServer:
    """Serves one scenario's recordings at a time: `http://127.0.0.1:PORT/<backend>/...`."""

    def __init__(self) -> None:
        self._exact: dict[tuple[str, str, str, tuple[tuple[str, str], ...]], Exchange] = {}
        self._loose: dict[tuple[str, str, str, str], Exchange] = {}
        self.unmatched: list[Unmatched] = []
        self.matched = 0
        self._runner: web.AppRunner | None = None
        self.base = ""

    def load(self, exchanges: Sequence[Exchange]) -> None:
        self._exact.clear()
        self._loose.clear()
        self.unmatched = []
        self.matched = 0
        for x in exchanges:
            self._exact.setdefault((x.backend, x.method, x.path, _ident(x.query)), x)
            self._loose.setdefault((x.backend, x.method, x.path, _loose(x.query)), x)

    def lookup(
        self, backend: str, method: str, path: str, params: Mapping[str, str | list[str]]
    ) -> Exchange | None:
        """The recording for this request: same backend, method, path and every non-time
        parameter; failing that, same path and the same `query`/`q` (a changed limit or
        direction still gets the recorded answer). Unmatched requests are remembered."""
        hit = self._exact.get((backend, method, path, _ident(params)))
        if hit is None:
            loose = _loose(params)
            hit = self._loose.get((backend, method, path, loose)) if loose else None
        if hit is None:
            self.unmatched.append(
                Unmatched(backend=backend, method=method, path=path, query=dict(params))
            )
        else:
            self.matched += 1
        return hit

    def url(self, backend: str) -> str:
        return f"{self.base}/{backend}"

    def sources_config(self) -> SourcesConfig:
        """The gatherer configuration of the recordings (defaults), pointed at this server."""
        return SourcesConfig.model_validate({b: {"url": self.url(b)} for b in BACKENDS})

    async def start(self, host: str = "127.0.0.1") -> str:
        app = web.Application()
        app.router.add_route("*", "/{backend}/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"http://{host}:{port}"
        return self.base

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> ReplayServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _handle(self, request: web.Request) -> web.Response:
        backend = request.match_info["backend"]
        path = "/" + request.match_info["tail"]
        params: dict[str, str | list[str]] = {}
        pairs = list(request.query.items())
        if request.method == "POST":
            pairs += [(k, str(v)) for k, v in (await request.post()).items()]
        for k, v in pairs:
            prev = params.get(k)
            params[k] = v if prev is None else [*prev, v] if isinstance(prev, list) else [prev, v]
        hit = self.lookup(backend, request.method, path, params)
        if hit is None:
            status, ctype, body = empty_answer(backend, path)
        else:
            status, ctype, body = hit.status, hit.content_type, hit.raw()
        headers = {"Content-Type": ctype} if ctype else {}
        return web.Response(status=status, body=body, headers=headers)


class ReplayDeploys:
    """CI deploy events as recorded (the gatherer's `DeploySource`)."""

    def __init__(self, server: ReplayServer) -> None:
        self.server = server

    async def recent(self, service: str, since: datetime, until: datetime) -> list[DeployEvent]:
        params = {"service": service, "since": since.isoformat(), "until": until.isoformat()}
        hit = self.server.lookup("ci", "CALL", "/deploys/recent", params)
        if hit is None or not isinstance(hit.body, list):
            return []
        return [DeployEvent.model_validate(e) for e in hit.body]


# --- scoring --------------------------------------------------------------------------------


def op_matches(a: str | None, b: str | None) -> bool:
    """Equal, or one contains the other, ignoring case (`SELECT orders` ~ `SELECT orders
    WHERE user_id=$1`)."""
    if not a or not b:
        return False
    x, y = a.strip().lower(), b.strip().lower()
    return x == y or x in y or y in x


def _names(h: Hypothesis, t: TruthOp) -> bool:
    return (
        h.kind == "cause"
        and (h.service or "").lower() == t.service.lower()
        and op_matches(h.operation, t.operation)
    )


def top1_correct(analysis: Analysis, truth: Truth) -> bool:
    top = analysis.top
    if truth.unknown:
        return (top.kind == "unknown") if top is not None else analysis.unknown
    targets = truth.targets()
    if top is None or not targets:
        return False
    first = next((t for t in targets if _names(top, t)), None)
    if first is None:
        return False
    rest = [t for t in targets if t is not first]
    return all(any(_names(h, t) for h in analysis.hypotheses) for t in rest)


def deploy_correct(analysis: Analysis, truth: Truth) -> bool:
    suspects = [v for v in analysis.deploys if v.verdict == "suspect"]
    td = truth.deploy
    if td is None:
        return not suspects

    def same(v: Any) -> bool:
        if v.service != td.service:
            return False
        if td.version and v.version:
            return bool(v.version == td.version)
        if td.commit and v.commit:
            return bool(v.commit.startswith(td.commit) or td.commit.startswith(v.commit))
        return not (td.version or td.commit)

    return any(same(v) for v in suspects) and all(v.service == td.service for v in suspects)


def _deploy_contexts(bundle: EvidenceBundle) -> list[Any]:
    d = bundle.deploy
    return list(d) if isinstance(d, list) else [d] if d is not None else []


def evidence_facts(bundle: EvidenceBundle, truth: Truth) -> dict[str, bool]:
    """Which of the truth's facts the bundle holds: a span item (or culprit) for each truth
    operation, the truth deploy's version among that service's deploy signals, the flag
    among culprit and span attributes."""
    facts: dict[str, bool] = {}
    culprits = list(getattr(bundle, "culprits", None) or [])
    if bundle.culprit is not None and bundle.culprit not in culprits:
        culprits.append(bundle.culprit)
    spans = [i.span for i in bundle.items if i.kind == "span" and i.span is not None]
    for t in truth.targets():
        facts[f"span {t.service}:{t.operation}"] = any(
            s.service == t.service and op_matches(s.name, t.operation) for s in spans
        ) or any(c.service == t.service and op_matches(c.operation, t.operation) for c in culprits)
    td = truth.deploy
    if td is not None:
        signals = []
        for ctx in _deploy_contexts(bundle):
            if ctx.service == td.service:
                signals.extend(ctx.signals)
                signals.append(
                    type(
                        "Current",
                        (),
                        {
                            "version": ctx.current_version,
                            "commit": ctx.current_commit,
                            "service": ctx.service,
                        },
                    )
                )
        signals += [i.deploy for i in bundle.items if i.kind == "deploy" and i.deploy is not None]
        facts[f"deploy {td.service} {td.version or td.commit}"] = any(
            s.service == td.service
            and (
                (td.version is not None and s.version == td.version)
                or (td.version is None and td.commit is not None and s.commit == td.commit)
            )
            for s in signals
        )
    if truth.flag:
        key = truth.flag
        bare = key.removeprefix("feature_flag.")
        found = any(key in c.key_attributes for c in culprits) or any(
            key in s.attributes or key in s.feature_flags for s in spans
        )
        for i in bundle.items:
            attr = getattr(i, "attribute", None)
            if attr is not None and getattr(attr, "key", None) in (key, bare):
                found = True
        facts[f"flag {key}"] = found
    return facts


# --- the run ----------------------------------------------------------------------------------


class ScenarioResult(BaseModel):
    name: str
    top1_correct: bool
    evidence_recall: float | None
    deploy_correct: bool
    tokens: int = 0
    calls: int = 0
    latency_ms: float = 0.0
    gather_ms: float = 0.0
    unknown_expected: bool = False
    top: str = ""
    hypotheses: list[str] = Field(default_factory=list)
    deploy_verdicts: list[str] = Field(default_factory=list)
    facts: dict[str, bool] = Field(default_factory=dict)
    source: Literal["responses", "bundle"] = "responses"
    replayed_requests: int = 0
    unmatched_requests: int = 0
    unmatched: list[str] = Field(default_factory=list)
    missing: list[str] = Field(default_factory=list)
    llm_status: str | None = None
    error: str | None = None


class EvalSummary(BaseModel):
    top1: int
    total: int
    deploy_correct: int
    unknown_correct: int
    unknown_total: int
    with_deploy_correct: int
    with_deploy_total: int
    evidence_recall: float | None
    tokens: int
    calls: int
    latency_ms_p50: float
    latency_ms_max: float
    gather_ms_total: float
    unmatched_requests: int
    errors: int


class EvalReport(BaseModel):
    scenarios: list[ScenarioResult]
    summary: EvalSummary


def _short(h: Hypothesis) -> str:
    where = f"{h.service}:{h.operation}" if h.service or h.operation else h.kind
    return f"{where} ({h.confidence:.2f}, {h.source})"


def _default_analyser() -> Analyse:
    try:
        from enricher.analysis.hypotheses import analyse_bundle
    except ImportError as exc:
        raise RuntimeError(f"the deterministic analyzer is not available: {exc}") from None
    return analyse_bundle


class _LLM:
    """The LLM stage as the pipeline runs it, but waited for in full (an eval wants its
    answer, not the page deadline's)."""

    def __init__(self, config: Any) -> None:
        from enricher.analysis.grounding import merge
        from enricher.analysis.llm_stage import LLMStage

        self.config = config
        self.stage = LLMStage(config)
        self.merge = merge

    async def run(self, bundle: EvidenceBundle, det: Analysis) -> Analysis:
        loop = asyncio.get_running_loop()
        hyps, info = await self.stage.analyse(bundle, det, loop.time() + self.config.total_timeout)
        out = det.model_copy(deep=True)
        out.llm = info
        if info.status == "ok" and hyps:
            out.hypotheses = self.merge(det.hypotheses, hyps, bundle)
            out.unknown = out.hypotheses[0].kind == "unknown"
            out.summary = info.summary or out.hypotheses[0].statement
        return out


async def evaluate_scenario(
    sc: Scenario,
    server: ReplayServer,
    analyse: Analyse,
    llm: _LLM | None = None,
) -> ScenarioResult:
    truth = sc.spec.truth
    gather_ms = 0.0
    unmatched: list[Unmatched] = []
    replayed = 0
    if sc.bundle is not None:
        bundle = sc.bundle
    else:
        server.load(sc.exchanges or [])
        g = _gatherer(server)
        await g.start()
        try:
            t0 = time.perf_counter()
            bundle = await g.gather(sc.message, sc.spec.received_at, GATHER_BUDGET_S)
            gather_ms = (time.perf_counter() - t0) * 1000
        finally:
            await g.close()
        unmatched, replayed = list(server.unmatched), server.matched
    result = ScenarioResult(
        name=sc.spec.name,
        top1_correct=False,
        evidence_recall=None,
        deploy_correct=False,
        gather_ms=round(gather_ms, 1),
        unknown_expected=truth.unknown,
        source="bundle" if sc.bundle is not None else "responses",
        replayed_requests=replayed,
        unmatched_requests=len(unmatched),
        unmatched=[u.text() for u in unmatched][:20],
        missing=bundle.missing_reasons()[:20],
    )
    facts = evidence_facts(bundle, truth)
    result.facts = facts
    result.evidence_recall = round(sum(facts.values()) / len(facts), 3) if facts else None
    t1 = time.perf_counter()
    try:
        out = analyse(bundle)
        analysis: Analysis = await out if inspect.isawaitable(out) else out
        if llm is not None:
            analysis = await llm.run(bundle, analysis)
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"[:300]
        result.latency_ms = round((time.perf_counter() - t1) * 1000, 2)
        return result
    result.latency_ms = round((time.perf_counter() - t1) * 1000, 2)
    result.top1_correct = top1_correct(analysis, truth)
    result.deploy_correct = deploy_correct(analysis, truth)
    result.top = _short(analysis.top) if analysis.top is not None else "(none)"
    result.hypotheses = [_short(h) for h in analysis.hypotheses[:6]]
    result.deploy_verdicts = [
        f"{v.service} {v.version or v.commit or '?'}: {v.verdict}" for v in analysis.deploys
    ]
    if analysis.llm is not None:
        result.tokens = analysis.llm.input_tokens + analysis.llm.output_tokens
        result.calls = analysis.llm.calls
        result.llm_status = analysis.llm.status
    return result


def _gatherer(server: ReplayServer) -> Any:
    from enricher.evidence import Gatherer

    return Gatherer(server.sources_config(), deploys=ReplayDeploys(server))


def summarize(results: Sequence[ScenarioResult], truths: Sequence[Truth]) -> EvalSummary:
    recalls = [r.evidence_recall for r in results if r.evidence_recall is not None]
    lat = [r.latency_ms for r in results]
    with_deploy = [r for r, t in zip(results, truths, strict=True) if t.deploy is not None]
    return EvalSummary(
        top1=sum(r.top1_correct for r in results),
        total=len(results),
        deploy_correct=sum(r.deploy_correct for r in results),
        unknown_correct=sum(r.top1_correct for r in results if r.unknown_expected),
        unknown_total=sum(r.unknown_expected for r in results),
        with_deploy_correct=sum(r.deploy_correct for r in with_deploy),
        with_deploy_total=len(with_deploy),
        evidence_recall=round(statistics.fmean(recalls), 3) if recalls else None,
        tokens=sum(r.tokens for r in results),
        calls=sum(r.calls for r in results),
        latency_ms_p50=round(statistics.median(lat), 2) if lat else 0.0,
        latency_ms_max=round(max(lat), 2) if lat else 0.0,
        gather_ms_total=round(sum(r.gather_ms for r in results), 1),
        unmatched_requests=sum(r.unmatched_requests for r in results),
        errors=sum(r.error is not None for r in results),
    )


async def evaluate(
    scenarios: Sequence[Scenario],
    analyse: Analyse | None = None,
    llm_config: Any = None,
) -> EvalReport:
    """Every scenario in turn (timings are not shared with another scenario's work)."""
    analyse = analyse or _default_analyser()
    llm = _LLM(llm_config) if llm_config is not None else None
    results: list[ScenarioResult] = []
    async with ReplayServer() as server:
        if llm is not None:
            await llm.stage.start()
        try:
            for sc in scenarios:
                results.append(await evaluate_scenario(sc, server, analyse, llm))
        finally:
            if llm is not None:
                await llm.stage.close()
    return EvalReport(
        scenarios=results, summary=summarize(results, [s.spec.truth for s in scenarios])
    )


# --- output -----------------------------------------------------------------------------------


def table(report: EvalReport) -> str:
    def yn(b: bool) -> str:
        return "yes" if b else "NO"

    head = (
        "scenario",
        "top1",
        "recall",
        "deploy",
        "tokens",
        "calls",
        "gather",
        "analyse",
        "unmatched",
        "top hypothesis",
    )
    rows = [head]
    for r in report.scenarios:
        rows.append(
            (
                r.name,
                yn(r.top1_correct),
                "-" if r.evidence_recall is None else f"{r.evidence_recall:.2f}",
                yn(r.deploy_correct),
                str(r.tokens),
                str(r.calls),
                f"{r.gather_ms:.0f}ms",
                f"{r.latency_ms:.1f}ms",
                str(r.unmatched_requests),
                (f"ERROR {r.error}" if r.error else r.top)[:60],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head) - 1)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in rows
    ]
    s = report.summary
    recall = "-" if s.evidence_recall is None else f"{s.evidence_recall:.2f}"
    lines.append("")
    lines.append(
        f"top-1 {s.top1}/{s.total}; unknown {s.unknown_correct}/{s.unknown_total}; deploy "
        f"{s.deploy_correct}/{s.total} (with a deploy {s.with_deploy_correct}/"
        f"{s.with_deploy_total}); evidence recall {recall}; LLM {s.tokens} tokens in "
        f"{s.calls} calls; analysis p50 {s.latency_ms_p50:.1f} ms, max {s.latency_ms_max:.1f} "
        f"ms; gather {s.gather_ms_total:.0f} ms in all; unmatched requests "
        f"{s.unmatched_requests}"
    )
    for r in report.scenarios:
        for u in r.unmatched[:5]:
            lines.append(f"unmatched in {r.name}: {u}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="enricher eval",
        description="Score the root-cause stage on recorded scenarios (tests/scenarios).",
    )
    p.add_argument(
        "dirs",
        nargs="+",
        type=Path,
        metavar="DIR",
        help="a scenario directory, or a directory of them",
    )
    p.add_argument(
        "--json",
        dest="json_file",
        type=Path,
        metavar="FILE",
        help="also write the results as JSON ('-' for stdout)",
    )
    p.add_argument(
        "--llm",
        action="store_true",
        help="also run the LLM stage (analysis.llm of --config) and merge",
    )
    p.add_argument("--config", type=Path, metavar="FILE", help="enricher YAML configuration")
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="evaluate only this scenario (repeatable)",
    )
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2
    llm_config = None
    if args.llm:
        if args.config is None:
            print("enricher eval: --llm needs --config FILE with analysis.llm", file=sys.stderr)
            return 2
        from enricher.config import ConfigError, load_config

        try:
            cfg = load_config(args.config)
        except ConfigError as exc:
            print(f"enricher eval: {args.config}: invalid configuration:\n{exc}", file=sys.stderr)
            return 2
        if cfg.analysis.llm is None:
            print(f"enricher eval: {args.config} has no analysis.llm section", file=sys.stderr)
            return 2
        llm_config = cfg.analysis.llm
    elif args.config is not None:
        print("enricher eval: --config is read only with --llm", file=sys.stderr)
    try:
        paths = find_scenarios(args.dirs)
        if args.only:
            paths = [x for x in paths if x.name in args.only]
            if not paths:
                raise ScenarioError(f"no scenario named {', '.join(args.only)}")
        scenarios = [load_scenario(x) for x in paths]
    except ScenarioError as exc:
        print(f"enricher eval: {exc}", file=sys.stderr)
        return 2
    try:
        analyse = _default_analyser()
    except RuntimeError as exc:
        print(f"enricher eval: {exc}", file=sys.stderr)
        return 1
    report = asyncio.run(evaluate(scenarios, analyse, llm_config))
    print(table(report))
    if args.json_file is not None:
        doc = report.model_dump(mode="json")
        text = json.dumps(doc, indent=2) + "\n"
        if str(args.json_file) == "-":
            sys.stdout.write(text)
        else:
            try:
                args.json_file.write_text(text, encoding="utf-8")
            except OSError as exc:
                print(f"enricher eval: {args.json_file}: {exc.strerror}", file=sys.stderr)
                return 2
    return 1 if report.summary.errors else 0

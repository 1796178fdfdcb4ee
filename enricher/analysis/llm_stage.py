"""The LLM half of the root-cause stage: one bounded, cached, grounded model consultation.

Why it never raises and always returns by the deadline: the deterministic analysis has
already answered; the model may only add to it. Whatever happens (a hang, 429s, garbage, an
open breaker), `analyse` returns by `deadline` with the grounded claims it got, or none and
an `LLMInfo` saying why (status failed|timeout|circuit_open), which the page shows and
`enricher_analysis_fallbacks_total{reason}` counts.

Why a cache and single-flight: during an alert storm one incident produces many alerts
whose bundles are identical. An answer is reused for the same bundle content
(`bundle_hash`), and identical calls arriving while one is in flight wait for it instead of
asking again. Only successful answers are cached: a failure should be retried next time.

How a call goes:
- One call when the prompt fits `max_input_tokens` (the normal case), streamed when
  `stream` is set: the judgement is the call a person may wait on, TTFT matters there.
- Otherwise scatter-gather (`prompt.py`): chunk (map) calls over whole items, not streamed
  (internal, throughput matters), at most `chunk_concurrency` at a time, on `chunk_model`
  when set; they get 60% of the time left, the judgement call the rest. A failed chunk is
  counted and the judgement works from the others.
- `response_format` json_schema first; a 400 to it is retried once as plain text (and the
  server remembered as not supporting it once that text call succeeds). An answer that does
  not parse or validate gets one repair call (the bad answer and the error sent back).
- Grounding (`grounding.py`) drops every claim not backed by the bundle; kept claims that
  name a deterministic hypothesis's service and operation are marked `confirms`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from enricher.analysis import prompt
from enricher.analysis.config import LLMConfig
from enricher.analysis.grounding import confirmed_target, ground, op_key
from enricher.analysis.llm import ChatClient, ChatRequest, ChatResult, LLMError, ResponseMode
from enricher.analysis.model import Analysis, Hypothesis, LLMInfo
from enricher.analysis.prompt import (
    ANSWER_SCHEMA,
    ANSWER_SCHEMA_NAME,
    CHUNK_SCHEMA,
    CHUNK_SCHEMA_NAME,
    AnswerError,
    ChunkFindings,
    LLMAnswer,
    PromptCall,
    PromptError,
)
from enricher.bundle.model import EvidenceBundle
from enricher.metrics import Metrics

log = logging.getLogger("enricher.analysis.llm")

# The stage's own work (grounding, building LLMInfo) happens after the last call; calls end
# this much before the caller's deadline so the answer is handed back in time.
_DEADLINE_MARGIN = 0.02
_MAP_SHARE = 0.6
_MIN_TIME = 0.05

Result = tuple[list[Hypothesis], LLMInfo]


def bundle_hash(bundle: EvidenceBundle) -> str:
    """sha256 of the bundle's content, without the gather's timing stats (they differ
    between two gathers of the same evidence)."""
    raw = bundle.model_dump_json(exclude={"stats"})
    return hashlib.sha256(raw.encode()).hexdigest()


def _deterministic_digest(hyps: Sequence[Hypothesis]) -> str:
    rows = [
        [h.kind, h.statement, h.service, h.operation, round(h.confidence, 3), h.evidence_ids]
        for h in hyps
    ]
    return json.dumps(rows, separators=(",", ":"))


class _Tally:
    """Counts of one analysis, filled in as its calls return."""

    def __init__(self) -> None:
        self.calls = 0
        self.retries = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.repairs = 0
        self.ttft_ms: float | None = None
        self.mode: str = ""


class LLMStage:
    def __init__(self, config: LLMConfig, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics
        self.client = ChatClient(config)
        self._cache: OrderedDict[str, Result] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[Result]] = {}
        # Set once a text-mode call succeeded right after a json_schema 400.
        self._schema_rejected = False

    async def start(self) -> None:
        await self.client.start()

    async def close(self) -> None:
        tasks = list(self._inflight.values())
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._inflight.clear()
        await self.client.close()

    def cache_key(self, bundle: EvidenceBundle, deterministic: Analysis) -> str:
        """The bundle's hash, plus what else the prompt depends on: the deterministic
        hypotheses and the models and budget configured."""
        c = self.config
        parts = [
            bundle_hash(bundle),
            _deterministic_digest(deterministic.hypotheses),
            c.model,
            c.chunk_model or "",
            str(c.max_input_tokens),
        ]
        return hashlib.sha256("\x00".join(parts).encode()).hexdigest()

    async def analyse(
        self, bundle: EvidenceBundle, deterministic: Analysis, deadline: float
    ) -> tuple[list[Hypothesis], LLMInfo]:
        """Grounded LLM hypotheses (possibly none) and how the consultation went."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        try:
            key = self.cache_key(bundle, deterministic)
        except Exception as exc:  # a bundle that cannot be serialised is a bug, not a page
            log.exception("llm: cannot hash the bundle")
            info = self._finish(LLMInfo(model=self.config.model), "failed", f"internal: {exc}", t0)
            return self._record([], info)
        hit = self._cache.get(key) if self.config.cache_size else None
        if hit is not None:
            self._cache.move_to_end(key)
            self._count_hit("cache")
            return self._record(*self._copy(hit, t0, cached=True))

        task = self._inflight.get(key)
        joined = task is not None
        if task is None:
            task = asyncio.create_task(self._run(key, bundle, deterministic, deadline))
            self._inflight[key] = task
            task.add_done_callback(lambda _t, k=key: self._inflight.pop(k, None))
        else:
            self._count_hit("inflight")
        try:
            hyps, info = await asyncio.wait_for(
                asyncio.shield(task), timeout=max(0.0, deadline - loop.time())
            )
        except TimeoutError:
            info = LLMInfo(model=self.config.model)
            self._finish(info, "timeout", "deadline reached waiting for the LLM", t0)
            return self._record([], info)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and not (current is not None and current.cancelling()):
                info = LLMInfo(model=self.config.model)
                self._finish(info, "failed", "internal: the LLM stage was closed", t0)
                return self._record([], info)
            raise
        if joined:
            return self._record(*self._copy((hyps, info), t0, shared=True))
        if self.metrics is not None and info.dropped_claims:
            self.metrics.llm_dropped_claims.inc(info.dropped_claims)
        return self._record([h.model_copy(deep=True) for h in hyps], info.model_copy(deep=True))

    # --- one consultation -----------------------------------------------------------------

    async def _run(
        self, key: str, bundle: EvidenceBundle, deterministic: Analysis, deadline: float
    ) -> Result:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        info = LLMInfo(model=self.config.model, status="pending")
        tally = _Tally()
        inner = deadline - _DEADLINE_MARGIN
        hyps: list[Hypothesis] = []
        status, reason = "ok", ""
        try:
            if inner - t0 < _MIN_TIME:
                raise LLMError("timeout", "no time left for an LLM call")
            if not self.client.breaker.would_allow():
                breaker = self.client.breaker
                raise LLMError(
                    "circuit_open",
                    f"{breaker.consecutive} consecutive failures; "
                    f"next trial in {breaker.retry_in():.1f}s",
                )
            async with asyncio.timeout_at(inner):
                answer = await self._consult(bundle, deterministic, inner, info, tally)
            grounded = ground(answer, bundle, model=self.config.model)
            hyps = grounded.kept
            for h in hyps:
                target = confirmed_target(h, deterministic.hypotheses)
                if target is not None and op_key(target) is not None:
                    h.confirms = f"{target.service}:{target.operation}"
            info.summary = answer.summary[:2000]
            info.unresolved = [u[:300] for u in answer.unresolved[:10]]
            info.kept_claims = len(hyps)
            info.dropped_claims = len(grounded.dropped)
            info.dropped = grounded.dropped
        except LLMError as exc:
            status = {"timeout": "timeout", "circuit_open": "circuit_open"}.get(
                exc.reason, "failed"
            )
            reason = f"{exc.reason}: {exc.detail}"
            tally.retries += exc.retries
        except TimeoutError:
            status, reason = "timeout", "deadline reached"
        except AnswerError as exc:
            status, reason = "failed", f"malformed: {exc}"
            self._fail_metric("malformed")
        except PromptError as exc:
            status, reason = "failed", f"budget: {exc}"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never let the stage take the page down
            log.exception("llm: analysis failed")
            status, reason = "failed", f"internal: {type(exc).__name__}: {exc}"
        info.calls = tally.calls
        info.retries = tally.retries
        info.input_tokens = tally.input_tokens
        info.output_tokens = tally.output_tokens
        info.repairs = tally.repairs
        info.ttft_ms = tally.ttft_ms
        info.response_format = tally.mode
        self._finish(info, status, reason, t0)
        if status == "ok" and self.config.cache_size:
            self._cache[key] = ([h.model_copy(deep=True) for h in hyps], info.model_copy(deep=True))
            while len(self._cache) > self.config.cache_size:
                self._cache.popitem(last=False)
        return hyps, info

    async def _consult(
        self,
        bundle: EvidenceBundle,
        deterministic: Analysis,
        deadline: float,
        info: LLMInfo,
        tally: _Tally,
    ) -> LLMAnswer:
        plan = prompt.plan(bundle, deterministic.hypotheses, self.config)
        info.omitted_ids = plan.omitted_ids
        if plan.mode == "single":
            return await self._ask(
                plan.calls[0], "judge", LLMAnswer, self.config.model, True, deadline, tally
            )
        loop = asyncio.get_running_loop()
        info.chunks = len(plan.calls)
        map_deadline = loop.time() + (deadline - loop.time()) * _MAP_SHARE
        sem = asyncio.Semaphore(self.config.chunk_concurrency)
        model = self.config.chunk_model or self.config.model

        async def one(call: PromptCall) -> ChunkFindings:
            async with sem, asyncio.timeout_at(map_deadline):
                return await self._ask(
                    call, "chunk", ChunkFindings, model, False, map_deadline, tally
                )

        results = await asyncio.gather(*(one(c) for c in plan.calls), return_exceptions=True)
        findings: list[ChunkFindings] = []
        errors: list[BaseException] = []
        for r in results:
            if isinstance(r, ChunkFindings):
                findings.append(_keep_known(r, bundle))
            elif isinstance(r, asyncio.CancelledError):
                raise r
            else:
                errors.append(r)
        info.failed_chunks = len(errors)
        if not findings:
            first = errors[0]
            if isinstance(first, LLMError | AnswerError | TimeoutError):
                raise first
            raise LLMError("server_error", f"every chunk failed: {first!r}")
        if errors:
            info.reason = f"{len(errors)} of {len(plan.calls)} chunk calls failed: {errors[0]}"
        merge = prompt.build_merge(bundle, deterministic.hypotheses, findings, self.config)
        return await self._ask(merge, "merge", LLMAnswer, self.config.model, True, deadline, tally)

    async def _ask(
        self,
        call: PromptCall,
        task: prompt.Task,
        shape: type[Any],
        model: str,
        judgement: bool,
        deadline: float,
        tally: _Tally,
    ) -> Any:
        """One call, its json_schema fallback and its repair; returns a validated `shape`."""
        cfg = self.config
        mode: ResponseMode = cfg.response_format
        if mode == "json_schema" and self._schema_rejected:
            mode = "none"
        max_tokens = cfg.max_output_tokens if judgement else max(200, cfg.max_output_tokens // 2)
        stream = cfg.stream and judgement
        schema_name, schema = (
            (ANSWER_SCHEMA_NAME, ANSWER_SCHEMA)
            if shape is LLMAnswer
            else (CHUNK_SCHEMA_NAME, CHUNK_SCHEMA)
        )

        def request(c: PromptCall, m: ResponseMode, n: int) -> ChatRequest:
            return ChatRequest(
                messages=c.messages,
                model=model,
                max_tokens=n,
                temperature=cfg.temperature,
                stream=stream,
                mode=m,
                schema_name=schema_name,
                json_schema=schema,
                phase=c.phase,
            )

        try:
            res = await self._call(request(call, mode, max_tokens), deadline, tally)
        except LLMError as exc:
            if not (mode == "json_schema" and exc.reason == "bad_request" and exc.status == 400):
                raise
            log.info("llm: json_schema rejected (%s); asking for JSON in text", exc.detail)
            mode = "none"
            res = await self._call(request(call, mode, max_tokens), deadline, tally)
            self._schema_rejected = True
        tally.mode = "json_schema" if mode == "json_schema" else "text" if mode == "none" else mode
        try:
            return prompt.parse_answer(res.content, shape)
        except AnswerError as exc:
            error = str(exc)
            if res.finish_reason == "length":
                error += " (the answer was cut at the token limit; be shorter)"
            repair = prompt.build_repair(call, res.content, error, task, cfg)
            tally.repairs += 1
            n = max_tokens * 2 if res.finish_reason == "length" else max_tokens
            fixed = await self._call(request(repair, mode, n), deadline, tally)
            return prompt.parse_answer(fixed.content, shape)

    async def _call(self, req: ChatRequest, deadline: float, tally: _Tally) -> ChatResult:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        tally.calls += 1
        try:
            res = await self.client.complete(req, deadline)
        except LLMError as exc:
            self._observe_call(req.phase, exc.reason, loop.time() - t0, None)
            self._fail_metric(exc.reason)
            if exc.retries and self.metrics is not None:
                self.metrics.llm_retries.inc(exc.retries)
            tally.retries += exc.retries
            exc.retries = 0  # counted here; the stage must not count it again
            raise
        tally.retries += res.retries
        tally.input_tokens += res.usage.prompt_tokens
        tally.output_tokens += res.usage.completion_tokens
        # The judgement's TTFT is the one a reader waits on; chunk calls are internal.
        if req.phase in ("single", "merge"):
            tally.ttft_ms = res.ttft_ms
        self._observe_call(req.phase, "ok", loop.time() - t0, res)
        return res

    # --- bookkeeping ----------------------------------------------------------------------

    def _observe_call(
        self, phase: str, outcome: str, seconds: float, res: ChatResult | None
    ) -> None:
        m = self.metrics
        if m is None:
            return
        m.child(m.llm_calls, phase, outcome).inc()
        m.child(m.llm_call_seconds, phase).observe(seconds)
        if res is None:
            return
        if res.ttft_ms is not None:
            m.child(m.llm_ttft, phase).observe(res.ttft_ms / 1000.0)
        tps = res.output_tokens_per_s
        if tps is not None:
            m.child(m.llm_tokens_per_s, phase).observe(tps)
        m.child(m.llm_tokens, "input").inc(res.usage.prompt_tokens)
        m.child(m.llm_tokens, "output").inc(res.usage.completion_tokens)
        if res.retries:
            m.llm_retries.inc(res.retries)

    def _fail_metric(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.child(self.metrics.llm_failures, reason).inc()

    def _count_hit(self, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.child(self.metrics.llm_cache_hits, kind).inc()

    def _finish(self, info: LLMInfo, status: Any, reason: str, t0: float) -> LLMInfo:
        loop = asyncio.get_running_loop()
        info.status = status
        if reason:
            info.reason = reason if not info.reason else f"{reason}; {info.reason}"
        info.latency_ms = round((loop.time() - t0) * 1000.0, 1)
        return info

    def _record(self, hyps: list[Hypothesis], info: LLMInfo) -> Result:
        """Per-alert metrics, once for each answer handed back (cached and shared too)."""
        m = self.metrics
        if m is not None:
            m.child(m.llm_seconds, str(info.status)).observe(info.latency_ms / 1000.0)
            fallback = _fallback_reason(info)
            if fallback:
                m.child(m.analysis_fallbacks, fallback).inc()
        return hyps, info

    def _copy(
        self, result: Result, t0: float, cached: bool = False, shared: bool = False
    ) -> Result:
        """A reused answer: the same claims, and an LLMInfo that says no request was sent."""
        hyps, info = result
        loop = asyncio.get_running_loop()
        out = info.model_copy(
            deep=True,
            update={
                "cached": cached or info.cached,
                "shared": shared,
                "calls": 0,
                "retries": 0,
                "repairs": 0,
                "input_tokens": 0,
                "output_tokens": 0,
                "ttft_ms": None,
                "latency_ms": round((loop.time() - t0) * 1000.0, 1),
            },
        )
        return [h.model_copy(deep=True) for h in hyps], out


def _fallback_reason(info: LLMInfo) -> str:
    """Why the page will carry the deterministic analysis alone, or "" when it won't."""
    if info.status == "ok":
        return "" if info.kept_claims else "no_grounded_claims"
    if info.status in ("timeout", "circuit_open"):
        return str(info.status)
    head = info.reason.split(":", 1)[0].strip()
    return head or "failed"


def _keep_known(f: ChunkFindings, bundle: EvidenceBundle) -> ChunkFindings:
    """Chunk findings with unknown ids removed: the judgement sees only grounded facts."""
    known = {it.id for it in bundle.items}
    facts = []
    for fact in f.facts:
        ids = [i for i in fact.evidence_ids if i in known]
        if ids:
            facts.append(fact.model_copy(update={"evidence_ids": ids}))
    cands = []
    for c in f.candidates:
        ids = [i for i in c.evidence_ids if i in known]
        if ids:
            cands.append(c.model_copy(update={"evidence_ids": ids}))
    return ChunkFindings(facts=facts, candidates=cands)

"""The pipeline's analyse stage: the deterministic answer always, the LLM's when it is in time.

Why this order: the deterministic analyzer costs milliseconds and cannot fail on the
network, so it is the page's answer by default. The LLM runs after it, bounded by what is
left of the page deadline; when it answers in time its grounded hypotheses are merged in.
When it does not, the page goes out with the deterministic answer (`llm.status:
"pending"`) and the LLM call goes on within its own time limit; its answer, when it comes,
is handed to `on_late` (the pipeline stores it on the page, with `updated_at`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol

from enricher.analysis.hypotheses import analyse_bundle
from enricher.analysis.model import Analysis, Hypothesis, LLMInfo
from enricher.bundle.model import EvidenceBundle
from enricher.metrics import Metrics
from enricher.pipeline.stages import AnalyseInput, AnalyseOutput

log = logging.getLogger("enricher.analysis")

# Kept back from the stage's budget so the deterministic answer is never lost to the
# stage runner's own timeout.
_MARGIN_S = 0.05
_MARGIN_FRACTION = 0.05

LateHandler = Callable[[Analysis], Awaitable[None]]


class LLMAnalyser(Protocol):
    """What the stage needs of the LLM stage (`enricher.analysis.llm_stage.LLMStage`)."""

    async def analyse(
        self, bundle: EvidenceBundle, deterministic: Analysis, deadline: float
    ) -> tuple[list[Hypothesis], LLMInfo]: ...


def no_evidence_analysis(why: str) -> Analysis:
    h = Hypothesis(statement=f"Unknown: {why}", kind="unknown", confidence=0.0)
    return Analysis(summary=h.statement, unknown=True, unknown_reason=why, hypotheses=[h])


class RootCauseAnalyser:
    """Implements `enricher.pipeline.stages.Analyser`."""

    def __init__(
        self,
        llm: LLMAnalyser | None = None,
        metrics: Metrics | None = None,
        llm_total_timeout: float = 60.0,
        merge: Callable[..., list[Hypothesis]] | None = None,
    ) -> None:
        self.llm = llm
        self.metrics = metrics
        self.llm_total_timeout = llm_total_timeout
        self.merge = merge
        self._late: set[asyncio.Task[None]] = set()

    async def analyse(self, inp: AnalyseInput) -> AnalyseOutput:
        bundle = inp.bundle
        if bundle is None:
            return AnalyseOutput(
                analysis=no_evidence_analysis(
                    "no evidence was gathered (no evidence source is configured, or the "
                    "gather stage gave nothing)"
                )
            )
        det = analyse_bundle(bundle)
        if self.llm is None:
            return AnalyseOutput(analysis=det)
        loop = asyncio.get_running_loop()
        wait = max(0.0, inp.budget_s - max(_MARGIN_S, _MARGIN_FRACTION * inp.budget_s))
        llm_deadline = loop.time() + max(wait, self.llm_total_timeout)
        task = asyncio.ensure_future(self.llm.analyse(bundle, det, llm_deadline))
        done, _ = await asyncio.wait({task}, timeout=wait)
        if task in done and not task.cancelled() and task.exception() is None:
            return AnalyseOutput(analysis=self._merged(det, *task.result(), bundle))
        if task in done:
            exc = task.exception() if not task.cancelled() else None
            det.llm = LLMInfo(status="failed", reason=f"{type(exc).__name__}: {exc}"[:300])
            self._fallback("error")
            return AnalyseOutput(analysis=det, reasons=["analyse: the LLM stage failed"])
        det.llm = LLMInfo(
            status="pending",
            reason=f"no answer within the page's {wait:.1f}s; the deterministic answer was "
            "paged and a later answer is stored on the page",
        )
        self._fallback("deadline")
        if inp.on_late is not None:
            late = asyncio.ensure_future(self._finish_late(task, det, bundle, inp.on_late))
            self._late.add(late)
            late.add_done_callback(self._late.discard)
        else:
            task.cancel()
        return AnalyseOutput(analysis=det)

    def _merged(
        self, det: Analysis, hyps: list[Hypothesis], info: LLMInfo, bundle: EvidenceBundle
    ) -> Analysis:
        out = det.model_copy(deep=True)
        out.llm = info
        if info.status == "ok" and hyps:
            out.hypotheses = (
                self.merge(det.hypotheses, hyps, bundle) if self.merge else det.hypotheses
            )
            top = out.hypotheses[0]
            out.summary = info.summary or top.statement
            out.unknown = top.kind == "unknown"
        # (a failed LLM answer is counted as a fallback by the LLM stage itself)
        return out

    def _fallback(self, reason: str) -> None:
        """Fallbacks the LLM stage cannot see: the page deadline passed, or it raised."""
        if self.metrics is not None:
            self.metrics.child(self.metrics.analysis_fallbacks, reason).inc()

    async def _finish_late(
        self,
        task: asyncio.Future[tuple[list[Hypothesis], LLMInfo]],
        det: Analysis,
        bundle: EvidenceBundle,
        on_late: LateHandler,
    ) -> None:
        try:
            hyps, info = await task
        except Exception as exc:
            log.warning("late LLM analysis failed", extra={"error": f"{exc!r}"[:300]})
            return
        updated = self._merged(det, hyps, info, bundle)
        updated.updated_at = datetime.now(UTC)
        try:
            await on_late(updated)
        except Exception:
            log.exception("storing the late analysis failed")

    async def drain(self, timeout: float) -> None:
        """Wait a little for late LLM answers (at shutdown), then drop the rest."""
        if self._late:
            _done, pending = await asyncio.wait(set(self._late), timeout=timeout)
            for t in pending:
                t.cancel()

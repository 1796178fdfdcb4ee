"""The pipeline's stages as plain async functions with typed inputs and outputs.

`gather` and `analyse` are seams: the evidence and root-cause capabilities plug their work in
through the `Gatherer` and `Analyser` protocols. Each stage runs under its own timeout (see
`run_stage`), so a slow backend costs evidence, never the page.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, Field

from enricher.analysis.model import Analysis
from enricher.bundle.model import EvidenceBundle
from enricher.intake.webhook import WebhookMessage
from enricher.metrics import Metrics
from enricher.notify.page import NO_SOURCES

log = logging.getLogger("enricher.pipeline")
tracer = trace.get_tracer("enricher.pipeline")
T = TypeVar("T")


class GatherInput(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    job_id: int
    message: WebhookMessage
    received_at: float
    budget_s: float


class GatherOutput(BaseModel):
    bundle: EvidenceBundle | None = None
    reasons: list[str] = Field(default_factory=list)


class AnalyseInput(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    message: WebhookMessage
    bundle: EvidenceBundle | None = None
    budget_s: float
    # Called with an analysis that completes after the page went out (a slow LLM), so the
    # stored page can carry it.
    on_late: Callable[[Analysis], Awaitable[None]] | None = None


class AnalyseOutput(BaseModel):
    analysis: Analysis | None = None
    reasons: list[str] = Field(default_factory=list)


class Gatherer(Protocol):
    async def gather(self, inp: GatherInput) -> GatherOutput: ...


class Analyser(Protocol):
    async def analyse(self, inp: AnalyseInput) -> AnalyseOutput: ...


class NoEvidence:
    """Used when no evidence source is configured: the page carries the alert alone."""

    async def gather(self, inp: GatherInput) -> GatherOutput:
        # Said in the page's reasons, so every reader (API, Slack, PagerDuty, HTML) learns
        # why there is no evidence; it does not mark the page degraded (`build_page`).
        return GatherOutput(reasons=[NO_SOURCES])


class NoAnalysis:
    async def analyse(self, inp: AnalyseInput) -> AnalyseOutput:
        return AnalyseOutput()


async def run_stage(
    name: str,
    make: Callable[[], Awaitable[T]],
    timeout: float,
    metrics: Metrics,
) -> tuple[T | None, str | None]:
    """Run one stage under its timeout. Returns (result, None) or (None, reason)."""
    t0 = time.perf_counter()
    outcome = "ok"
    reason: str | None = None
    result: T | None = None
    with tracer.start_as_current_span(f"enricher.{name}") as span:
        if timeout <= 0:
            outcome, reason = "timeout", f"{name}: skipped, the page deadline left no time"
        else:
            try:
                async with asyncio.timeout(timeout):  # no extra task, unlike wait_for
                    result = await make()
            except TimeoutError:
                outcome, reason = "timeout", f"{name}: no result within {timeout:.1f}s"
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("stage failed", extra={"stage": name})
                outcome, reason = "error", f"{name}: failed ({type(exc).__name__}: {exc})"[:300]
        span.set_attribute("enricher.outcome", outcome)
    metrics.child(metrics.stage_seconds, name).observe(time.perf_counter() - t0)
    metrics.child(metrics.stage_outcomes, name, outcome).inc()
    return result, reason

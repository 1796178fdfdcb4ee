"""What the root-cause stage says about an alert: ranked, cited hypotheses.

Why this shape: a page must never state a cause it cannot point at. Every hypothesis names
the bundle items it rests on (`evidence_ids`), the signals that set its confidence, and
where it came from (`source`): the deterministic analyzer, which always answers, or the
LLM, whose claims are kept only when every id they cite exists in the bundle. "Unknown" is
a first-class answer (`unknown: true` with the reason), ranked above any guess.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

ANALYSIS_VERSION = "1"

SignalName = Literal[
    "recurrence",
    "error_contrast",
    "latency_contrast",
    "absent_in_healthy",
    "exception",
    "feature_flag",
    "version_contrast",
    "log_template",
    "downstream_error",
    "deploy",
    "llm",
]


class Signal(BaseModel):
    """One reason a hypothesis is believed, with what it added to the confidence."""

    name: SignalName
    weight: float
    detail: str
    evidence_ids: list[str] = Field(default_factory=list)


class Hypothesis(BaseModel):
    statement: str
    service: str | None = None
    operation: str | None = None
    evidence_ids: list[str] = Field(default_factory=list)
    confidence: float = Field(ge=0.0, le=1.0)
    signals: list[Signal] = Field(default_factory=list)
    actions: list[str] = Field(default_factory=list)
    source: Literal["deterministic", "llm"] = "deterministic"
    # "unknown": nothing stood out; the statement says what was compared and what was missing.
    kind: Literal["cause", "unknown"] = "cause"
    # For an LLM hypothesis that confirms a deterministic one: its index in the merged list
    # before merging is lost, so the operation it confirms is named instead.
    confirms: str | None = None


class DeployVerdict(BaseModel):
    """What the analysis concluded about one service's recent deploy."""

    service: str
    version: str | None = None
    commit: str | None = None
    minutes_before_alert: float | None = None
    verdict: Literal["suspect", "ruled_out", "no_recent_deploy"]
    reason: str
    evidence_ids: list[str] = Field(default_factory=list)


class LLMInfo(BaseModel):
    """How the LLM stage went: enough to judge its cost, speed and honesty per alert."""

    model: str = ""
    status: Literal["ok", "failed", "timeout", "skipped", "circuit_open", "pending"] = "skipped"
    reason: str = ""
    summary: str = ""
    unresolved: list[str] = Field(default_factory=list)
    calls: int = 0
    chunks: int = 0
    retries: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    kept_claims: int = 0
    dropped_claims: int = 0
    dropped: list[str] = Field(default_factory=list)
    cached: bool = False
    # Answered by joining an identical request already in flight (no request of its own).
    shared: bool = False
    # Scatter-gather: chunk calls that failed (the merge judged the rest), evidence left out
    # because it did not fit `max_chunks`, and repair calls made for unparseable answers.
    failed_chunks: int = 0
    omitted_ids: list[str] = Field(default_factory=list)
    repairs: int = 0
    # What was asked of the server: json_schema, or text after a json_schema rejection.
    response_format: str = ""


class Analysis(BaseModel):
    version: str = ANALYSIS_VERSION
    summary: str = ""
    unknown: bool = False
    unknown_reason: str = ""
    hypotheses: list[Hypothesis] = Field(default_factory=list)
    deploys: list[DeployVerdict] = Field(default_factory=list)
    llm: LLMInfo | None = None
    deterministic_ms: float = 0.0
    updated_at: datetime | None = None

    @property
    def top(self) -> Hypothesis | None:
        return self.hypotheses[0] if self.hypotheses else None

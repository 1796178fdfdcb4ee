"""The evidence bundle: what the gather stage hands to analysis, notification and the LLM.

Why this shape: every later stage (and a person reading the page) must be able to say where
a statement came from. So each evidence item has a stable id (`span:db-primary:SELECT
orders`, `log:3`), the backend it came from and the exact query that produced it; what could
not be gathered is listed in `missing` with the reason, never silently absent; and the size
is bounded by a token budget applied by priority (culprit first, noise last).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from enricher.analysis.spans import AttrContrast, OpContrast, SpanFacts
from enricher.sources.deploys import DeployContext, DeploySignal
from enricher.sources.loki import LogLine, LogTemplate
from enricher.sources.prometheus import ChosenTrace
from enricher.sources.promql import AlertQuery
from enricher.sources.tempo import AttrValue

# 2: `deploy` is a list (one entry per service on the failing path, the culprit's first),
#    `culprits` lists every independent suspect, items of kind "attribute".
SCHEMA_VERSION = "2"

Source = Literal["alertmanager", "prometheus", "tempo", "loki", "grafana", "ci", "analysis"]
ItemKind = Literal[
    "span", "log", "log_template", "exemplar", "trace", "contrast", "deploy", "attribute"
]


class AlertInfo(BaseModel):
    alertname: str
    status: str
    service: str | None = None
    severity: str = ""
    starts_at: datetime
    fingerprint: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    summary: str = ""
    description: str = ""
    alerts_in_group: int = 1
    group_key: str = ""


class Link(BaseModel):
    """A link for the page. `fetched` is always False for URLs taken from the alert."""

    kind: Literal[
        "grafana_trace", "grafana_logs", "tempo_trace", "dashboard", "runbook", "generator"
    ]
    title: str
    url: str
    from_alert: bool = False


class Missing(BaseModel):
    """Something that could not be gathered, and why (not configured, timeout, 500, ...)."""

    what: str
    source: Source
    reason: str
    query: str = ""


class TraceOverview(BaseModel):
    trace_id: str
    role: Literal["suspect", "healthy"]
    root: str = ""
    duration_ms: float = 0.0
    span_count: int = 0
    error_ops: list[str] = Field(default_factory=list)
    chosen_because: str = ""
    partial: bool = False


class EvidenceItem(BaseModel):
    """One citable piece of evidence. Exactly one payload field is set, matching `kind`."""

    id: str
    kind: ItemKind
    source: Source
    query: str = ""
    priority: int
    summary: str
    span: SpanFacts | None = None
    log: LogLine | None = None
    template: LogTemplate | None = None
    exemplar: ChosenTrace | None = None
    trace: TraceOverview | None = None
    contrast: OpContrast | None = None
    deploy: DeploySignal | None = None
    attribute: AttrContrast | None = None


class CulpritSummary(BaseModel):
    """The span the analysis blames, in a few lines, pointing at its evidence items."""

    item_id: str
    trace_id: str
    service: str
    operation: str
    duration_ms: float
    self_ms: float
    status: str
    reason: str
    contrast: str = ""
    agreeing_traces: int = 1
    suspect_traces: int = 1
    key_attributes: dict[str, AttrValue] = Field(default_factory=dict)
    exception: str = ""
    log_item_ids: list[str] = Field(default_factory=list)
    # How the operation stands out against healthy traces (error, latency, absent); empty,
    # with confidence "low", when nothing does.
    stands_out: list[str] = Field(default_factory=list)
    confidence: Literal["high", "medium", "low"] = "medium"
    contrast_item_id: str | None = None


class BudgetInfo(BaseModel):
    token_budget: int
    tokens_estimated: int = 0
    items_kept: int = 0
    items_dropped: int = 0
    dropped_ids: list[str] = Field(default_factory=list)
    shrunk_ids: list[str] = Field(default_factory=list)


class GatherStats(BaseModel):
    elapsed_ms: float = 0.0
    budget_s: float = 0.0
    timed_out: bool = False
    raw_trace_bytes: int = 0
    raw_log_bytes: int = 0
    log_lines_in: int = 0
    backend_requests: dict[str, int] = Field(default_factory=dict)


class EvidenceBundle(BaseModel):
    schema_version: str = SCHEMA_VERSION
    alert: AlertInfo
    query: AlertQuery | None = None
    # The top suspect (confidence "low" when nothing stands out against healthy traces).
    culprit: CulpritSummary | None = None
    # Every independent suspect, top first; empty when nothing stands out.
    culprits: list[CulpritSummary] = Field(default_factory=list)
    # Why no operation stands out, when none does (what was compared).
    no_standout: str = ""
    deploy: list[DeployContext] = Field(default_factory=list)
    items: list[EvidenceItem] = Field(default_factory=list)
    links: list[Link] = Field(default_factory=list)
    missing: list[Missing] = Field(default_factory=list)
    # Recorded facts that are not evidence items, e.g. "no exemplars in the window".
    findings: list[str] = Field(default_factory=list)
    budget: BudgetInfo
    stats: GatherStats = Field(default_factory=GatherStats)

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        """Bundles stored by schema 1 (pages, jobs, files given to `enricher replay`)."""
        if isinstance(data, dict) and str(data.get("schema_version", "1")) == "1":
            data = dict(data)
            d = data.get("deploy")
            data["deploy"] = [] if d is None else [d] if isinstance(d, dict) else d
            if data.get("culprit") and not data.get("culprits"):
                data["culprits"] = [data["culprit"]]
            data["schema_version"] = SCHEMA_VERSION
        return data

    def deploy_of(self, service: str) -> DeployContext | None:
        return next((d for d in self.deploy if d.service == service), None)

    def item(self, item_id: str) -> EvidenceItem | None:
        return next((i for i in self.items if i.id == item_id), None)

    def missing_reasons(self) -> list[str]:
        return [f"{m.source}: {m.what}: {m.reason}" for m in self.missing]

"""Configuration of the evidence backends, declared beside the clients that use it.

Every field has a default and every backend URL is optional: a service with nothing
configured still runs, and the evidence bundle then lists each backend as "not configured"
in `missing` instead of failing. Budgets and caps default to values that keep one gather
well inside a page deadline and gentle on shared backends during an alert storm.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, model_validator

from enricher.durations import Seconds


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BackendConfig(_Model):
    """What every HTTP backend shares: where it is, whose tenant, how hard we may lean on it."""

    url: AnyHttpUrl | None = None
    # Sent as X-Scope-OrgID (Tempo, Loki, Mimir multi-tenancy); None sends no header.
    tenant: str | None = None
    bearer_token: str | None = None
    bearer_token_file: Path | None = None
    # Per HTTP call; a call never outlives the gather budget either.
    timeout: Seconds = 2.0
    # Requests in flight to this backend from this process, across all concurrent gathers.
    concurrency: int = Field(default=8, ge=1, le=256)

    @model_validator(mode="after")
    def _load_token(self) -> BackendConfig:
        if self.bearer_token_file is not None:
            try:
                self.bearer_token = self.bearer_token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(f"cannot read bearer_token_file: {exc.strerror}") from None
        return self

    @property
    def base_url(self) -> str | None:
        return str(self.url).rstrip("/") if self.url is not None else None


class PrometheusSourceConfig(BackendConfig):
    # Metric whose labels carry the running version; queried over the lookback to spot a deploy.
    build_info_metric: str = "build_info"
    build_info_service_label: str = "service"
    build_info_version_label: str = "version"
    build_info_commit_label: str = "commit"
    # Exemplar label names that may hold the trace id, first match wins.
    trace_id_labels: list[str] = Field(default_factory=lambda: ["trace_id", "traceID", "traceId"])
    # Alert rules change rarely; one /api/v1/rules per this interval serves every alert.
    rules_ttl: Seconds = 60.0


class TempoSourceConfig(BackendConfig):
    # Extra attempts after a 5xx/timeout, with exponential backoff starting at `backoff`.
    retries: int = Field(default=2, ge=0, le=10)
    backoff: Seconds = 0.05
    search_limit: int = Field(default=20, ge=1, le=1000)
    # TraceQL fallback for latency alerts when the alert gives no threshold.
    slow_threshold: Seconds = 0.5
    # How long after a request Tempo may still answer "not found" for its trace (spans are
    # batched by SDK and collector before Tempo makes them queryable). Exemplars older than
    # this are preferred; a missing trace younger than this is reported as not ingested yet.
    ingest_lag: Seconds = 30.0
    # A suspect trace of a fresh exemplar answered empty is asked once more after this pause,
    # if the gather budget leaves room for it; 0 disables the retry (spares are still tried).
    empty_retry_delay: Seconds = 1.0


class LokiSourceConfig(BackendConfig):
    # Where to look for a trace's lines: all services by default, since the culprit is often
    # a dependency of the alerting service. Must contain a matcher that cannot match "".
    selector: str = '{service_name=~".+"}'
    # Loki label holding the service (OTLP ingest maps service.name to service_name).
    service_label: str = "service_name"
    trace_id_strategy: Literal["structured_metadata", "line_filter", "both"] = "both"
    # Padding around the trace's span times (or the exemplar time) for the per-trace query.
    trace_window: Seconds = 120.0
    trace_limit: int = Field(default=500, ge=1, le=5000)
    # The alerting service's own error lines in the firing window: a second, capped query.
    error_filter: str = '|~ "(?i)(error|exception|fail|fatal|panic|timeout)"'
    error_limit: int = Field(default=200, ge=0, le=5000)
    # Lines kept after de-duplication; everything beyond is summarised as templates only.
    max_lines: int = Field(default=300, ge=1, le=100_000)


class GrafanaSourceConfig(BackendConfig):
    """Grafana is used for links (Explore) and deploy annotations; links work without a token."""

    tempo_datasource_uid: str = "tempo"
    loki_datasource_uid: str = "loki"
    deploy_tag: str = "deploy"
    annotations: bool = True


class SourcesConfig(_Model):
    """Where Prometheus, Tempo, Loki and Grafana live and how the evidence chain may use them."""

    prometheus: PrometheusSourceConfig = Field(default_factory=PrometheusSourceConfig)
    tempo: TempoSourceConfig = Field(default_factory=TempoSourceConfig)
    loki: LokiSourceConfig = Field(default_factory=LokiSourceConfig)
    grafana: GrafanaSourceConfig = Field(default_factory=GrafanaSourceConfig)

    @property
    def any_configured(self) -> bool:
        """With no backend at all there is nothing to gather: pages carry the alert alone."""
        return any(
            b.url is not None for b in (self.prometheus, self.tempo, self.loki, self.grafana)
        )

    # Identical backend answers are reused for this long; an alert storm of one incident then
    # costs a handful of backend requests instead of one set per alert.
    cache_ttl: Seconds = 30.0
    # Window start/end are rounded to this grid so near-simultaneous alerts share cache keys.
    time_quantum: Seconds = 10.0
    # Hard ceiling of one gather; the caller's budget can only shorten it.
    budget: Seconds = 8.0
    # How far before the alert start evidence is looked for.
    lookback: Seconds = 600.0
    top_traces: int = Field(default=3, ge=1, le=50)
    # Traces from non-error series / fast buckets, fetched to tell cause from background.
    healthy_traces: int = Field(default=3, ge=0, le=50)
    # Services on the failing path (besides the alert's) whose deploys are looked up.
    deploy_services: int = Field(default=4, ge=0, le=20)
    # Alert labels naming the service, first present wins; its value is resource.service.name
    # unless `service_names` maps it to another name.
    service_labels: list[str] = Field(
        default_factory=lambda: ["service", "service_name", "app", "job"]
    )
    service_names: dict[str, str] = Field(default_factory=dict)
    # Estimated at ~4 characters per token; the bundle is cut by priority to fit.
    token_budget: int = Field(default=6000, ge=200)
    # Longest attribute / log line text kept; the rest is cut with a marker.
    max_value_chars: int = Field(default=2000, ge=64)

"""Deploy context: what version is running, what ran before, and when it changed.

Why four signals: none is always there. Trace resource attributes say what served the failing
request (service.version, vcs.ref.head.revision) but not when it was deployed; the build-info
metric over the lookback shows a version change and roughly when; Grafana `deploy`
annotations and the events CI posts to us (POST /api/v1/deploys) carry the exact time. They
are merged, most precise source first, into one statement a person can act on:
"checkout 2.4.1 (7a3f9c2) deployed 4 minutes before the alert started, previously 2.4.0".
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator

from enricher.sources.grafana import Annotation
from enricher.sources.prometheus import SeriesSamples
from enricher.sources.tempo import AttrValue

_VERSION = re.compile(r"\bv?(\d+\.\d+(?:\.\d+)?(?:[-+][0-9A-Za-z.]+)?)\b")
_COMMIT = re.compile(r"\b([0-9a-f]{7,40})\b")


class DeployEvent(BaseModel):
    """A deploy as CI reports it to `POST /api/v1/deploys`."""

    model_config = ConfigDict(extra="forbid")

    service: str = Field(min_length=1, max_length=200)
    version: str | None = Field(default=None, max_length=200)
    commit: str | None = Field(default=None, max_length=100)
    environment: str | None = Field(default=None, max_length=100)
    time: datetime

    @field_validator("time")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        """Naive times are taken as UTC: CI systems often omit the offset."""
        return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)


@runtime_checkable
class DeploySource(Protocol):
    """Where recorded deploy events come from (the service's own store)."""

    async def recent(self, service: str, since: datetime, until: datetime) -> list[DeployEvent]: ...


SignalSource = Literal["trace_resource", "build_info", "grafana_annotation", "ci_event"]


class DeploySignal(BaseModel):
    source: SignalSource
    service: str
    version: str | None = None
    commit: str | None = None
    previous_version: str | None = None
    previous_commit: str | None = None
    time: datetime | None = None
    environment: str | None = None
    detail: str = ""
    query: str = ""


class DeployContext(BaseModel):
    service: str
    current_version: str | None = None
    current_commit: str | None = None
    previous_version: str | None = None
    previous_commit: str | None = None
    deploy_time: datetime | None = None
    deploy_time_source: SignalSource | None = None
    minutes_before_alert: float | None = None
    summary: str = ""
    signals: list[DeploySignal] = Field(default_factory=list)
    # Where the service sits relative to the failure, and what the traces say about it; the
    # analysis judges the deploy from these (suspect, or ruled out and why).
    role: Literal["culprit", "failing_path", "alerting", "other"] = "alerting"
    on_failing_path: bool = False
    calls_culprit: bool = False
    failing_versions: list[str] = Field(default_factory=list)
    healthy_versions: list[str] = Field(default_factory=list)
    standout_ops: list[str] = Field(default_factory=list)
    failing_only_flags: list[str] = Field(default_factory=list)


def _s(v: AttrValue) -> str | None:
    return str(v) if v not in (None, "") else None


def from_trace_resource(service: str, resource: Mapping[str, AttrValue]) -> DeploySignal | None:
    version = _s(resource.get("service.version"))
    commit = _s(resource.get("vcs.ref.head.revision"))
    if not version and not commit:
        return None
    return DeploySignal(
        source="trace_resource",
        service=service,
        version=version,
        commit=commit,
        environment=_s(resource.get("deployment.environment.name")),
        detail="resource attributes of the failing trace's spans",
    )


def from_build_info(
    service: str,
    series: Iterable[SeriesSamples],
    version_label: str,
    commit_label: str,
    query: str = "",
) -> DeploySignal | None:
    """Group samples by (version, commit); a group first seen later is a deploy."""
    series = list(series)
    spans: dict[tuple[str, str], list[float]] = {}
    for s in series:
        if not s.samples:
            continue
        key = (s.labels.get(version_label, ""), s.labels.get(commit_label, ""))
        first = min(t for t, _ in s.samples)
        last = max(t for t, _ in s.samples)
        cur = spans.get(key)
        spans[key] = [min(first, cur[0]), max(last, cur[1])] if cur else [first, last]
    if not spans:
        return None
    # The running version is, among those still reporting at the end of the window, the one
    # that appeared last: during a canary or a slow rollout old and new run side by side to
    # the end, and after a rollback the newer version is gone again.
    end = max(v[1] for v in spans.values())
    gap = _sample_gap(series)
    alive = [kv for kv in spans.items() if kv[1][1] >= end - gap]
    (cur_v, cur_c), (cur_first, _) = max(alive, key=lambda kv: (kv[1][0], kv[1][1]))
    others = [kv for kv in spans.items() if kv[0] != (cur_v, cur_c) and kv[1][0] <= cur_first]
    ordered = [
        *sorted(others, key=lambda kv: (kv[1][1], kv[1][0])),
        ((cur_v, cur_c), (cur_first, end)),
    ]
    sig = DeploySignal(
        source="build_info",
        service=service,
        version=cur_v or None,
        commit=cur_c or None,
        query=query,
        detail="one version throughout the window",
    )
    gone = [kv for kv in spans.items() if kv[1][0] > cur_first]
    if gone:  # a newer version came and went: a rollback (or a failed rollout)
        (g_v, _g_c), (g_first, g_last) = max(gone, key=lambda kv: kv[1][0])
        sig.detail = (
            f"{g_v or '?'} ran from {datetime.fromtimestamp(g_first, UTC).isoformat()} to "
            f"{datetime.fromtimestamp(g_last, UTC).isoformat()} and is gone again; "
            f"{cur_v or '?'} runs now"
        )
    elif len(ordered) > 1:
        (prev_v, prev_c), (_, prev_last) = ordered[-2]
        sig.previous_version = prev_v or None
        sig.previous_commit = prev_c or None
        sig.time = datetime.fromtimestamp(cur_first, UTC)
        sig.detail = (
            f"build info changed from {prev_v or '?'} to {cur_v or '?'}; first seen at "
            f"{sig.time.isoformat()}, old version last seen "
            f"{datetime.fromtimestamp(prev_last, UTC).isoformat()}"
        )
    return sig


def _sample_gap(series: Iterable[SeriesSamples]) -> float:
    """Twice the step between samples: how far before the end a series still counts as
    reporting at the end."""
    for s in series:
        ts = sorted(t for t, _ in s.samples)
        if len(ts) > 1:
            return 2 * min(b - a for a, b in itertools.pairwise(ts))
    return 60.0


def from_annotations(
    service: str, annotations: Iterable[Annotation], query: str = ""
) -> list[DeploySignal]:
    """Annotations tagged for this service (`service:<name>` or the name in the text)."""
    out = []
    for a in annotations:
        tagged = any(t in (f"service:{service}", service) for t in a.tags)
        if not tagged and not re.search(rf"\b{re.escape(service)}\b", a.text):
            continue
        v = _VERSION.search(a.text)
        c = _COMMIT.search(a.text)
        env = next((t.split(":", 1)[1] for t in a.tags if t.startswith("env:")), None)
        out.append(
            DeploySignal(
                source="grafana_annotation",
                service=service,
                version=v.group(1) if v else None,
                commit=c.group(1) if c else None,
                time=datetime.fromtimestamp(a.time / 1000.0, UTC),
                environment=env,
                detail=a.text[:300],
                query=query,
            )
        )
    return out


def from_events(events: Iterable[DeployEvent]) -> list[DeploySignal]:
    return [
        DeploySignal(
            source="ci_event",
            service=e.service,
            version=e.version,
            commit=e.commit,
            environment=e.environment,
            time=e.time,
            detail="deploy event posted by CI",
        )
        for e in events
    ]


def combine(service: str, alert_start: datetime, signals: list[DeploySignal]) -> DeployContext:
    """Merge signals: exact-time sources (CI, annotations) for when, the trace for what ran."""
    ctx = DeployContext(service=service, signals=signals)
    timed = [s for s in signals if s.time is not None and s.time <= alert_start]
    rank = {"ci_event": 0, "grafana_annotation": 1, "build_info": 2, "trace_resource": 3}
    if timed:
        latest = max(timed, key=lambda s: (s.time, -rank[s.source]))  # type: ignore[arg-type]
        # Prefer the most precise source among those within a minute of the latest.
        near = [s for s in timed if abs((s.time - latest.time).total_seconds()) <= 60]  # type: ignore[operator]
        best = min(near, key=lambda s: rank[s.source])
        ctx.deploy_time = best.time
        ctx.deploy_time_source = best.source
        ctx.current_version = best.version
        ctx.current_commit = best.commit
        ctx.previous_version = best.previous_version
        ctx.previous_commit = best.previous_commit
        older = [
            s
            for s in timed
            if s.time < best.time and s.version and s.version != best.version  # type: ignore[operator]
        ]
        if ctx.previous_version is None and older:
            prev = max(older, key=lambda s: s.time)  # type: ignore[arg-type,return-value]
            ctx.previous_version, ctx.previous_commit = prev.version, prev.commit
        if ctx.previous_version is None:
            bi = next((s for s in signals if s.source == "build_info" and s.previous_version), None)
            if bi is not None:
                ctx.previous_version, ctx.previous_commit = bi.previous_version, bi.previous_commit
        assert ctx.deploy_time is not None
        ctx.minutes_before_alert = round((alert_start - ctx.deploy_time).total_seconds() / 60, 1)
    for src in ("trace_resource", "build_info", "ci_event", "grafana_annotation"):
        s = next((x for x in signals if x.source == src and (x.version or x.commit)), None)
        if s is None:
            continue
        # What served the failing requests wins over what a deploy record says.
        if src == "trace_resource" or ctx.current_version is None:
            ctx.current_version = s.version or ctx.current_version
            ctx.current_commit = s.commit or ctx.current_commit
        break
    parts = [service]
    if ctx.current_version:
        parts.append(ctx.current_version)
    if ctx.current_commit:
        parts.append(f"({ctx.current_commit})")
    text = " ".join(parts)
    if ctx.minutes_before_alert is not None:
        text += f" deployed {ctx.minutes_before_alert:g} minutes before the alert started"
        text += f" (per {ctx.deploy_time_source})"
    elif signals:
        text += ": no deploy found in the lookback window"
    else:
        text += ": no deploy information"
    if ctx.previous_version:
        text += f", previously {ctx.previous_version}"
        if ctx.previous_commit:
            text += f" ({ctx.previous_commit})"
    ctx.summary = text
    return ctx

"""Prometheus: exemplars (trace ids of failing/slow requests), rules, build-info history.

Why exemplars first: they are the only link from "the ratio is high" to concrete requests.
The ranking prefers what a person would open first: for an error ratio, exemplars on error
series; for latency, the slowest buckets; in both, the most recent (closest to the page and
still in Tempo's recent blocks). A few exemplars from healthy series are kept as contrast so
the trace analysis can tell the cause from what every request does anyway.

"Most recent" stops short of the newest seconds, though: Tempo makes a trace queryable only
some time after the request (`sources.tempo.ingest_lag`), so an exemplar younger than that
often names a trace Tempo answers as empty. Older exemplars are preferred when there are
enough of them, and the next-ranked ones are kept as spares to fetch instead of a trace
Tempo does not have.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import re
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from enricher.sources.config import PrometheusSourceConfig
from enricher.sources.http import BackendError, HttpBackend, HttpResponse
from enricher.sources.promql import AlertQuery, RuleInfo

_HEX = re.compile(r"^[0-9a-fA-F]{1,32}$")


# --- wire models (protocols.md 2.1, 2.3, 2.4, 2.6) ---------------------------------------


class WireExemplar(BaseModel):
    labels: dict[str, str] = Field(default_factory=dict)
    value: str
    timestamp: float


class WireExemplarSeries(BaseModel):
    seriesLabels: dict[str, str] = Field(default_factory=dict)
    exemplars: list[WireExemplar] = Field(default_factory=list)


class SeriesSamples(BaseModel):
    """One series of a range (or instant) query: labels and (time, value) samples."""

    labels: dict[str, str]
    samples: list[tuple[float, float]]


# --- our models ---------------------------------------------------------------------------


class ChosenTrace(BaseModel):
    """A trace id picked from exemplars, and why, so the page can show its reasoning."""

    trace_id: str
    role: Literal["suspect", "healthy"]
    reason: str
    value: float
    timestamp: float
    series: dict[str, str] = Field(default_factory=dict)
    span_id: str | None = None
    source: Literal["exemplar", "traceql"] = "exemplar"


class SkippedExemplars(BaseModel):
    reason: str
    count: int
    example: str = ""


class ExemplarSelection(BaseModel):
    query: str
    healthy_query: str | None = None
    suspects: list[ChosenTrace] = Field(default_factory=list)
    healthy: list[ChosenTrace] = Field(default_factory=list)
    # The next-ranked candidates of each role (as many as were chosen at most): fetched in
    # place of a chosen trace Tempo answers as not found, so the page still has its traces.
    spare_suspects: list[ChosenTrace] = Field(default_factory=list)
    spare_healthy: list[ChosenTrace] = Field(default_factory=list)
    # Exemplars after this time were younger than Tempo's ingest lag at the reference time;
    # None when no reference time was given (no preference applied).
    fresh_after: float | None = None
    exemplars_seen: int = 0
    series_seen: int = 0
    skipped: list[SkippedExemplars] = Field(default_factory=list)
    # A recorded finding rather than an error, e.g. "no exemplars in window".
    finding: str | None = None


@functools.lru_cache(maxsize=65536)
def normalize_trace_id(raw: str) -> str | None:
    """Lowercase 32-hex trace id, or None when it is not one (all zeros is invalid too)."""
    s = raw.strip().replace("-", "") if len(raw.strip()) == 36 else raw.strip()
    if not _HEX.match(s):
        return None
    s = s.lower().zfill(32)
    if set(s) == {"0"}:
        return None
    return s


def _envelope(resp: HttpResponse, endpoint: str) -> Any:
    """Unwrap {"status":"success","data":...}; error envelopes and foreign bodies raise."""
    try:
        doc = json.loads(resp.body)
    except ValueError:
        kind = "bad_request" if resp.status == 400 else "http_error"
        raise BackendError(
            "prometheus",
            endpoint,
            kind if resp.status >= 400 else "bad_response",
            f"HTTP {resp.status}: {resp.text(200)}",
            resp.status,
        ) from None
    if not isinstance(doc, dict):
        raise BackendError("prometheus", endpoint, "bad_response", "not a JSON object")
    if doc.get("status") != "success":
        et = doc.get("errorType", "")
        msg = f"{et}: {doc.get('error', resp.text(200))}"
        kind = "bad_request" if et == "bad_data" or resp.status == 400 else "http_error"
        if et in ("timeout", "unavailable"):
            kind = "unavailable"
        raise BackendError("prometheus", endpoint, kind, msg, resp.status)
    return doc.get("data")


def parse_exemplars(resp: HttpResponse) -> list[WireExemplarSeries]:
    data = _envelope(resp, "query_exemplars")
    if data is None:  # an expression without selectors: the data key is omitted
        return []
    try:
        return [WireExemplarSeries.model_validate(s) for s in data]
    except (ValidationError, TypeError) as exc:
        raise BackendError("prometheus", "query_exemplars", "bad_response", str(exc)) from None


def parse_samples(resp: HttpResponse, endpoint: str = "query_range") -> list[SeriesSamples]:
    """Matrix or vector results as samples; values "NaN"/"+Inf" are dropped."""
    data = _envelope(resp, endpoint)
    if not isinstance(data, dict):
        return []
    out: list[SeriesSamples] = []
    for s in data.get("result") or []:
        pts = s.get("values") or ([s["value"]] if "value" in s else [])
        samples = []
        for t, v in pts:
            try:
                f = float(v)
            except (TypeError, ValueError):
                continue
            if math.isfinite(f):
                samples.append((float(t), f))
        out.append(SeriesSamples(labels=dict(s.get("metric") or {}), samples=samples))
    return out


def parse_rules(resp: HttpResponse) -> list[RuleInfo]:
    data = _envelope(resp, "rules")
    rules: list[RuleInfo] = []
    for g in (data or {}).get("groups") or []:
        for r in g.get("rules") or []:
            if r.get("type") != "alerting":
                continue
            rules.append(
                RuleInfo(
                    name=r.get("name", ""),
                    query=r.get("query", ""),
                    labels=dict(r.get("labels") or {}),
                    alert_label_sets=[dict(a.get("labels") or {}) for a in r.get("alerts") or []],
                    group=g.get("name", ""),
                )
            )
    return rules


# --- ranking ------------------------------------------------------------------------------


class _Candidate(BaseModel):
    trace_id: str
    span_id: str | None
    value: float
    timestamp: float
    series: dict[str, str]
    le: float | None


def _le(series: Mapping[str, str]) -> float | None:
    v = series.get("le")
    if v is None:
        return None
    try:
        return float(v)
    except ValueError:
        return None


def _fmt_labels(series: Mapping[str, str], keys: list[str]) -> str:
    return ",".join(f'{k}="{series[k]}"' for k in keys if k in series)


def rank_exemplars(
    series: list[WireExemplarSeries],
    aq: AlertQuery,
    top_n: int,
    healthy_n: int,
    trace_id_labels: list[str],
    healthy_series: list[WireExemplarSeries] | None = None,
    query: str = "",
    healthy_query: str | None = None,
    now: float | None = None,
    ingest_lag: float = 0.0,
) -> ExemplarSelection:
    """Pick suspect and healthy trace ids, each with the reason it was chosen, plus spares.

    `now` is the reference time exemplar ages are measured against (the gather's window
    end); with it, exemplars younger than `ingest_lag` go after all older ones of their role,
    so they are chosen only when there are not enough older ones."""
    sel = ExemplarSelection(query=query, healthy_query=healthy_query)
    if now is not None and ingest_lag > 0:
        sel.fresh_after = now - ingest_lag
    skipped: dict[str, SkippedExemplars] = {}

    def skip(reason: str, example: str) -> None:
        s = skipped.setdefault(reason, SkippedExemplars(reason=reason, count=0, example=example))
        s.count += 1

    def candidates(group: list[WireExemplarSeries]) -> list[_Candidate]:
        out: list[_Candidate] = []
        for s in group:
            if any(
                k in s.seriesLabels and s.seriesLabels[k] != v for k, v in aq.series_filter.items()
            ):
                continue
            sel.series_seen += 1
            for e in s.exemplars:
                sel.exemplars_seen += 1
                raw = next((e.labels[k] for k in trace_id_labels if k in e.labels), None)
                if raw is None:
                    skip("exemplar has no trace id label", json.dumps(e.labels)[:120])
                    continue
                tid = normalize_trace_id(raw)
                if tid is None:
                    skip("malformed trace id", raw[:80])
                    continue
                try:
                    value = float(e.value)
                except ValueError:
                    value = math.nan
                out.append(
                    _Candidate(
                        trace_id=tid,
                        span_id=e.labels.get("span_id") or e.labels.get("spanID"),
                        value=value,
                        timestamp=e.timestamp,
                        series=s.seriesLabels,
                        le=_le(s.seriesLabels),
                    )
                )
        return out

    primary = candidates(series)
    # The healthy query usually returns the primary's series again: count them once.
    seen_series = {tuple(sorted(s.seriesLabels.items())) for s in series}
    extra = candidates(
        [
            s
            for s in healthy_series or []
            if tuple(sorted(s.seriesLabels.items())) not in seen_series
        ]
    )
    em = aq.error_matcher
    suspects: list[tuple[_Candidate, str]] = []
    healthy: list[tuple[_Candidate, str]] = []

    if aq.kind == "latency":
        pool = [c for c in primary + extra if not math.isnan(c.value)]
        thr = aq.threshold_seconds
        if thr is not None and any(c.value >= thr for c in pool):
            slow = [c for c in pool if c.value >= thr]
            fast = [c for c in pool if c.value < thr]
            slow.sort(key=lambda c: (-c.timestamp, -c.value))
            suspects = [
                (
                    c,
                    f"latency {c.value:.3g}s above the alert threshold {thr:g}s "
                    f"(bucket le={c.series.get('le', '?')}), most recent first of {len(slow)}",
                )
                for c in slow
            ]
        else:
            # No threshold to compare: the highest buckets, then the most recent.
            ordered = sorted(
                pool, key=lambda c: (-(c.le if c.le is not None else c.value), -c.timestamp)
            )
            top_le = ordered[0].le if ordered else None
            slow = [c for c in ordered if c.le == top_le] if top_le is not None else ordered
            fast = [c for c in pool if c not in slow]
            suspects = [
                (
                    c,
                    f"slowest bucket le={c.series.get('le', '?')} (value {c.value:.3g}), "
                    "most recent first",
                )
                for c in slow
            ]
        fast.sort(key=lambda c: (c.value, -c.timestamp))
        healthy = [
            (c, f"fast request {c.value:.3g}s (bucket le={c.series.get('le', '?')})") for c in fast
        ]
    elif em is not None:
        err = [c for c in primary + extra if em.matches(c.series)]
        ok = [c for c in primary + extra if not em.matches(c.series)]
        err.sort(key=lambda c: -c.timestamp)
        ok.sort(key=lambda c: -c.timestamp)
        suspects = [
            (
                c,
                f"error series {_fmt_labels(c.series, [em.name])} matches {em.render()}, "
                f"most recent first of {len(err)} error exemplars",
            )
            for c in err
        ]
        healthy = [
            (c, f"non-error series {_fmt_labels(c.series, [em.name])}, most recent first")
            for c in ok
        ]
    else:
        pool = sorted(primary + extra, key=lambda c: -c.timestamp)
        suspects = [(c, "most recent exemplar on the alert's series") for c in pool]

    seen: set[str] = set()
    suspects = _settled_first(suspects, sel.fresh_after, now)
    healthy = _settled_first(healthy, sel.fresh_after, now)
    sel.suspects = _take(suspects, "suspect", top_n, seen)
    sel.healthy = _take(healthy, "healthy", healthy_n, seen)
    # Spares after both chosen sets: a spare is never a trace already chosen in either role.
    sel.spare_suspects = _take(suspects, "suspect", top_n, seen)
    sel.spare_healthy = _take(healthy, "healthy", healthy_n, seen)
    sel.skipped = list(skipped.values())
    if sel.exemplars_seen == 0:
        sel.finding = (
            "no exemplars in the window (is --enable-feature=exemplar-storage on and the "
            "target scraped as OpenMetrics?)"
        )
    elif not sel.suspects:
        sel.finding = "exemplars found, but none usable as a suspect trace"
    return sel


# --- client -------------------------------------------------------------------------------


class PrometheusClient:
    """The Prometheus HTTP API calls the evidence chain makes, parsed into our models."""

    def __init__(self, http: HttpBackend, config: PrometheusSourceConfig) -> None:
        self.http = http
        self.config = config
        self._rules: tuple[float, list[RuleInfo]] | None = None
        # Ranking memo: the exemplar answers of a storm are shared (cached, coalesced)
        # objects, so their ranking is shared too. Entries keep their key objects alive.
        self._ranked: OrderedDict[tuple[int, ...], tuple[tuple[Any, ...], ExemplarSelection]] = (
            OrderedDict()
        )

    @property
    def configured(self) -> bool:
        return self.http.configured

    async def query_exemplars(
        self, query: str, start: float, end: float, deadline: float | None = None
    ) -> list[WireExemplarSeries]:
        resp = await self.http.get(
            "query_exemplars",
            "/api/v1/query_exemplars",
            {"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}"},
            deadline=deadline,
        )
        return self.http.parsed(resp, "exemplars", lambda: parse_exemplars(resp))

    async def select_exemplars(
        self,
        aq: AlertQuery,
        start: float,
        end: float,
        top_n: int,
        healthy_n: int,
        deadline: float | None = None,
        now: float | None = None,
        ingest_lag: float = 0.0,
    ) -> ExemplarSelection:
        """Exemplars of the alert's series (and healthy contrast series), ranked; `now` and
        `ingest_lag` as in `rank_exemplars`."""
        query = aq.primary.render()
        healthy_query = aq.healthy.render() if aq.healthy is not None and healthy_n else None
        if healthy_query == query:
            healthy_query = None
        tasks = [self.query_exemplars(query, start, end, deadline)]
        if healthy_query:
            tasks.append(self.query_exemplars(healthy_query, start, end, deadline))
        results = await asyncio.gather(*tasks, return_exceptions=True)
        if isinstance(results[0], BaseException):
            raise results[0]
        healthy_series: list[WireExemplarSeries] = []
        if len(results) > 1 and not isinstance(results[1], BaseException):
            healthy_series = results[1]
        key = (
            id(results[0]),
            id(healthy_series) if healthy_series else 0,
            id(aq),
            top_n,
            healthy_n,
            now,
            ingest_lag,
        )
        hit = self._ranked.get(key)
        if hit is not None:
            self._ranked.move_to_end(key)
            return hit[1]
        sel = rank_exemplars(
            results[0],
            aq,
            top_n,
            healthy_n,
            self.config.trace_id_labels,
            healthy_series=healthy_series,
            query=query,
            healthy_query=healthy_query,
            now=now,
            ingest_lag=ingest_lag,
        )
        self._ranked[key] = ((results[0], healthy_series, aq), sel)
        while len(self._ranked) > 256:
            self._ranked.popitem(last=False)
        return sel

    async def rules(self, deadline: float | None = None) -> list[RuleInfo]:
        """Alerting rules, cached for `rules_ttl`: every alert without a generatorURL asks."""
        now = time.monotonic()
        if self._rules is not None and self._rules[0] > now:
            return self._rules[1]
        resp = await self.http.get("rules", "/api/v1/rules", {"type": "alert"}, deadline=deadline)
        rules = parse_rules(resp)
        self._rules = (now + self.config.rules_ttl, rules)
        return rules

    def build_info_query(self, service: str) -> str:
        c = self.config
        v = service.replace("\\", "\\\\").replace('"', '\\"')
        return f'{c.build_info_metric}{{{c.build_info_service_label}="{v}"}}'

    def build_info_query_many(self, services: list[str]) -> str:
        """One selector for several services (`service=~"a|b"`): the failing path's services
        cost one request, not one each."""
        c = self.config
        alts = "|".join(re.escape(s) for s in services)
        v = alts.replace("\\", "\\\\").replace('"', '\\"')
        return f'{c.build_info_metric}{{{c.build_info_service_label}=~"{v}"}}'

    async def build_info(
        self,
        service: str,
        start: float,
        end: float,
        deadline: float | None = None,
        query: str | None = None,
    ) -> list[SeriesSamples]:
        step = max(15.0, math.ceil((end - start) / 200.0))
        resp = await self.http.get(
            "query_range",
            "/api/v1/query_range",
            {
                "query": query or self.build_info_query(service),
                "start": f"{start:.3f}",
                "end": f"{end:.3f}",
                "step": f"{step:g}",
            },
            deadline=deadline,
        )
        return self.http.parsed(resp, "samples", lambda: parse_samples(resp, "query_range"))


def _settled_first(
    ranked: list[tuple[_Candidate, str]], fresh_after: float | None, now: float | None
) -> list[tuple[_Candidate, str]]:
    """The ranking with exemplars younger than Tempo's ingest lag moved behind all older ones.

    The young ones are ordered oldest first (the likeliest to be queryable already) and say
    their age in the reason, since a person reading the page should know the trace was only
    seconds old when it was chosen."""
    if fresh_after is None or now is None:
        return ranked
    settled = [x for x in ranked if x[0].timestamp <= fresh_after]
    if len(settled) == len(ranked):
        return ranked
    fresh = sorted(
        (x for x in ranked if x[0].timestamp > fresh_after), key=lambda x: x[0].timestamp
    )
    return settled + [
        (c, f"{why}; only {max(0.0, now - c.timestamp):.0f} s old, Tempo may not have it yet")
        for c, why in fresh
    ]


def _take(
    ranked: list[tuple[_Candidate, str]],
    role: Literal["suspect", "healthy"],
    n: int,
    seen: set[str],
) -> list[ChosenTrace]:
    """The first `n` distinct trace ids of a ranking, each with why it was chosen; `seen` is
    shared between roles, so a trace is never both a suspect and a healthy example."""
    out: list[ChosenTrace] = []
    for c, why in ranked:
        if len(out) >= n:
            break
        if c.trace_id in seen:
            continue
        seen.add(c.trace_id)
        out.append(
            ChosenTrace(
                trace_id=c.trace_id,
                role=role,
                reason=why,
                value=c.value,
                timestamp=c.timestamp,
                series=c.series,
                span_id=c.span_id,
            )
        )
    return out

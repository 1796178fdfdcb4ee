"""The gather stage: from an Alertmanager notification to an evidence bundle, within a budget.

Chain: alert -> PromQL (generatorURL or rule) -> exemplars (Prometheus) -> traces (Tempo) and
their logs (Loki) in parallel -> span analysis -> deploy context -> bundle. Service error logs,
build info, Grafana annotations and CI deploy events are asked for at the same time as the
chain's first step, since they need only the service and the window.

Guarantees the pipeline relies on:
- `gather` never raises and returns before its budget (the smaller of the caller's and the
  configured one). Work still running at the budget is cancelled; what arrived is used and
  what did not is listed in `missing`, as is every backend that is not configured or failed.
- Backends are treated gently: per-backend concurrency limit, identical in-flight requests
  coalesced, answers cached briefly, and query windows rounded so an alert storm of one
  incident shares every request.
- An alert storm of one incident costs about one gather: concurrent gathers of the same
  incident join one in-flight collection (each still bounded by its own budget), and what
  is derived from the shared answers (parsing, span analysis, the bundle's items with their
  token costs and redacted forms) is computed once and shared. Bundles of one incident
  therefore share their (read-only) item objects.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Coroutine, Hashable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import aiohttp

from enricher.analysis.spans import TraceFindings, analyse_traces
from enricher.bundle.build import BundleMemo, GatheredEvidence, build_bundle, safe_link
from enricher.bundle.model import (
    AlertInfo,
    BudgetInfo,
    EvidenceBundle,
    Link,
    Missing,
)
from enricher.evidence.run import (
    _RESERVE_FRACTION,
    _RESERVE_MAX,
    _RESERVE_MIN,
    NOT_CONFIGURED,
    _reason,
    _Run,
)
from enricher.evidence.sharing import _adopt, _Memo, _Shared
from enricher.intake.webhook import Alert, WebhookMessage
from enricher.sources.config import SourcesConfig
from enricher.sources.deploys import (
    DeployContext,
    DeploySignal,
    DeploySource,
    combine,
    from_annotations,
    from_build_info,
    from_events,
    from_trace_resource,
)
from enricher.sources.grafana import GrafanaClient
from enricher.sources.http import HttpBackend
from enricher.sources.loki import LogQueryResult, LokiClient
from enricher.sources.prometheus import ChosenTrace, PrometheusClient
from enricher.sources.promql import (
    AlertQuery,
    PromQLError,
    analyse_expression,
    expr_from_generator_url,
    match_rule,
)
from enricher.sources.tempo import TempoClient, Trace, TraceFetch, traceql_for

log = logging.getLogger("enricher.gather")
T = TypeVar("T")


class Gatherer:
    """Collects evidence for alerts from the configured backends; one per process."""

    def __init__(self, config: SourcesConfig, deploys: DeploySource | None = None) -> None:
        self.config = config
        self.deploys = deploys
        self._session: aiohttp.ClientSession | None = None
        self._analysis_memo: OrderedDict[
            tuple[tuple[int, ...], tuple[int, ...]], tuple[list[Trace], TraceFindings]
        ] = OrderedDict()
        # Shared post-processing of one incident's evidence; pointless without the HTTP
        # cache, since then no two gathers see the same parsed objects.
        self._bundle_memo = BundleMemo() if config.cache_ttl > 0 else None
        self._memo = _Memo()
        self._shared: dict[Hashable, _Shared] = {}
        # For tests: collections started on the shared path, and gathers that joined one.
        self.shared_collections = 0
        self.shared_joins = 0
        self._make_clients(None)

    def _make_clients(self, session: aiohttp.ClientSession | None) -> None:
        c = self.config

        def backend(name: str, cfg: Any) -> HttpBackend:
            return HttpBackend(name, cfg, session if cfg.base_url else None, c.cache_ttl)

        self.http = {
            "prometheus": backend("prometheus", c.prometheus),
            "tempo": backend("tempo", c.tempo),
            "loki": backend("loki", c.loki),
            "grafana": backend("grafana", c.grafana),
        }
        self.prometheus = PrometheusClient(self.http["prometheus"], c.prometheus)
        self.tempo = TempoClient(self.http["tempo"], c.tempo, c.max_value_chars)
        self.loki = LokiClient(self.http["loki"], c.loki)
        self.grafana = GrafanaClient(self.http["grafana"], c.grafana)

    async def start(self) -> None:
        """Create the shared HTTP session; connection pools sized to the concurrency limits."""
        if self._session is not None:
            return
        c = self.config
        limit = sum(b.concurrency for b in (c.prometheus, c.tempo, c.loki, c.grafana)) + 8
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=limit, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(total=None),
            raise_for_status=False,
        )
        self._make_clients(self._session)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
            self._make_clients(None)

    def requests_sent(self) -> dict[str, int]:
        """Real HTTP requests sent per backend since start (cache hits and coalesced excluded)."""
        return {k: v.sent for k, v in self.http.items()}

    # --- the stage ------------------------------------------------------------------------

    async def gather(
        self, message: WebhookMessage, received_at: datetime, budget_s: float
    ) -> EvidenceBundle:
        """Evidence for one notification. Never raises; returns within the budget."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        wall0 = time.perf_counter()
        budget = max(0.0, min(float(budget_s), self.config.budget))
        hard_deadline = t0 + budget
        reserve = min(_RESERVE_MAX, max(_RESERVE_MIN, budget * _RESERVE_FRACTION))
        work_deadline = hard_deadline - reserve
        try:
            ev = self._evidence(message, received_at)
        except Exception as exc:  # malformed input the intake let through
            log.exception("cannot start gather")
            return self._fallback(message, f"internal error: {type(exc).__name__}: {exc}")
        run = _Run(ev, work_deadline)
        timed_out = False
        if work_deadline > loop.time():
            if self._session is None:
                await self.start()
            shared = self._share_key(message, ev)
            if shared is None:
                timed_out = await self._collect_alone(run, message, received_at, hard_deadline)
            else:
                timed_out = await self._collect_shared(
                    shared, run, message, received_at, hard_deadline
                )
        else:
            timed_out = True
        for what, source, query in run.pending.values():
            run.miss(what, source, f"no answer within the gather budget of {budget:.2f}s", query)
        try:
            bundle = self._finish(run, budget, timed_out)
        except Exception as exc:
            log.exception("building the bundle failed")
            return self._fallback(message, f"internal error: {type(exc).__name__}: {exc}")
        bundle.stats.elapsed_ms = round((time.perf_counter() - wall0) * 1000, 2)
        return bundle

    async def _collect_alone(
        self, run: _Run, message: WebhookMessage, received_at: datetime, hard_deadline: float
    ) -> bool:
        """This gather's own collection; True when cut off by the budget."""
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(self._collect(run, message, received_at))
        try:
            done, _ = await asyncio.wait({task}, timeout=max(0.0, run.deadline - loop.time()))
            if task in done and task.exception() is not None:
                exc = task.exception()
                log.error("gather failed", exc_info=exc)
                run.miss("evidence", "analysis", f"internal error: {type(exc).__name__}")
            elif task not in done:
                task.cancel()
                await asyncio.wait({task}, timeout=max(0.0, hard_deadline - loop.time()) / 4)
                return True
        except asyncio.CancelledError:
            task.cancel()
            raise
        return False

    # --- one collection per incident -----------------------------------------------------
    #
    # Alerts of one incident (same expression and narrowing, service and rounded window)
    # ask exactly the same questions, so while one collection for them is running, later
    # gathers join it instead of running their own chain: the answers were coalesced at the
    # HTTP level anyway, and this also shares the orchestration (dozens of steps per alert).
    # Each gather still waits only up to its own deadline and then takes what the shared
    # collection has so far, listing its unanswered steps exactly as its own chain would.
    # Only in-flight collections are joined (single-flight); once finished, later alerts
    # run their own chain, served by the HTTP cache and the memos.

    def _share_key(
        self, message: WebhookMessage, ev: GatheredEvidence
    ) -> tuple[Hashable, AlertQuery] | None:
        """The incident key, or None to collect alone (no generatorURL expression: the rule
        lookup and its failures are per alert)."""
        try:
            alert = self._primary(message)
            expr = expr_from_generator_url(alert.generatorURL)
            if expr is None:
                return None
            aq = analyse_expression(expr, {**message.commonLabels, **alert.labels})
        except Exception:  # the alert's own chain reports it
            return None
        # aq is memoised: one object per (expression, narrowing); the entry keeps it alive.
        return (id(aq), ev.service, ev.window_start, ev.window_end), aq

    async def _collect_shared(
        self,
        shared: tuple[Hashable, AlertQuery],
        run: _Run,
        message: WebhookMessage,
        received_at: datetime,
        hard_deadline: float,
    ) -> bool:
        loop = asyncio.get_running_loop()
        key, aq = shared
        sh = self._shared.get(key)
        if sh is None or sh.closing or sh.task.done():
            ev = run.ev
            srun = _Run(
                GatheredEvidence(
                    alert=ev.alert,
                    service=ev.service,
                    window_start=ev.window_start,
                    window_end=ev.window_end,
                ),
                run.deadline,
            )
            sh = _Shared(srun, asyncio.ensure_future(self._collect(srun, message, received_at)))
            sh.refs = aq
            self._shared[key] = sh
            self.shared_collections += 1
            sh.task.add_done_callback(lambda _t, k=key, s=sh: self._unshare(k, s))
        else:
            # Steps started from now on may run until the latest participant's deadline.
            sh.run.deadline = max(sh.run.deadline, run.deadline)
            self.shared_joins += 1
        sh.waiters += 1
        task = sh.task
        try:
            done, _ = await asyncio.wait({task}, timeout=max(0.0, run.deadline - loop.time()))
        except asyncio.CancelledError:
            sh.waiters -= 1
            if sh.waiters == 0 and not task.done():
                sh.closing = True
                task.cancel()
            raise
        sh.waiters -= 1
        timed_out = task not in done or task.cancelled()
        _adopt(run, sh.run)
        if not timed_out and task.exception() is not None:
            exc = task.exception()
            log.error("gather failed", exc_info=exc)
            run.miss("evidence", "analysis", f"internal error: {type(exc).__name__}")
        if timed_out and sh.waiters == 0 and not task.done():
            # Nobody is waiting for the rest: stop asking the backends, as a lone gather would.
            sh.closing = True
            task.cancel()
            await asyncio.wait({task}, timeout=max(0.0, hard_deadline - loop.time()) / 4)
        return timed_out

    def _unshare(self, key: Hashable, sh: _Shared) -> None:
        if self._shared.get(key) is sh:
            del self._shared[key]
        if not sh.task.cancelled():
            sh.task.exception()  # retrieved: each participant reports it

    # --- set-up ---------------------------------------------------------------------------

    def service_of(self, labels: dict[str, str]) -> str | None:
        for key in self.config.service_labels:
            if labels.get(key):
                return self.config.service_names.get(labels[key], labels[key])
        return None

    def _primary(self, message: WebhookMessage) -> Alert:
        alerts = message.alerts
        if len(alerts) == 1:  # the usual group of one: no start times to compare
            return alerts[0]
        firing = [a for a in alerts if a.status == "firing"]
        pool = firing or list(alerts)
        return min(pool, key=lambda a: a.starts_at)

    def _quantize(self, t: datetime, up: bool) -> datetime:
        q = self.config.time_quantum
        if q <= 0:
            return t
        ts = t.timestamp()
        ts = math.ceil(ts / q) * q if up else math.floor(ts / q) * q
        return datetime.fromtimestamp(ts, UTC)

    def _evidence(self, message: WebhookMessage, received_at: datetime) -> GatheredEvidence:
        if received_at.tzinfo is None:
            received_at = received_at.replace(tzinfo=UTC)
        alert = self._primary(message)
        labels = {**message.commonLabels, **alert.labels}
        starts = alert.starts_at
        end = received_at
        if alert.ends_at is not None and alert.ends_at < end:
            end = alert.ends_at
        end = max(end, starts + timedelta(seconds=1))
        start = starts - timedelta(seconds=self.config.lookback)
        info = AlertInfo(
            alertname=labels.get("alertname", ""),
            status=alert.status,
            service=self.service_of(labels),
            severity=labels.get("severity", ""),
            starts_at=starts,
            fingerprint=alert.fingerprint,
            labels=labels,
            summary=alert.annotations.get("summary", "")[:500],
            description=alert.annotations.get("description", "")[:1000],
            alerts_in_group=len(message.alerts),
            group_key=message.groupKey,
        )
        ev = GatheredEvidence(
            alert=info,
            service=info.service,
            window_start=self._quantize(start, up=False),
            window_end=self._quantize(end, up=True),
        )
        for key, kind, title in (
            ("dashboard_url", "dashboard", "Dashboard (from the alert)"),
            ("runbook_url", "runbook", "Runbook (from the alert)"),
        ):
            url = alert.annotations.get(key) or message.commonAnnotations.get(key)
            if url and safe_link(url):
                ev.links.append(Link(kind=kind, title=title, url=url, from_alert=True))
        if alert.generatorURL and safe_link(alert.generatorURL):
            ev.links.append(
                Link(
                    kind="generator",
                    title="Alert expression (from the alert)",
                    url=alert.generatorURL,
                    from_alert=True,
                )
            )
        return ev

    def _fallback(self, message: WebhookMessage, reason: str) -> EvidenceBundle:
        """A bundle that cannot fail to build: the alert alone and why there is nothing else."""
        try:
            labels = dict(message.commonLabels)
            starts = min(a.starts_at for a in message.alerts)
        except Exception:
            labels, starts = {}, datetime.now(UTC)
        return EvidenceBundle(
            alert=AlertInfo(
                alertname=labels.get("alertname", ""),
                status=message.status,
                starts_at=starts,
                labels=labels,
                group_key=message.groupKey,
            ),
            missing=[Missing(what="evidence", source="analysis", reason=reason[:400])],
            budget=BudgetInfo(token_budget=self.config.token_budget),
        )

    # --- collection -----------------------------------------------------------------------

    async def _collect(self, run: _Run, message: WebhookMessage, received_at: datetime) -> None:
        ev = run.ev
        for what, source, configured in (
            ("exemplars and rules", "prometheus", self.prometheus.configured),
            ("traces", "tempo", self.tempo.configured),
            ("logs", "loki", self.loki.configured),
            ("deploy annotations and Explore links", "grafana", self.grafana.configured),
        ):
            if not configured:
                run.miss(what, source, NOT_CONFIGURED)  # type: ignore[arg-type]
        jobs: list[Coroutine[Any, Any, None]] = [self._chain_and_deploys(run, message)]
        if ev.service:
            jobs += [
                self._service_errors(run),
                self._build_info(run),
                self._annotations(run),
                self._deploy_events(run),
            ]
        else:
            run.miss(
                "service",
                "alertmanager",
                "no alert label names the service (looked for "
                + ", ".join(self.config.service_labels)
                + ")",
            )
        await asyncio.gather(*jobs)

    async def _expression(self, run: _Run, message: WebhookMessage) -> AlertQuery | None:
        alert = self._primary(message)
        labels = {**message.commonLabels, **alert.labels}
        expr = expr_from_generator_url(alert.generatorURL)
        source = "generatorURL"
        if expr is None:
            if self.prometheus.configured:
                rules = await run.step(
                    "alert rules",
                    "prometheus",
                    self.prometheus.rules(run.deadline),
                    "GET /api/v1/rules?type=alert",
                )
                rule = match_rule(rules or [], labels) if rules is not None else None
                if rule is not None:
                    expr, source = rule.query, "rules"
                elif rules is not None:
                    run.miss(
                        "alert expression",
                        "prometheus",
                        "the alert has no generatorURL with g0.expr and no Prometheus "
                        f"alerting rule matches alertname={labels.get('alertname', '')!r}",
                    )
            else:
                run.miss(
                    "alert expression",
                    "alertmanager",
                    "the alert has no generatorURL with g0.expr and Prometheus is not "
                    "configured to look up its rule",
                )
        if expr is None:
            return None
        try:
            aq = analyse_expression(expr, labels, source)  # type: ignore[arg-type]
        except PromQLError as exc:
            run.miss("alert expression", "prometheus", str(exc)[:400], expr)
            return None
        run.ev.query = aq
        return aq

    async def _chain(self, run: _Run, message: WebhookMessage) -> None:
        ev = run.ev
        aq = await self._expression(run, message)
        start, end = ev.window_start.timestamp(), ev.window_end.timestamp()
        chosen: list[ChosenTrace] = []
        # Next-ranked exemplars per role, used up as chosen traces turn out missing in Tempo.
        spares: dict[str, list[ChosenTrace]] = {}
        if aq is not None and self.prometheus.configured:
            ev.exemplar_query = aq.primary.render()
            sel = await run.step(
                "exemplars",
                "prometheus",
                self.prometheus.select_exemplars(
                    aq,
                    start,
                    end,
                    self.config.top_traces,
                    self.config.healthy_traces,
                    run.deadline,
                    # Exemplar ages count from the window end (shared by an incident's alerts,
                    # so is the ranking); a resolved alert's traces have had time to arrive.
                    now=None if ev.alert.status == "resolved" else end,
                    ingest_lag=self.config.tempo.ingest_lag,
                ),
                ev.exemplar_query,
            )
            if sel is not None:
                chosen = sel.suspects + sel.healthy
                spares = {"suspect": list(sel.spare_suspects), "healthy": list(sel.spare_healthy)}
                if sel.finding:
                    ev.notes.append(sel.finding)
                for sk in sel.skipped:
                    run.miss(
                        "exemplars",
                        "prometheus",
                        f"{sk.count} exemplar(s) skipped: {sk.reason} (e.g. {sk.example})",
                        ev.exemplar_query,
                    )
        if not any(c.role == "suspect" for c in chosen):
            chosen += await self._search_fallback(run, aq)
        ev.chosen = chosen
        if not chosen:
            return
        if not self.tempo.configured and not self.loki.configured:
            return
        await asyncio.gather(*(self._one_trace(run, c, spares) for c in chosen))

    async def _search_fallback(self, run: _Run, aq: AlertQuery | None) -> list[ChosenTrace]:
        """No exemplar trace ids: ask Tempo for the service's failing or slow traces."""
        ev = run.ev
        if not self.tempo.configured or not ev.service:
            return []
        mode = "slow" if aq is not None and aq.kind == "latency" else "error"
        thr = aq.threshold_seconds if aq is not None else None
        thr = thr if thr is not None else self.config.tempo.slow_threshold
        start, end = int(ev.window_start.timestamp()), int(ev.window_end.timestamp())
        q = traceql_for(ev.service, mode, thr)
        healthy_q = traceql_for(ev.service, "healthy", thr)
        hits, healthy = await asyncio.gather(
            run.step(
                "trace search", "tempo", self.tempo.search(q, start, end, deadline=run.deadline), q
            ),
            run.step(
                "healthy trace search",
                "tempo",
                self.tempo.search(healthy_q, start, end, deadline=run.deadline),
                healthy_q,
            )
            if self.config.healthy_traces
            else _none(),
        )
        ev.exemplar_query = ev.exemplar_query or q
        out: list[ChosenTrace] = []
        ordered = sorted(hits or [], key=lambda h: -h.start_ns)
        for h in ordered[: self.config.top_traces]:
            out.append(
                ChosenTrace(
                    trace_id=h.trace_id,
                    role="suspect",
                    source="traceql",
                    reason=f"TraceQL {q}: {h.root_service} {h.root_name} {h.duration_ms:g} ms, "
                    f"most recent of {len(ordered)}",
                    value=h.duration_ms / 1000.0,
                    timestamp=h.start_ns / 1e9,
                )
            )
        if hits is not None and not hits:
            ev.notes.append(f"TraceQL fallback found no traces: {q}")
        seen = {c.trace_id for c in out}
        for h in sorted(healthy or [], key=lambda h: -h.start_ns):
            if len([c for c in out if c.role == "healthy"]) >= self.config.healthy_traces:
                break
            if h.trace_id in seen:
                continue
            out.append(
                ChosenTrace(
                    trace_id=h.trace_id,
                    role="healthy",
                    source="traceql",
                    reason=f"TraceQL {healthy_q}: {h.duration_ms:g} ms",
                    value=h.duration_ms / 1000.0,
                    timestamp=h.start_ns / 1e9,
                )
            )
        return out

    async def _one_trace(
        self, run: _Run, c: ChosenTrace, spares: dict[str, list[ChosenTrace]] | None = None
    ) -> None:
        """Tempo and (for suspects) Loki in parallel; the exemplar time sets the log window.
        A trace Tempo does not have may be replaced by one of `spares` (see `_not_found`)."""
        jobs: list[Coroutine[Any, Any, None]] = []
        if self.tempo.configured:
            jobs.append(self._fetch_trace(run, c, spares))
        if self.loki.configured and c.role == "suspect":
            jobs.append(self._trace_logs(run, c))
        await asyncio.gather(*jobs)
        if not any(x is c for x in run.ev.chosen):
            # Replaced by a spare: these would be lines of a trace the page does not show.
            run.ev.trace_logs.pop(c.trace_id, None)

    async def _fetch_trace(
        self, run: _Run, c: ChosenTrace, spares: dict[str, list[ChosenTrace]] | None = None
    ) -> None:
        q = f"GET /api/v2/traces/{c.trace_id}"
        res: TraceFetch | None = await run.step(
            f"trace {c.trace_id}", "tempo", self.tempo.fetch_trace(c.trace_id, run.deadline), q
        )
        if res is not None and res.outcome == "not_found":
            res = await self._not_found(run, c, res, spares)
        if res is None:
            return
        run.ev.traces[c.trace_id] = res
        if res.outcome == "found" and res.trace is not None:
            trace = res.trace
            run.ev.stats.raw_trace_bytes += self._memo.get(
                ("trace_bytes", id(trace)), trace, lambda: len(trace.model_dump_json())
            )
        else:
            run.miss(f"trace {c.trace_id}", "tempo", f"bad trace id ({res.detail})", q)

    async def _not_found(
        self,
        run: _Run,
        c: ChosenTrace,
        res: TraceFetch,
        spares: dict[str, list[ChosenTrace]] | None,
    ) -> TraceFetch | None:
        """A chosen trace Tempo answered as not found: the trace if a second look finds it,
        else None (replaced by a spare, or listed as missing here).

        Why: Tempo makes a trace queryable only some seconds after the request (its
        `ingest_lag`), so an exemplar that young usually names a trace that is merely not
        there yet. Such a suspect is asked once more after a short pause (an old one would
        not turn up in a second: lost, unsampled or expired); then, young or not, the next
        spare of its role is fetched in its place, since another request of the same kind
        serves the page as well (a role has at most as many spares as chosen traces). Each
        step is started only if the budget leaves time for an answer: cut off, it would turn
        a precise reason into "no answer within the budget". No spare or no time left: the
        trace is listed, saying whether it was too young for Tempo or really absent."""
        ev = run.ev
        cfg = self.config.tempo
        loop = asyncio.get_running_loop()
        q = res.query or f"GET /api/v2/traces/{c.trace_id}"
        ref = None if ev.alert.status == "resolved" else ev.window_end.timestamp()
        age = ref - c.timestamp if ref is not None and c.source == "exemplar" else None
        fresh = age is not None and age < cfg.ingest_lag
        margin = min(0.5, cfg.timeout)  # room for one trace fetch to answer
        delay = cfg.empty_retry_delay
        if (
            fresh
            and c.role == "suspect"
            and delay > 0
            and run.deadline - loop.time() >= delay + margin
        ):

            async def later() -> TraceFetch:
                await asyncio.sleep(delay)
                return await self.tempo.fetch_trace(c.trace_id, run.deadline, refetch=True)

            again = await run.step(f"trace {c.trace_id}", "tempo", later(), q)
            if again is None or again.outcome == "found":
                return again
        pool = (spares or {}).get(c.role) or []
        at = next((i for i, x in enumerate(ev.chosen) if x is c), None)
        if pool and at is not None and run.deadline - loop.time() >= margin:
            spare = pool.pop(0)
            why = "which Tempo did not have yet" if fresh else "which Tempo did not have"
            sub = self._memo.get(
                ("spare", id(spare), c.trace_id),
                spare,
                lambda: spare.model_copy(
                    update={"reason": f"{spare.reason}; in place of {c.trace_id}, {why}"}
                ),
            )
            ev.chosen[at] = sub
            await self._one_trace(run, sub, spares)
            return None
        ev.traces[c.trace_id] = res
        if fresh and age is not None:
            reason = (
                f"trace not ingested by Tempo yet (exemplar {max(0.0, age):.0f} s old; "
                f"Tempo lags up to {cfg.ingest_lag:g} s)"
            )
        else:
            reason = f"trace not found ({res.detail})"
        run.miss(f"trace {c.trace_id}", "tempo", reason, q)
        return None

    async def _trace_logs(self, run: _Run, c: ChosenTrace) -> None:
        pad = self.config.loki.trace_window
        t = c.timestamp
        start_ns = int(math.floor((t - pad) / 10) * 10 * 1e9)
        end_ns = int(math.ceil((t + pad) / 10) * 10 * 1e9)
        q = " ; ".join(self.loki.trace_queries(c.trace_id))
        res = await run.step(
            f"logs of trace {c.trace_id}",
            "loki",
            self.loki.trace_logs(c.trace_id, start_ns, end_ns, run.deadline),
            q,
        )
        if res is None:
            return
        results, errors = res
        run.ev.trace_logs[c.trace_id] = results
        run.ev.stats.raw_log_bytes += sum(self._log_bytes(r) for r in results)
        for e in errors:
            run.miss(f"logs of trace {c.trace_id}", "loki", _reason(e), q)

    async def _service_errors(self, run: _Run) -> None:
        ev = run.ev
        if not self.loki.configured or self.config.loki.error_limit == 0 or not ev.service:
            return
        q = self.loki.service_errors_query(ev.service)
        start_ns = int(ev.window_start.timestamp()) * 10**9
        end_ns = int(ev.window_end.timestamp()) * 10**9
        res = await run.step(
            "service error logs",
            "loki",
            self.loki.service_errors(ev.service, start_ns, end_ns, run.deadline),
            q,
        )
        if res is not None:
            ev.service_errors = res
            ev.stats.raw_log_bytes += self._log_bytes(res)

    def _log_bytes(self, r: LogQueryResult) -> int:
        return self._memo.get(
            ("log_bytes", id(r)), r, lambda: sum(len(ln.line) + 60 for ln in r.lines)
        )

    async def _build_info(self, run: _Run, service: str | None = None) -> None:
        ev = run.ev
        service = service or ev.service
        if not self.prometheus.configured or not service:
            return
        q = self.prometheus.build_info_query(service)
        series = await run.step(
            f"build info of {service}",
            "prometheus",
            self.prometheus.build_info(
                service, ev.window_start.timestamp(), ev.window_end.timestamp(), run.deadline
            ),
            q,
        )
        if series is None:
            return
        c = self.config.prometheus
        sig = self._memo.get(
            ("build_info", id(series), service, q),
            series,
            lambda: from_build_info(
                service, series, c.build_info_version_label, c.build_info_commit_label, q
            ),
        )
        if sig is not None:
            ev.deploy_signals.append(sig)
        elif service == ev.service:
            ev.notes.append(f"no {c.build_info_metric} series for service {service}")

    async def _annotations(self, run: _Run) -> None:
        ev = run.ev
        if not self.grafana.configured or not self.config.grafana.annotations or not ev.service:
            return
        from_ms = int(ev.window_start.timestamp() * 1000)
        to_ms = int(ev.window_end.timestamp() * 1000)
        q = f"GET /api/annotations?tags={self.config.grafana.deploy_tag}&from={from_ms}&to={to_ms}"
        anns = await run.step(
            "deploy annotations",
            "grafana",
            self.grafana.deploy_annotations(from_ms, to_ms, run.deadline),
            q,
        )
        if anns is not None:
            # Kept whole: they are matched to every service on the failing path at the end.
            ev.annotations = anns
            ev.annotations_query = q

    async def _deploy_events(self, run: _Run, service: str | None = None) -> None:
        ev = run.ev
        service = service or ev.service
        if self.deploys is None or not service:
            return
        coro = self.deploys.recent(service, ev.window_start, ev.window_end)
        events = await run.step(
            f"deploy events of {service}", "ci", coro, f"recent deploys of {service}"
        )
        if events:
            ev.deploy_signals.extend(from_events(events))

    async def _chain_and_deploys(self, run: _Run, message: WebhookMessage) -> None:
        await self._chain(run, message)
        await self._path_deploys(run)

    async def _path_deploys(self, run: _Run) -> None:
        """Deploy context of the services on the failing traces, not only the alert's: the
        cause often sits in a dependency, and its deploy is the one to roll back. Asked once
        the traces are in, since only they name those services."""
        ev = run.ev
        services = [s for s in self._path_services(ev) if s != ev.service]
        services = services[: self.config.deploy_services]
        if services:
            await asyncio.gather(
                self._path_build_info(run, services),
                *(self._deploy_events(run, svc) for svc in services),
            )

    async def _path_build_info(self, run: _Run, services: list[str]) -> None:
        ev = run.ev
        if not self.prometheus.configured:
            return
        q = self.prometheus.build_info_query_many(services)
        series = await run.step(
            "build info of the failing path",
            "prometheus",
            self.prometheus.build_info(
                services[0],
                ev.window_start.timestamp(),
                ev.window_end.timestamp(),
                run.deadline,
                query=q,
            ),
            q,
        )
        if not series:
            return
        c = self.config.prometheus
        for svc in services:
            mine = [x for x in series if x.labels.get(c.build_info_service_label) == svc]
            sig = self._memo.get(
                ("build_info", id(series), svc, q),
                series,
                lambda svc=svc, mine=mine: from_build_info(
                    svc, mine, c.build_info_version_label, c.build_info_commit_label, q
                ),
            )
            if sig is not None:
                ev.deploy_signals.append(sig)

    def _fetched(self, ev: GatheredEvidence) -> tuple[list[Trace], list[Trace]]:
        out: tuple[list[Trace], list[Trace]] = ([], [])
        for c in ev.chosen:
            fetch = ev.traces.get(c.trace_id)
            if fetch is not None and fetch.trace is not None:
                out[0 if c.role == "suspect" else 1].append(fetch.trace)
        return out

    def _path_services(self, ev: GatheredEvidence) -> list[str]:
        """Services of the failing traces: the suspects' own first, then their callers up
        the path, then the rest in the order the traces name them."""
        suspects, healthy = self._fetched(ev)
        if not suspects:
            return []
        f = self._analyse(suspects, healthy)
        order: list[str] = []
        for c in f.culprits or ([f.culprit] if f.culprit else []):
            order.append(c.span.service)
        for c in f.culprits or ([f.culprit] if f.culprit else []):
            order += [op.split(":", 1)[0] for op in _callers(f, c.span.op)]
        for t in f.suspects:
            order += list(t.resources)
        return list(dict.fromkeys(order))

    # --- finishing ------------------------------------------------------------------------

    def _finish(self, run: _Run, budget: float, timed_out: bool) -> EvidenceBundle:
        ev = run.ev
        suspects, healthy = self._fetched(ev)
        if suspects:
            ev.findings = self._analyse(suspects, healthy)
        elif ev.chosen and self.tempo.configured:
            ev.notes.append("none of the chosen traces could be fetched from Tempo")
        if ev.service or ev.findings is not None:
            f = ev.findings
            key = (
                "deploys",
                ev.service,
                ev.alert.starts_at,
                id(f),
                tuple(id(s) for s in ev.deploy_signals),
                id(ev.annotations),
            )
            ev.deploy = self._memo.get(
                key,
                (f, list(ev.deploy_signals), ev.annotations),
                lambda: self._deploy_contexts(ev),
            )
        self._links(ev)
        ev.stats.budget_s = budget
        ev.stats.timed_out = timed_out
        ev.stats.backend_requests = self.requests_sent()
        return build_bundle(
            ev, self.config.token_budget, self.config.loki.max_lines, self._bundle_memo
        )

    def _deploy_contexts(self, ev: GatheredEvidence) -> list[DeployContext]:
        """One deploy context per relevant service: the suspects' services first, then their
        callers on the failing path, then the alerting service; each with what the traces
        say about it (versions in failing and healthy traces, its operations that stand
        out, failing-only flags it carries), for the analysis to judge."""
        f = ev.findings
        suspects = (f.culprits or ([f.culprit] if f.culprit else [])) if f else []
        culprit_services = list(dict.fromkeys(c.span.service for c in suspects))
        callers: list[str] = []
        for c in suspects:
            if f is not None:
                callers += [op.split(":", 1)[0] for op in _callers(f, c.span.op)]
        on_path = {svc for t in f.suspects for svc in t.resources} if f else set()
        order = [*culprit_services, *callers]
        if ev.service:
            order.append(ev.service)
        order += sorted({s.service for s in ev.deploy_signals})
        # Deploys announced for services off the failing path: named, to be ruled out.
        order += sorted(
            {t.split(":", 1)[1] for a in ev.annotations for t in a.tags if t.startswith("service:")}
        )
        out: list[DeployContext] = []
        for svc in list(dict.fromkeys(order)):
            signals = [s for s in ev.deploy_signals if s.service == svc]
            if ev.annotations:
                signals += from_annotations(svc, ev.annotations, ev.annotations_query)
            if f is not None:
                for t in f.suspects:
                    res = t.resources.get(svc)
                    sig = _trace_resource_signal(svc, res, t.trace_id) if res else None
                    if sig is not None:
                        signals.insert(0, sig)
                        break
            if not signals and svc not in culprit_services and svc != ev.service:
                continue
            ctx = combine(svc, ev.alert.starts_at, signals)
            ctx.on_failing_path = svc in on_path
            ctx.role = (
                "culprit"
                if svc in culprit_services
                else "failing_path"
                if svc in callers
                else "alerting"
                if svc == ev.service
                else "other"
            )
            ctx.calls_culprit = svc in callers
            if f is not None:
                mine = [v for v in f.versions if v.service == svc]
                ctx.failing_versions = [v.value for v in mine if v.failing]
                ctx.healthy_versions = [v.value for v in mine if v.healthy]
                ctx.standout_ops = [c.span.name for c in f.culprits if c.span.service == svc]
                ctx.failing_only_flags = [
                    f"{a.key}={a.value}" for a in f.flags if a.failing_only and svc in a.services
                ]
            out.append(ctx)
            if len(out) >= self.config.deploy_services + 3:
                break
        return out

    def _analyse(self, suspects: list[Trace], healthy: list[Trace]) -> TraceFindings:
        """Analysis memoised on the trace objects: parsed traces are shared by every alert of
        an incident (cached, coalesced answers), so a storm analyses them once."""
        key = (tuple(id(t) for t in suspects), tuple(id(t) for t in healthy))
        hit = self._analysis_memo.get(key)
        if hit is not None:
            return hit[1]  # read-only downstream: the bundle is rebuilt from a fresh dump
        findings = analyse_traces(suspects, healthy)
        self._analysis_memo[key] = ([*suspects, *healthy], findings)
        while len(self._analysis_memo) > 256:
            self._analysis_memo.popitem(last=False)
        return findings

    def _links(self, ev: GatheredEvidence) -> None:
        from_ms = int(ev.window_start.timestamp() * 1000)
        to_ms = int(ev.window_end.timestamp() * 1000)
        culprit = ev.findings.culprit.trace_id if ev.findings and ev.findings.culprit else None
        ids = [culprit] if culprit else []
        ids += [c.trace_id for c in ev.chosen if c.role == "suspect" and c.trace_id not in ids]
        service = ev.service
        ev.links.extend(
            self._memo.get(
                (
                    "links",
                    tuple(ids),
                    from_ms,
                    to_ms,
                    service,
                    self.tempo.configured,
                    self.loki.configured,
                ),
                None,
                lambda: self._make_links(ids, from_ms, to_ms, service),
            )
        )

    def _make_links(
        self, ids: list[str], from_ms: int, to_ms: int, service: str | None
    ) -> list[Link]:
        links: list[Link] = []
        for tid in ids[: self.config.top_traces]:
            url = self.grafana.trace_link(tid, from_ms, to_ms)
            if url:
                links.append(Link(kind="grafana_trace", title=f"Trace {tid} in Grafana", url=url))
            if self.tempo.configured:
                links.append(
                    Link(
                        kind="tempo_trace",
                        title=f"Trace {tid} (Tempo API)",
                        url=self.tempo.trace_url(tid),
                    )
                )
        if ids:
            for q in self.loki.trace_queries(ids[0])[:1]:
                url = self.grafana.logs_link(q, from_ms, to_ms)
                if url:
                    links.append(
                        Link(kind="grafana_logs", title="Logs of the trace in Grafana", url=url)
                    )
        if service and self.loki.configured:
            url = self.grafana.logs_link(self.loki.service_errors_query(service), from_ms, to_ms)
            if url:
                links.append(Link(kind="grafana_logs", title=f"{service} error logs", url=url))
        return links


async def _none() -> None:
    return None


def _callers(f: TraceFindings, op: str) -> list[str]:
    """The operations above `op` on the failing traces, nearest first."""
    out: list[str] = []
    for t in f.suspects:
        cur = t.parent_ops.get(op)
        while cur is not None and cur not in out and cur != op:
            out.append(cur)
            cur = t.parent_ops.get(cur)
        if out:
            break
    return out


def _trace_resource_signal(service: str, res: Any, trace_id: str) -> DeploySignal | None:
    sig = from_trace_resource(service, res)
    if sig is not None:
        sig.query = f"GET /api/v2/traces/{trace_id}"
    return sig

"""A Prometheus double for the three endpoints the evidence chain uses.

`query_exemplars` extracts the selectors of the query with promql-parser (as Prometheus does:
it does not evaluate the expression) and answers with stored exemplars of matching series in
[start, end]; `query_range`/`query` answer plain selectors from stored samples; `rules`
returns configured alerting rules. Shapes and errors (`{"status":"error","errorType":
"bad_data",...}` with 400) follow the recorded Prometheus 2.42 answers. The real Prometheus
is used as well, in the exemplar test; this double serves gather tests and the benchmark.
"""

from __future__ import annotations

import re
from typing import Any

import promql_parser as pp
from aiohttp import web

from tests.doubles._server import DoubleServer, answer

_OPS = {"MatchOp.Equal": "=", "MatchOp.NotEqual": "!=", "MatchOp.Re": "=~", "MatchOp.NotRe": "!~"}


def _selectors(expr: Any) -> list[tuple[str | None, list[tuple[str, str, str]]]]:
    out: list[tuple[str | None, list[tuple[str, str, str]]]] = []

    def visit(node: Any) -> None:
        if isinstance(node, pp.VectorSelector):
            out.append(
                (node.name, [(m.name, _OPS[str(m.op)], m.value) for m in node.matchers.matchers])
            )

    pp.walk(expr, visit)
    return out


def _match(labels: dict[str, str], name: str | None, matchers: list[tuple[str, str, str]]) -> bool:
    if name and labels.get("__name__") != name:
        return False
    for n, op, v in matchers:
        actual = labels.get(n, "")
        ok = {
            "=": actual == v,
            "!=": actual != v,
            "=~": re.fullmatch(v, actual) is not None,
            "!~": re.fullmatch(v, actual) is None,
        }[op]
        if not ok:
            return False
    return True


def _bad(msg: str) -> web.Response:
    return answer({"status": "error", "errorType": "bad_data", "error": msg}, 400)


class PrometheusDouble(DoubleServer):
    def __init__(self, latency: float = 0.0) -> None:
        self.exemplars: dict[tuple[tuple[str, str], ...], list[dict[str, Any]]] = {}
        self.samples: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
        self.rules: list[dict[str, Any]] = []
        # (label, value) -> series keys: narrows candidates; each is still fully matched.
        self._index: dict[tuple[str, str], set[tuple[tuple[str, str], ...]]] = {}
        self._samples_index: dict[tuple[str, str], set[tuple[tuple[str, str], ...]]] = {}
        super().__init__(latency)

    def routes(self, app: web.Application) -> None:
        for path, h in (
            ("/api/v1/query_exemplars", self._exemplars),
            ("/api/v1/query_range", self._query_range),
            ("/api/v1/query", self._query),
            ("/api/v1/rules", self._rules),
        ):
            app.router.add_get(path, h)
            app.router.add_post(path, h)
        app.router.add_get("/-/ready", self._ready)

    # --- data -----------------------------------------------------------------------------

    def add_exemplar(
        self, series: dict[str, str], labels: dict[str, str], value: float, ts: float
    ) -> None:
        key = tuple(sorted(series.items()))
        for kv in key:
            self._index.setdefault(kv, set()).add(key)
        self.exemplars.setdefault(key, []).append(
            {"labels": dict(labels), "value": repr(float(value)), "timestamp": round(ts, 3)}
        )

    def add_samples(self, series: dict[str, str], samples: list[tuple[float, float]]) -> None:
        key = tuple(sorted(series.items()))
        for kv in key:
            self._samples_index.setdefault(kv, set()).add(key)
        self.samples.setdefault(key, []).extend(samples)

    def add_rule(
        self,
        name: str,
        query: str,
        labels: dict[str, str],
        annotations: dict[str, str] | None = None,
        alerts: list[dict[str, str]] | None = None,
    ) -> None:
        self.rules.append(
            {
                "state": "firing" if alerts else "inactive",
                "name": name,
                "query": query,
                "duration": 30,
                "keepFiringFor": 0,
                "labels": labels,
                "annotations": annotations or {},
                "alerts": [
                    {
                        "labels": a,
                        "annotations": annotations or {},
                        "state": "firing",
                        "activeAt": "2026-01-01T00:00:00Z",
                        "value": "1e+00",
                    }
                    for a in alerts or []
                ],
                "health": "ok",
                "evaluationTime": 0.0005,
                "lastEvaluation": "2026-01-01T00:00:00Z",
                "type": "alerting",
            }
        )

    # --- handlers -------------------------------------------------------------------------

    async def _params(self, request: web.Request) -> dict[str, str]:
        params = dict(request.query)
        if request.method == "POST":
            params.update({k: str(v) for k, v in (await request.post()).items()})
        return params

    async def _exemplars(self, request: web.Request) -> web.Response:
        p = await self._params(request)
        try:
            expr = pp.parse(p.get("query", ""))
        except ValueError as exc:
            return _bad(f"1:2: parse error: {exc}")
        start = float(p.get("start", "-inf"))
        end = float(p.get("end", "inf"))
        if end < start:
            return _bad("end timestamp must not be before start time")
        sels = _selectors(expr)
        if not sels:
            return answer({"status": "success"})
        data = []
        for key in self._candidates(sels):
            exs = self.exemplars[key]
            labels = dict(key)
            if not any(_match(labels, n, m) for n, m in sels):
                continue
            chosen = [e for e in exs if start <= e["timestamp"] <= end]
            if chosen:
                data.append({"seriesLabels": labels, "exemplars": chosen})
        return answer({"status": "success", "data": data})

    def _candidates(
        self,
        sels: list[tuple[str | None, list[tuple[str, str, str]]]],
        index: dict[tuple[str, str], set[tuple[tuple[str, str], ...]]] | None = None,
        every: Any = None,
    ) -> list[tuple[tuple[str, str], ...]]:
        """Series keys that can match any selector, sorted. Only non-empty `=` matchers
        narrow (`x=""` also matches series without `x`, which no index entry names)."""
        index = self._index if index is None else index
        every = self.exemplars if every is None else every
        keys: set[tuple[tuple[str, str], ...]] = set()
        for name, matchers in sels:
            eq = [(n, v) for n, op, v in matchers if op == "=" and v]
            if name:
                eq.append(("__name__", name))
            if not eq:
                return sorted(every)
            found = set.intersection(*(index.get(kv, set()) for kv in eq))
            keys |= found
        return sorted(keys)

    def _select(self, query: str) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
        expr = pp.parse(query)
        sels = _selectors(expr)
        out = []
        for key in self._candidates(sels, self._samples_index, self.samples):
            samples = self.samples[key]
            labels = dict(key)
            if any(_match(labels, n, m) for n, m in sels):
                out.append((labels, samples))
        return out

    async def _query_range(self, request: web.Request) -> web.Response:
        p = await self._params(request)
        try:
            start, end = float(p["start"]), float(p["end"])
            series = self._select(p.get("query", ""))
        except (KeyError, ValueError) as exc:
            return _bad(f"invalid parameter: {exc}")
        result = [
            {"metric": labels, "values": [[t, repr(v)] for t, v in sorted(s) if start <= t <= end]}
            for labels, s in series
        ]
        result = [r for r in result if r["values"]]
        return answer({"status": "success", "data": {"resultType": "matrix", "result": result}})

    async def _query(self, request: web.Request) -> web.Response:
        p = await self._params(request)
        try:
            t = float(p.get("time", "inf"))
            series = self._select(p.get("query", ""))
        except ValueError as exc:
            return _bad(f"invalid parameter: {exc}")
        result = []
        for labels, s in series:
            before = [x for x in sorted(s) if x[0] <= t]
            if before:
                result.append({"metric": labels, "value": [before[-1][0], repr(before[-1][1])]})
        return answer({"status": "success", "data": {"resultType": "vector", "result": result}})

    async def _rules(self, request: web.Request) -> web.Response:
        groups = (
            [
                {
                    "name": "test",
                    "file": "rules.yml",
                    "rules": self.rules,
                    "interval": 5,
                    "limit": 0,
                    "evaluationTime": 0.001,
                    "lastEvaluation": "2026-01-01T00:00:00Z",
                }
            ]
            if self.rules
            else []
        )
        return answer({"status": "success", "data": {"groups": groups}})

    async def _ready(self, request: web.Request) -> web.Response:
        return web.Response(text="Prometheus Server is Ready.\n")

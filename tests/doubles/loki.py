"""A Loki double: push API ingest and `query_range` for log queries, in Loki 3's shapes.

Recorded behaviour reproduced (fixtures/real/checkout-slow-query): structured metadata and a
`detected_level` merged into the stream labels (one stream per distinct label set), ns
timestamps as strings, the `stats` object, `Content-Type: application/json; charset=UTF-8`;
errors as 400 text/plain (`parse error at line 1, col N: ...`, the empty-compatible selector
rule, the max entries limit). LogQL subset: a selector with =, !=, =~, !~ matchers, then any
of `|= "s"`, `!= "s"`, `|~ "re"`, `!~ "re"`, `| label="v"` / `| label=~"re"`.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from aiohttp import web

from enricher.demo.logql import LogQLError
from enricher.demo.logql import LogQuery as _Query
from tests.doubles._server import DoubleServer, answer

MAX_ENTRIES = 5000
_HEX32 = re.compile(r"[0-9a-f]{32}")
_HEX_RUN = re.compile(r"[0-9a-f]{32,}")
_LEVELS = ("error", "warn", "info", "debug", "fatal", "critical", "trace")


def _zero_stats() -> dict[str, Any]:
    store = {
        "totalChunksRef": 0,
        "totalChunksDownloaded": 0,
        "chunksDownloadTime": 0,
        "queryReferencedStructuredMetadata": False,
        "queryUsedV2Engine": False,
        "chunk": {
            k: 0
            for k in (
                "headChunkBytes",
                "headChunkLines",
                "decompressedBytes",
                "decompressedLines",
                "compressedBytes",
                "totalDuplicates",
                "postFilterLines",
                "headChunkStructuredMetadataBytes",
                "decompressedStructuredMetadataBytes",
            )
        },
        "chunkRefsFetchTime": 0,
        "congestionControlLatency": 0,
        "pipelineWrapperFilteredLines": 0,
        "dataobj": {
            k: 0
            for k in (
                "prePredicateDecompressedRows",
                "prePredicateDecompressedBytes",
                "prePredicateDecompressedStructuredMetadataBytes",
                "postPredicateRows",
                "postPredicateDecompressedBytes",
                "postPredicateStructuredMetadataBytes",
                "postFilterRows",
                "pagesScanned",
                "pagesDownloaded",
                "pagesDownloadedBytes",
                "pageBatches",
                "totalRowsAvailable",
                "totalPageDownloadTime",
                "wireBytesTransferred",
            )
        },
    }
    cache_entry = {
        k: 0
        for k in (
            "entriesFound",
            "entriesRequested",
            "entriesStored",
            "bytesReceived",
            "bytesSent",
            "requests",
            "downloadTime",
            "queryLengthServed",
        )
    }
    return {
        "summary": {
            "bytesProcessedPerSecond": 0,
            "linesProcessedPerSecond": 0,
            "totalBytesProcessed": 0,
            "totalLinesProcessed": 0,
            "execTime": 0.0,
            "queueTime": 0.0,
            "subqueries": 0,
            "totalEntriesReturned": 0,
            "splits": 0,
            "shards": 1,
            "totalPostFilterLines": 0,
            "totalStructuredMetadataBytesProcessed": 0,
        },
        "querier": {"store": dict(store), "querierExecTime": 0.0},
        "ingester": {
            "totalReached": 1,
            "totalChunksMatched": 0,
            "totalBatches": 0,
            "totalLinesSent": 0,
            "store": dict(store),
            "recvWaitTime": 0.0,
        },
        "cache": {
            k: dict(cache_entry)
            for k in (
                "chunk",
                "index",
                "result",
                "statsResult",
                "volumeResult",
                "seriesResult",
                "labelResult",
                "instantMetricResult",
                "logResult",
                "taskResult",
            )
        },
        "index": {
            "totalChunks": 0,
            "postFilterChunks": 0,
            "shardsDuration": 0,
            "usedBloomFilters": False,
            "totalStreams": 0,
            "chunkRefsLookupTime": 0,
            "bloomFilterTime": 0,
        },
    }


def parse_time(raw: str | None, default: int) -> int:
    """Loki's parseTimestamp: '.' -> float seconds; <=10 digits -> seconds; else ns; RFC3339."""
    if raw is None or raw == "":
        return default
    if "." in raw and re.fullmatch(r"[\d.]+", raw):
        return int(round(float(raw), 3) * 1e9)
    if re.fullmatch(r"\d+", raw):
        return int(raw) * 10**9 if len(raw) <= 10 else int(raw)
    return int(datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp() * 1e9)


def detected_level(labels: dict[str, str], meta: dict[str, str], line: str) -> str:
    for src in (meta, labels):
        lv = src.get("level") or src.get("severity")
        if lv:
            return lv.lower()
    first = line.split(" ", 1)[0].strip("[]:").lower()
    if first in _LEVELS:
        return first
    m = re.search(r"\blevel=(\w+)", line)
    return m.group(1).lower() if m else "unknown"


class LokiDouble(DoubleServer):
    def __init__(self, latency: float = 0.0) -> None:
        # (labels, ts_ns, line, structured metadata)
        self.entries: list[tuple[dict[str, str], int, str, dict[str, str]]] = []
        # Narrowing indexes only (every candidate is still fully matched): trace-id-like
        # tokens of lines and metadata, and entries per stream label set.
        self._by_token: dict[str, list[int]] = {}
        self._by_stream: dict[tuple[tuple[str, str], ...], list[int]] = {}
        super().__init__(latency)

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/loki/api/v1/push", self._push)
        app.router.add_get("/loki/api/v1/query_range", self._query_range)
        app.router.add_get("/ready", self._ready)

    def push(self, body: dict[str, Any]) -> int:
        """Store a push-API JSON body; raises ValueError as Loki would answer 400."""
        n = 0
        for s in body.get("streams", []):
            labels = s.get("stream") or {}
            if not labels:
                raise ValueError("error at least one label pair is required per stream")
            for v in s.get("values", []):
                if not isinstance(v[0], str):
                    raise ValueError("timestamp must be a string of unix nanoseconds")
                meta = v[2] if len(v) > 2 and isinstance(v[2], dict) else {}
                entry = (
                    {str(k): str(x) for k, x in labels.items()},
                    int(v[0]),
                    str(v[1]),
                    {str(k): str(x) for k, x in meta.items()},
                )
                self._index(len(self.entries), entry)
                self.entries.append(entry)
                n += 1
        return n

    def _index(self, i: int, entry: tuple[dict[str, str], int, str, dict[str, str]]) -> None:
        """Narrowing indexes, supersets by construction: every 32-hex window of every hex run
        in the line (a `|= "<trace id>"` hit must contain one), every 32-hex label or
        metadata value (a `| trace_id="<id>"` hit must have one), and the stream label set."""
        labels, _, line, meta = entry
        tokens: set[str] = set()
        for m in _HEX_RUN.finditer(line):
            run = m.group(0)
            tokens.update(run[k : k + 32] for k in range(len(run) - 31))
        for val in (*labels.values(), *meta.values()):
            if _HEX32.fullmatch(val):
                tokens.add(val)
        for t in tokens:
            self._by_token.setdefault(t, []).append(i)
        self._by_stream.setdefault(tuple(sorted(labels.items())), []).append(i)

    async def _push(self, request: web.Request) -> web.Response:
        try:
            self.push(await request.json())
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            return answer(f"{exc}\n", 400, "text/plain; charset=utf-8")
        return web.Response(status=204)

    async def _query_range(self, request: web.Request) -> web.Response:
        qs = request.query
        try:
            query = _Query(qs.get("query", ""))
            limit = int(qs.get("limit", "100"))
            if limit > MAX_ENTRIES:
                raise LogQLError(
                    "max entries limit per query exceeded, limit > max_entries_limit_per_query "
                    f"({limit} > {MAX_ENTRIES})"
                )
            end = parse_time(qs.get("end"), 2**63 - 1)
            start = parse_time(qs.get("start"), end - 3600 * 10**9)
        except (LogQLError, ValueError, re.error) as exc:
            return answer(str(exc), 400, "text/plain; charset=utf-8")
        backward = qs.get("direction", "backward") != "forward"
        entries = self.entries
        hits = [
            e
            for e in (entries[i] for i in self._candidates(query))
            if start <= e[1] < end and query.matches(e[0], e[2], e[3])
        ]
        hits.sort(key=lambda e: e[1], reverse=backward)
        hits = hits[:limit]
        streams: dict[tuple[tuple[str, str], ...], list[list[str]]] = {}
        for labels, ts, line, meta in hits:
            merged = {**labels, **meta}
            merged["detected_level"] = detected_level(labels, meta, line)
            key = tuple(sorted(merged.items()))
            streams.setdefault(key, []).append([str(ts), line])
        stats = _zero_stats()
        stats["summary"]["totalEntriesReturned"] = len(hits)
        stats["summary"]["totalLinesProcessed"] = len(self.entries)
        stats["summary"]["totalPostFilterLines"] = len(hits)
        body = {
            "status": "success",
            "data": {
                "resultType": "streams",
                "result": [{"stream": dict(k), "values": v} for k, v in sorted(streams.items())],
                "stats": stats,
            },
        }
        return answer(body, 200, "application/json; charset=UTF-8")

    def _candidates(self, query: _Query) -> list[int]:
        for kind, op, v in query.stages:
            label_eq = kind == "label" and op.endswith("=") and not op.endswith(("!=", "=~"))
            if _HEX32.fullmatch(v) and (op == "|=" or label_eq):
                return sorted(self._by_token.get(v, []))
        out: list[int] = []
        for key, idxs in self._by_stream.items():
            labels = dict(key)
            if all(query._label_ok(labels.get(n, ""), op, v) for n, op, v in query.matchers):
                out.extend(idxs)
        return sorted(out)  # insertion order, as a full scan would see them

    async def _ready(self, request: web.Request) -> web.Response:
        return web.Response(text="ready\n", content_type="text/plain")

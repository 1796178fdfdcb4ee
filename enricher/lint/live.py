"""Questions `enricher lint --prometheus URL` asks a running Prometheus.

Imported only in live mode, so the offline linter never loads prometheus-api-client or requests.
Every answer is cached: a rule set asks about the same few metrics many times. A failed request
answers None ("do not know"), and the check stays quiet about it; the first failure is kept in
`errors` for the command to print.
"""

from __future__ import annotations

import time
from typing import Any

from enricher.lint.durations import format_duration
from enricher.lint.promql import Matcher, Sel

_FAMILY_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


class LiveError(RuntimeError):
    """Prometheus cannot be reached at all; the command exits 2."""


class Live:
    def __init__(self, url: str, lookback: float = 7200.0, timeout: float = 10.0) -> None:
        import requests
        from prometheus_api_client import PrometheusConnect

        self.url = url.rstrip("/")
        self.lookback = lookback
        self.timeout = timeout
        self.client = PrometheusConnect(url=self.url, timeout=timeout)
        self.session = requests.Session()
        self.errors: list[str] = []
        self._cache: dict[tuple[str, str], Any] = {}

    def ping(self) -> None:
        """Raise LiveError unless the server answers its build-info endpoint."""
        try:
            resp = self.session.get(f"{self.url}/api/v1/status/buildinfo", timeout=self.timeout)
        except Exception as exc:
            raise LiveError(f"cannot reach Prometheus at {self.url}: {exc}") from None
        if resp.status_code != 200:
            raise LiveError(f"Prometheus at {self.url} answered HTTP {resp.status_code}")

    @property
    def window(self) -> str:
        return format_duration(self.lookback)

    def _memo(self, kind: str, key: str, fn: Any) -> Any:
        k = (kind, key)
        if k not in self._cache:
            try:
                self._cache[k] = fn()
            except Exception as exc:
                if not self.errors:
                    self.errors.append(f"{kind} {key}: {type(exc).__name__}: {exc}")
                self._cache[k] = None
        return self._cache[k]

    def count(self, sel: Sel, *extra: Matcher) -> int | None:
        """How many series `sel` matched at any time in the lookback window."""
        text = sel.text(*extra)

        def ask() -> int:
            result = self.client.custom_query(f"count(last_over_time({text}[{self.window}]))")
            return int(float(result[0]["value"][1])) if result else 0

        return self._memo("count", text, ask)

    def metric_type(self, name: str) -> str | None:
        """The type in the scrape metadata ("counter", "histogram", ...), if a target reports it."""

        def ask() -> str | None:
            candidates = [name] + [
                name[: -len(s)] for s in _FAMILY_SUFFIXES if name.endswith(s) and len(name) > len(s)
            ]
            for candidate in candidates:
                for entry in self.client.get_metric_metadata(metric=candidate):
                    kind = entry.get("type")
                    if kind and kind != "unknown":
                        return str(kind)
            return None

        return self._memo("metadata", name, ask)

    def exemplars(self, sel: Sel, seconds: float = 3600.0) -> int | None:
        """How many exemplars the selector's series carried in the last `seconds`."""
        text = sel.text()

        def ask() -> int:
            end = time.time()
            resp = self.session.get(
                f"{self.url}/api/v1/query_exemplars",
                params={"query": text, "start": end - seconds, "end": end},
                timeout=self.timeout,
            )
            resp.raise_for_status()
            data = resp.json().get("data") or []
            return sum(len(series.get("exemplars") or []) for series in data)

        return self._memo("exemplars", text, ask)

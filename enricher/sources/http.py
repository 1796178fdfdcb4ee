"""The one HTTP helper every backend client uses: limits, coalescing, caching, timing.

Why shared: an alert storm of one incident sends the same few questions to Prometheus, Tempo
and Loki hundreds of times within seconds. Each backend module owns its URLs and parsing;
this module makes sure that, whatever they ask, (1) at most `concurrency` requests are in
flight per backend, (2) identical in-flight requests are sent once (single-flight), and
(3) identical answers are reused for a short TTL. Every real request is timed in
`enricher_backend_request_seconds{backend,endpoint,outcome}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar
from urllib.parse import urlencode

import aiohttp
from prometheus_client import Histogram
from pydantic import BaseModel, ConfigDict

from enricher.sources.config import BackendConfig

BACKEND_SECONDS = Histogram(
    "enricher_backend_request_seconds",
    "Latency of one HTTP request to an evidence backend.",
    ["backend", "endpoint", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

ErrorKind = Literal[
    "not_configured", "timeout", "unavailable", "http_error", "bad_request", "bad_response"
]
T = TypeVar("T")
Params = Mapping[str, str | int | float] | Sequence[tuple[str, str | int | float]]


class BackendError(Exception):
    """A backend could not answer usefully; `kind` decides how the gather records it."""

    def __init__(
        self,
        backend: str,
        endpoint: str,
        kind: ErrorKind,
        detail: str,
        status: int | None = None,
    ) -> None:
        super().__init__(f"{backend} {endpoint}: {kind}: {detail}")
        self.backend = backend
        self.endpoint = endpoint
        self.kind = kind
        self.detail = detail
        self.status = status


class HttpResponse(BaseModel):
    """A raw answer; parsing belongs to the backend module that asked."""

    model_config = ConfigDict(frozen=True)

    status: int
    content_type: str
    body: bytes
    url: str

    def text(self, limit: int = 500) -> str:
        return self.body[:limit].decode("utf-8", "replace").strip()

    def raise_for_status(self, backend: str, endpoint: str) -> None:
        """Anything but 200 is an error: 400 means the backend rejected our query."""
        if self.status == 400:
            raise BackendError(backend, endpoint, "bad_request", self.text(300), 400)
        if self.status != 200:
            raise BackendError(
                backend,
                endpoint,
                "http_error",
                f"HTTP {self.status}: {self.text(200)}",
                self.status,
            )

    def parse_json(self, backend: str, endpoint: str) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            raise BackendError(backend, endpoint, "bad_response", "body is not JSON") from None


def _outcome(status: int) -> str:
    if status < 400:
        return "ok"
    if status < 500:
        return "client_error"
    return "server_error"


class _Slots:
    """At most `n` holders; waiters are served earliest deadline first (FIFO among equal
    deadlines). With more requests queued than the limit lets through (many incidents at
    once), this finishes the oldest gathers first instead of slowing every gather down
    until all of them miss their budgets. The limit itself is unchanged."""

    def __init__(self, n: int) -> None:
        self.free = n
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    async def acquire(self, deadline: float) -> None:
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (deadline, next(self._seq), fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # granted just as we were cancelled: pass it on
            raise

    def release(self) -> None:
        while self._waiters:
            fut = heapq.heappop(self._waiters)[2]
            if not fut.done():  # skip waiters that gave up (timed out, cancelled)
                fut.set_result(None)
                return
        self.free += 1


class HttpBackend:
    """GET requests to one backend with a concurrency limit, single-flight and a TTL cache."""

    MAX_CACHE = 4096

    def __init__(
        self,
        name: str,
        config: BackendConfig,
        session: aiohttp.ClientSession | None,
        cache_ttl: float,
    ) -> None:
        self.name = name
        self.config = config
        self.session = session
        self.cache_ttl = cache_ttl
        self._slots = _Slots(config.concurrency)
        self._inflight: dict[str, asyncio.Future[HttpResponse]] = {}
        self._cache: OrderedDict[str, tuple[float, HttpResponse]] = OrderedDict()
        self._parsed: OrderedDict[tuple[int, str], tuple[HttpResponse, object]] = OrderedDict()
        self._urls: dict[tuple[str, Any], str] = {}
        self.sent = 0  # real requests sent, for tests and the benchmark
        self.bytes_received = 0

    @property
    def configured(self) -> bool:
        return self.config.base_url is not None and self.session is not None

    def url_for(self, path: str, params: Params | None = None) -> str:
        """The request URL; memoised, since an alert storm asks the same few URLs."""
        if isinstance(params, Mapping):
            key: tuple[str, Any] = (path, tuple(params.items()))
        else:
            key = (path, tuple(params) if params else None)
        url = self._urls.get(key)
        if url is None:
            base = self.config.base_url or ""
            url = f"{base}{path}" + (f"?{urlencode(params)}" if params else "")
            if len(self._urls) >= self.MAX_CACHE:
                self._urls.clear()
            self._urls[key] = url
        return url

    def headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        h: dict[str, str] = {}
        if self.config.tenant:
            h["X-Scope-OrgID"] = self.config.tenant
        if self.config.bearer_token:
            h["Authorization"] = f"Bearer {self.config.bearer_token}"
        if extra:
            h.update(extra)
        return h

    async def get(
        self,
        endpoint: str,
        path: str,
        params: Params | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        deadline: float | None = None,
        retries: int = 0,
        backoff: float = 0.05,
        cache: bool = True,
    ) -> HttpResponse:
        """One logical GET. Raises BackendError for transport failures and timeouts only:
        HTTP error statuses are returned, because their meaning is backend-specific."""
        if not self.configured:
            raise BackendError(self.name, endpoint, "not_configured", "no URL configured")
        url = self.url_for(path, params)
        key = url + "\x00" + "\x00".join(f"{k}={v}" for k, v in sorted((headers or {}).items()))
        now = time.monotonic()
        if cache and self.cache_ttl > 0:
            hit = self._cache.get(key)
            if hit is not None and hit[0] > now:
                return hit[1]
        fut = self._inflight.get(key)
        if fut is None:
            fut = asyncio.ensure_future(
                self._fetch(endpoint, url, headers, deadline, retries, backoff)
            )
            self._inflight[key] = fut
            fut.add_done_callback(lambda f, k=key, c=cache: self._settle(k, f, c))
        # Shield: one caller giving up (its own budget) must not cancel the shared request.
        return await asyncio.shield(fut)

    def parsed(self, resp: HttpResponse, kind: str, parse: Callable[[], T]) -> T:
        """Parse a response once: cached and coalesced answers are the same object, so an
        alert storm parses each trace and log answer once instead of once per alert."""
        key = (id(resp), kind)
        hit = self._parsed.get(key)
        if hit is not None and hit[0] is resp:
            return hit[1]  # type: ignore[return-value]
        value = parse()
        self._parsed[key] = (resp, value)
        while len(self._parsed) > 512:
            self._parsed.popitem(last=False)
        return value

    def _settle(self, key: str, fut: asyncio.Future[HttpResponse], cache: bool) -> None:
        self._inflight.pop(key, None)
        if fut.cancelled():
            return
        exc = fut.exception()  # also marks the exception retrieved
        if exc is not None or not cache or self.cache_ttl <= 0:
            return
        resp = fut.result()
        # 5xx and 429 are transient; everything else is the backend's considered answer.
        if resp.status >= 500 or resp.status == 429:
            return
        self._cache[key] = (time.monotonic() + self.cache_ttl, resp)
        self._cache.move_to_end(key)
        while len(self._cache) > self.MAX_CACHE:
            self._cache.popitem(last=False)

    async def _fetch(
        self,
        endpoint: str,
        url: str,
        headers: Mapping[str, str] | None,
        deadline: float | None,
        retries: int,
        backoff: float,
    ) -> HttpResponse:
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            remaining = self.config.timeout
            if deadline is not None:
                remaining = min(remaining, deadline - loop.time())
            if remaining <= 0.001:
                raise BackendError(self.name, endpoint, "timeout", "no time left in the budget")
            try:
                resp = await self._once(endpoint, url, headers, remaining, deadline)
            except BackendError as exc:
                if exc.kind not in ("timeout", "unavailable") or attempt >= retries:
                    raise
            else:
                if resp.status < 500 or attempt >= retries:
                    return resp
            attempt += 1
            pause = backoff * (2 ** (attempt - 1))
            if deadline is not None and loop.time() + pause >= deadline:
                raise BackendError(
                    self.name, endpoint, "timeout", f"budget exhausted after {attempt} attempt(s)"
                )
            await asyncio.sleep(pause)

    async def _once(
        self,
        endpoint: str,
        url: str,
        headers: Mapping[str, str] | None,
        timeout: float,
        deadline: float | None = None,
    ) -> HttpResponse:
        assert self.session is not None
        started = time.perf_counter()
        outcome = "error"
        try:
            async with asyncio.timeout(timeout):
                await self._slots.acquire(math.inf if deadline is None else deadline)
                try:
                    self.sent += 1
                    async with self.session.get(url, headers=self.headers(headers)) as r:
                        body = await r.read()
                        self.bytes_received += len(body)
                        outcome = _outcome(r.status)
                        return HttpResponse(
                            status=r.status,
                            content_type=r.headers.get("Content-Type", ""),
                            body=body,
                            url=url,
                        )
                finally:
                    self._slots.release()
        except TimeoutError:
            outcome = "timeout"
            raise BackendError(
                self.name, endpoint, "timeout", f"no answer within {timeout:.2f}s"
            ) from None
        except aiohttp.ClientError as exc:
            outcome = "error"
            raise BackendError(
                self.name, endpoint, "unavailable", f"{type(exc).__name__}: {exc}"
            ) from None
        finally:
            with contextlib.suppress(Exception):
                BACKEND_SECONDS.labels(self.name, endpoint, outcome).observe(
                    time.perf_counter() - started
                )

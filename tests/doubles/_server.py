"""Common machinery of the HTTP test doubles: a real aiohttp server on a free loopback port.

Why real servers: the clients under test must meet real sockets, timeouts, status codes and
content types, not mocks of their own HTTP library. Each double can run inside a test's event
loop (`await d.start()`) or on its own thread and loop (`d.start_in_thread()`) for the
benchmark. Faults (status, delay) are injected per path prefix, per test.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Fault:
    path_prefix: str
    status: int | None = 500
    delay: float = 0.0
    body: str = "injected fault"
    content_type: str = "text/plain"
    times: int | None = None  # None: every matching request
    hits: int = field(default=0)


class DoubleServer:
    """Base class: request log, per-path counts, injected latency and faults."""

    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        self.faults: list[Fault] = []
        self.counts: Counter[str] = Counter()
        self.requests: list[tuple[str, str, dict[str, str], dict[str, str]]] = []
        self.app = web.Application(middlewares=[self._middleware], client_max_size=64 * 2**20)
        self.routes(self.app)
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.url = ""

    def routes(self, app: web.Application) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    # --- faults ---------------------------------------------------------------------------

    def inject(
        self,
        path_prefix: str,
        status: int | None = 500,
        delay: float = 0.0,
        body: str = "injected fault",
        times: int | None = None,
        content_type: str = "text/plain",
    ) -> Fault:
        f = Fault(path_prefix, status, delay, body, content_type, times)
        self.faults.append(f)
        return f

    def clear_faults(self) -> None:
        self.faults.clear()

    def count(self, path_prefix: str = "/") -> int:
        return sum(n for p, n in self.counts.items() if p.startswith(path_prefix))

    @web.middleware
    async def _middleware(self, request: web.Request, handler):  # type: ignore[no-untyped-def]
        path = request.path
        self.counts[path] += 1
        self.requests.append((request.method, path, dict(request.query), dict(request.headers)))
        if self.latency:
            await asyncio.sleep(self.latency)
        for f in self.faults:
            if not path.startswith(f.path_prefix):
                continue
            if f.times is not None and f.hits >= f.times:
                continue
            f.hits += 1
            if f.delay:
                await asyncio.sleep(f.delay)
            if f.status is not None:
                return web.Response(status=f.status, text=f.body, content_type=f.content_type)
            break
        return await handler(request)

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        sock = site._server.sockets[0]  # type: ignore[union-attr]
        self.url = f"http://{host}:{sock.getsockname()[1]}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> DoubleServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start_in_thread(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve from a private event loop on a daemon thread (for benchmarks)."""
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.start(host, port))
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        self._thread = threading.Thread(target=run, name=type(self).__name__, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self.url

    def stop_thread(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None


def answer(body: object, status: int = 200, content_type: str = "application/json") -> web.Response:
    """A response with exactly this Content-Type header (aiohttp would add its own charset)."""
    if isinstance(body, bytes):
        raw = body
    elif isinstance(body, str):
        raw = body.encode()
    else:
        raw = json.dumps(body, separators=(",", ":")).encode()
    return web.Response(status=status, body=raw, headers={"Content-Type": content_type})

"""The HTTP service: `create_app(config)` builds one, `run(config)` serves it until SIGTERM.

No global state: everything an app needs hangs off its `Service`, so tests can build several.
Errors become HTTP answers in one place (`guarded`): an unexpected exception is a 503
(Alertmanager retries it), never a 500 that would drop the notification.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import json
import logging
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from enricher import logs
from enricher.analysis.stage import RootCauseAnalyser
from enricher.config import Config
from enricher.evidence import Gatherer as EvidenceGatherer
from enricher.evidence import StageGatherer
from enricher.intake.auth import Authenticator
from enricher.intake.connections import Connections, raise_open_file_limit
from enricher.intake.deploys import DeployIntake, StoredDeploys
from enricher.intake.handler import Intake
from enricher.metrics import Metrics
from enricher.notify import build_notifiers
from enricher.notify.base import Notifier
from enricher.pages import (
    HTML_HEADERS,
    page_from_record,
    render_error,
    render_index,
    render_page,
)
from enricher.pipeline.stages import Analyser, Gatherer
from enricher.pipeline.worker import Pipeline
from enricher.store import make_store
from enricher.store.base import PageRecord, StoreError
from enricher.store.sqlite import PRUNE_BATCH, SQLiteStore

log = logging.getLogger("enricher.server")
SERVICE: web.AppKey[Service] = web.AppKey("service")


class Service:
    """Everything one running instance owns."""

    def __init__(
        self,
        config: Config,
        *,
        notifiers: list[Notifier] | None = None,
        gatherer: Gatherer | None = None,
        analyser: Analyser | None = None,
        shared_store: bool = False,
    ) -> None:
        self.config = config
        self.metrics = Metrics()
        self.store: SQLiteStore = make_store(config, self.metrics.committed, shared_store)
        self.notifiers = notifiers if notifiers is not None else build_notifiers(config)
        self.evidence: EvidenceGatherer | None = None
        if gatherer is None and config.sources.any_configured:
            self.evidence = EvidenceGatherer(config.sources, deploys=StoredDeploys(self.store))
            gatherer = StageGatherer(self.evidence)
        self.llm: Any = None
        if analyser is None:
            analyser = self._root_cause()
        self.pipeline = Pipeline(
            self.store, config, self.notifiers, self.metrics, gatherer, analyser
        )
        self.intake = Intake(config, self.store, self.metrics, self.pipeline.accepted)
        self.deploys = DeployIntake(self.store, self.intake.auth, config.intake.body_timeout)
        self._stopped = False
        self._housekeeping: asyncio.Task[None] | None = None
        # Set by `serve()`, which owns the listening socket; None in tests' in-process apps.
        self.connections: Connections | None = None
        self._exported: dict[str, int] = {}

    def _root_cause(self) -> RootCauseAnalyser:
        """The deterministic analyzer always; the LLM stage when `analysis.llm` is set."""
        cfg = self.config.analysis.llm
        if cfg is None:
            return RootCauseAnalyser(metrics=self.metrics)
        from enricher.analysis.grounding import merge
        from enricher.analysis.llm_stage import LLMStage

        self.llm = LLMStage(cfg, self.metrics)
        return RootCauseAnalyser(
            self.llm, self.metrics, llm_total_timeout=cfg.total_timeout, merge=merge
        )

    async def _prune_forever(self, every_s: float = 60.0) -> None:
        """Keep the store to `store.retention`: a little at a time, never a long commit."""
        while True:
            try:
                before = time.time() - self.config.store.retention
                while await self.store.prune(before) == PRUNE_BATCH:
                    await asyncio.sleep(0.05)
            except StoreError as exc:
                log.warning("pruning old data failed", extra={"error": str(exc)})
            await asyncio.sleep(every_s)

    async def start(self) -> None:
        await self.store.open()
        if self.evidence is not None:
            await self.evidence.start()
        if self.llm is not None:
            await self.llm.start()
        await self.pipeline.start()
        self._housekeeping = asyncio.create_task(self._prune_forever(), name="retention")

    def export_connections(self) -> None:
        """The connection guard keeps plain counts (it runs per connection, on the hot path):
        carry them into the metrics when they are scraped."""
        conns = self.connections
        if conns is None:
            return
        m = self.metrics
        m.connections_open.set(conns.open)
        for reason, total in (
            ("max_connections", conns.refused),
            ("header_timeout", conns.header_timeouts),
            ("idle", conns.idle_closes),
        ):
            delta = total - self._exported.get(reason, 0)
            if delta > 0:
                m.connections_closed.labels(reason).inc(delta)
                self._exported[reason] = total

    async def stop(self) -> None:
        """Refuse new work, page what is queued and running within the grace period,
        release the rest, close the store.

        The gatherer, the LLM and the notifiers close only after the pipeline has stopped:
        the drain still gathers evidence for, and delivers, the pages it builds.
        """
        if self._stopped:
            return
        self._stopped = True
        self.intake.draining = True
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        await self.pipeline.stop(self.config.pipeline.shutdown_grace)
        for n in self.notifiers:
            with contextlib.suppress(Exception):
                await n.close()
        if self.evidence is not None:
            await self.evidence.close()
        if self.llm is not None:
            with contextlib.suppress(Exception):
                await self.llm.close()
        await self.store.close()


def _page_view(rec: PageRecord) -> dict[str, Any]:
    doc = dict(rec.doc)
    doc["status"] = rec.status
    if rec.resolved_at is not None:
        doc["resolved_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(rec.resolved_at))
        doc["resolved_by"] = rec.resolved_by
    doc["deliveries"] = [d.model_dump(exclude={"page_id"}) for d in rec.deliveries]
    return doc


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def guarded(handler: Handler) -> Handler:
    """Every route's errors become answers here: an unexpected exception is a 503 (Alertmanager
    retries it), never a 500. A wrapper per route costs less than an app-wide middleware."""

    async def guard(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except StoreError as exc:
            return web.json_response(
                {"error": "store_unavailable", "message": str(exc)}, status=503
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("unhandled error", extra={"path": request.path})
            return web.json_response(
                {"error": "internal", "message": "unexpected error; nothing was stored, retry"},
                status=503,
            )

    return guard


async def _alerts(request: web.Request) -> web.StreamResponse:
    return await request.app[SERVICE].intake.handle(request)


async def _deploys(request: web.Request) -> web.Response:
    return await request.app[SERVICE].deploys.handle(request)


async def _pages(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    try:
        limit = min(500, max(1, int(request.query.get("limit", "50"))))
        before = int(request.query["before"]) if "before" in request.query else None
    except ValueError:
        return web.json_response(
            {"error": "invalid", "message": "limit and before must be integers"}, status=400
        )
    records = await svc.store.list_pages(limit, before)
    return web.json_response({"pages": [_page_view(r) for r in records]}, dumps=_dumps)


async def _page(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    try:
        page_id = int(request.match_info["id"])
    except ValueError:
        return web.json_response(
            {"error": "invalid", "message": "page id must be an integer"}, status=400
        )
    rec = await svc.store.get_page(page_id)
    if rec is None:
        return web.json_response({"error": "not_found", "message": "no such page"}, status=404)
    return web.json_response(_page_view(rec), dumps=_dumps)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str)


def _readable(auth: Authenticator, handler: Handler, *, html: bool = False) -> Handler:
    """Pages hold log lines, span attributes and deploy details: reading them takes the
    credentials of `config.read_auth` when it has any (constant-time check, as the intake)."""

    async def check(request: web.Request) -> web.StreamResponse:
        if auth.allows(request.headers.get("Authorization")):
            return await handler(request)
        challenge = {"WWW-Authenticate": auth.challenge}
        if html:
            return _html(render_error(401, "missing or wrong credentials"), 401, challenge)
        return web.json_response(
            {"error": "unauthorized", "message": "missing or wrong credentials"},
            status=401,
            headers=challenge,
        )

    return check


def _html(body: str, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # "replace": a lone surrogate that slipped through must not turn a page into a 503.
    return web.Response(
        body=body.encode("utf-8", "replace"),
        status=status,
        headers={**HTML_HEADERS, **(headers or {})},
    )


def _int_param(value: str) -> int | None:
    """A page id or cursor: ASCII digits only (int() also takes "٣" and " 3"), SQLite-sized."""
    digits = value[1:] if value.startswith("-") else value
    if not (digits.isascii() and digits.isdigit() and len(digits) <= 18):
        return None
    return int(value)


async def _html_pages(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    limit = _int_param(request.query.get("limit", "50"))
    before = _int_param(request.query["before"]) if "before" in request.query else None
    if limit is None or ("before" in request.query and before is None):
        return _html(render_error(400, "limit and before must be integers"), 400)
    limit = min(500, max(1, limit))
    records = await svc.store.list_pages(limit, before)
    older = records[-1].id if len(records) == limit else None
    return _html(render_index(records, older=older))


async def _html_page(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    page_id = _int_param(request.match_info["id"])
    if page_id is None:
        return _html(render_error(400, "page id must be an integer"), 400)
    rec = await svc.store.get_page(page_id)
    if rec is None:
        return _html(render_error(404, f"no page {page_id}"), 404)
    try:
        page = page_from_record(rec)
    except ValueError as exc:  # a stored document this version cannot read
        log.warning("stored page unreadable", extra={"page_id": page_id, "error": str(exc)})
        return _html(render_error(503, f"page {page_id} cannot be shown; see its JSON"), 503)
    return _html(render_page(page, deliveries=rec.deliveries))


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    problems = []
    if svc.intake.draining:
        problems.append("shutting down")
    if not svc.pipeline.running:
        problems.append("workers not running")
    try:
        await asyncio.wait_for(svc.store.check_writable(), 2.0)
    except (StoreError, TimeoutError) as exc:
        problems.append(f"store not writable: {exc or 'timed out'}")
    if problems:
        return web.json_response({"status": "not ready", "problems": problems}, status=503)
    return web.json_response({"status": "ready"})


async def _metrics(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    svc.metrics.backlog.set(await svc.store.backlog())
    svc.export_connections()
    return web.Response(
        body=svc.metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"}
    )


def create_app(config: Config, **service_kwargs: Any) -> web.Application:
    # client_max_size bounds every body aiohttp reads; the intake adds its own precise 413.
    app = web.Application(client_max_size=config.intake.max_body_bytes)
    svc = Service(config, **service_kwargs)
    app[SERVICE] = svc

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await svc.start()
        yield
        await svc.stop()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_post("/api/v1/alerts", guarded(_alerts))
    app.router.add_post("/api/v1/deploys", guarded(_deploys))
    read = Authenticator(config.read_auth)
    app.router.add_get("/api/v1/pages", guarded(_readable(read, _pages)))
    app.router.add_get("/api/v1/pages/{id}", guarded(_readable(read, _page)))
    app.router.add_get("/pages", guarded(_readable(read, _html_pages, html=True)))
    app.router.add_get("/pages/{id}", guarded(_readable(read, _html_page, html=True)))
    app.router.add_get("/healthz", guarded(_healthz))
    app.router.add_get("/readyz", guarded(_readyz))
    metrics = _readable(read, _metrics) if config.api.protect_metrics else _metrics
    app.router.add_get("/metrics", guarded(metrics))
    return app


async def serve(
    config: Config, stop: asyncio.Event | None = None, sock: socket.socket | None = None
) -> None:
    """Run the service until `stop` (or SIGTERM/SIGINT). `sock`: a listening socket shared
    with sibling processes (`enricher serve --processes N`), instead of binding `listen`;
    those siblings share the store too."""
    raise_open_file_limit()
    app = create_app(config, shared_store=sock is not None)
    svc = app[SERVICE]
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        # A backstop only: enricher/intake/connections.py closes idle connections first.
        keepalive_timeout=config.intake.idle_timeout + config.intake.header_timeout,
    )
    await runner.setup()
    assert runner.server is not None
    # Not a TCPSite: every connection goes through the header timeout and connection cap.
    connections = Connections(runner.server, config.intake)
    svc.connections = connections
    host, port = config.host_port
    loop = asyncio.get_running_loop()
    if sock is not None:
        listener = await loop.create_server(connections, sock=sock, backlog=1024)
    else:
        listener = await loop.create_server(
            connections, host, port, backlog=1024, reuse_address=True
        )
    # Start-up objects never die: keep them out of every collection, and collect young
    # objects less often, so collector pauses do not show up as acknowledgement latency.
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    log.info("listening", extra={"listen": config.listen, "data_dir": str(config.data_dir)})
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping", extra={"grace_s": config.pipeline.shutdown_grace})
    # Refuse new notifications with 503 while in-flight jobs finish, then close.
    await svc.stop()
    listener.close()
    await runner.cleanup()
    log.info("stopped")


def run(config: Config, sock: socket.socket | None = None) -> int:
    logs.setup(config.log_level)
    for warning in config.exposure_warnings():
        log.warning(warning)
    try:
        # uvloop's C event loop costs about a fifth less CPU per request (bench/intake.py).
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # not built for this platform: the standard loop works the same
        loop_factory = None
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(serve(config, sock=sock))
    except StoreError as exc:
        log.error("cannot start", extra={"error": str(exc)})
        return 1
    except OSError as exc:
        # Binding is the one start-up step that fails this way (a port in use, a privileged
        # port, an address not on this host): one line that names it, not a traceback.
        if exc.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            what = {
                errno.EADDRINUSE: "the address is already in use (another enricher?)",
                errno.EACCES: "permission denied (ports below 1024 need privileges)",
                errno.EADDRNOTAVAIL: "that address is not on this host",
            }[exc.errno]
            print(f"enricher: cannot listen on {config.listen}: {what}", file=sys.stderr)
            log.error("cannot listen", extra={"listen": config.listen, "error": str(exc)})
            return 1
        raise
    return 0

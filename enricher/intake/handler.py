"""`POST /api/v1/alerts`: the only door alerts come through.

The rule that shapes everything here: answer 2xx only once the notification is committed to
disk, and answer 5xx (which Alertmanager retries) whenever we could not store it. Input we
will never accept gets a precise 4xx naming the problem; nothing answers 500.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from enricher.config import Config
from enricher.intake.auth import Authenticator
from enricher.intake.connections import BodyTimeout, read_body
from enricher.intake.webhook import WebhookMessage, severity_rank
from enricher.logs import Throttled
from enricher.metrics import Metrics
from enricher.store.base import NewNotification, StoreError
from enricher.store.sqlite import SQLiteStore

log = logging.getLogger("enricher.intake")

MAX_PROBLEMS = 20


def problems_of(exc: ValidationError) -> list[dict[str, str]]:
    out = []
    for err in exc.errors(include_url=False, include_input=False)[:MAX_PROBLEMS]:
        path = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "json_invalid":
            msg = f"malformed JSON: {err.get('ctx', {}).get('error', msg)}"
        elif err["type"] == "model_type" and not path:
            msg = "the body must be a JSON object (an Alertmanager webhook message)"
        elif err["type"] == "literal_error" and path == "version":
            msg = 'unsupported webhook version: only "4" is accepted'
        elif err["type"] == "invalid_date":  # raised once per message, located by its context
            ctx = err.get("ctx", {})
            path, msg = f"alerts.{ctx.get('i')}.{ctx.get('field')}", str(ctx.get("msg", msg))
        elif err["type"] == "string_pattern_mismatch":
            msg = "not an RFC 3339 timestamp (e.g. 2025-05-01T12:00:00.123Z)"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        out.append({"path": path or "(body)", "message": msg})
    return out


def _json_error(status: int, reason: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": reason, "message": message, **extra}, status=status)


def _close_after(request: web.Request, resp: web.StreamResponse) -> None:
    """The rest of an undecodable body is never read: mark it finished (or aiohttp, reading
    it to keep the connection, logs the decoding error again as an unhandled traceback) and
    close the connection after this answer, since its stream position is lost."""
    request.content.feed_eof()
    resp.force_close()


class Intake:
    def __init__(
        self,
        config: Config,
        store: SQLiteStore,
        metrics: Metrics,
        on_accept: Callable[[int, WebhookMessage], None],
    ) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics
        self.auth = Authenticator(config.intake.auth)
        self.max_body = config.intake.max_body_bytes
        self.max_backlog = config.intake.max_backlog
        self.on_accept = on_accept
        self.draining = False
        self._refusals = Throttled(log)
        # Alerts the `alertmanager` notifier forwarded carry this label with the value "true".
        fwd = config.notifiers.alertmanager
        self.marker = fwd.label if fwd is not None else "enriched"

    def _reject(self, status: int, reason: str, message: str, **extra: Any) -> web.Response:
        self.metrics.reject(reason)
        if status >= 500:  # one line per reason per 10 s: a full disk refuses every post
            self._refusals.log(
                logging.WARNING,
                reason,
                "notification refused for retry",
                reason=reason,
                detail=message[:300],
            )
        return _json_error(status, reason, message, **extra)

    def _ignore_enriched(self, msg: WebhookMessage, t0: float) -> web.Response:
        """Every alert carries the marker: it is our own forward come back (a route that sends
        marked alerts to the enricher). 200, so Alertmanager does not retry; not paged."""
        self.metrics.n_ignored_enriched.inc()
        log.info(
            "ignored a notification of already enriched alerts; route them away from the enricher",
            extra={
                "group_key": msg.groupKey[:300],
                "alerts": len(msg.alerts),
                "label": self.marker,
            },
        )
        self.metrics.ack_seconds.observe(time.perf_counter() - t0)
        return web.json_response(
            {
                "status": "ignored",
                "reason": "enriched",
                "message": f'every alert carries {self.marker}="true": already enriched, not paged',
            }
        )

    async def handle(self, request: web.Request) -> web.Response:
        t0 = time.perf_counter()
        self.metrics.n_received.inc()
        if self.draining:
            resp = self._reject(503, "shutting_down", "the service is shutting down; retry")
            resp.headers["Retry-After"] = "5"
            return resp
        if not self.auth.allows(request.headers.get("Authorization")):
            resp = self._reject(401, "unauthorized", "missing or wrong credentials")
            resp.headers["WWW-Authenticate"] = self.auth.challenge
            return resp
        ctype = request.content_type
        if ctype != "application/json" and not ctype.endswith("+json"):
            return self._reject(
                415,
                "unsupported_media_type",
                f"expected Content-Type application/json, got {ctype or 'none'}",
            )
        if request.content_length is not None and request.content_length > self.max_body:
            return self._reject(
                413,
                "too_large",
                f"body of {request.content_length} bytes is over the "
                f"limit of {self.max_body} bytes (intake.max_body_bytes)",
            )
        try:
            body = await read_body(request, self.config.intake.body_timeout)
        except web.HTTPRequestEntityTooLarge:
            return self._reject(
                413,
                "too_large",
                f"body is over the limit of {self.max_body} bytes (intake.max_body_bytes)",
            )
        except BodyTimeout as exc:
            resp = self._reject(408, "body_timeout", str(exc))
            resp.force_close()  # the rest of the body is unread
            return resp
        except web.RequestPayloadError:
            # aiohttp decodes Content-Encoding while reading: a body labelled gzip that is
            # not gzip can never succeed, so 400 (a 5xx would be retried forever).
            encoding = request.headers.get("Content-Encoding", "none")[:40]
            resp = self._reject(
                400,
                "bad_encoding",
                f"the body is not valid for its Content-Encoding ({encoding}) "
                "or ended before its length",
            )
            _close_after(request, resp)
            return resp
        if not body.strip():
            return self._reject(400, "empty_body", "the body is empty")
        try:
            msg = WebhookMessage.model_validate_json(body)
        except ValidationError as exc:
            problems = problems_of(exc)
            first = problems[0] if problems else {"path": "(body)", "message": "invalid"}
            return self._reject(
                400, "invalid", f"{first['path']}: {first['message']}", problems=problems
            )
        # Before the backlog check: a forwarded alert must be acknowledged, never retried.
        kept = msg.without_marked(self.marker)
        if kept is None:
            return self._ignore_enriched(msg, t0)
        if kept is not msg:
            log.info(
                "dropped already enriched alerts from a notification",
                extra={
                    "group_key": msg.groupKey[:300],
                    "dropped": len(msg.alerts) - len(kept.alerts),
                },
            )
            msg, body = kept, kept.model_dump_json().encode()
        if await self.store.backlog() >= self.max_backlog:
            resp = self._reject(503, "backlog_full", "too many unfinished jobs; retry later")
            resp.headers["Retry-After"] = "10"
            return resp
        now = time.time()
        severity = msg.severity()
        try:
            result = await self.store.accept(
                # Built from validated values: construct without validating them again.
                NewNotification.model_construct(
                    idem_key=msg.idempotency_key(),
                    group_key=msg.groupKey,
                    status=msg.status,
                    severity=severity,
                    priority=severity_rank(severity),
                    alert_count=len(msg.alerts),
                    received_at=now,
                    deadline=now + self.config.pipeline.deadline_for(severity),
                    body=body,
                )
            )
        except StoreError as exc:
            return self._reject(503, "store_unavailable", f"could not store: {exc}")
        if result.duplicate:
            self.metrics.n_duplicate.inc()
            status = "duplicate"
        else:
            self.metrics.n_accepted.inc()
            self.metrics.alerts.inc(len(msg.alerts))
            self.on_accept(result.id, msg)
            status = "accepted"
        self.metrics.ack_seconds.observe(time.perf_counter() - t0)
        return web.Response(
            body=b'{"status": "%s", "id": %d}' % (status.encode(), result.id),
            content_type="application/json",
        )

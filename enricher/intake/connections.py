"""Connection hygiene: a deadline on every connection that is not running a request, and a
cap on how many connections are open at once.

Why: aiohttp has no timeout on reading a request's head, so a client that connects and sends
its headers a byte at a time (or never) holds a socket, and a file descriptor, for as long as
it likes. About 1,100 such clients used up a 1,024 open-file limit, and from then on every
legitimate POST failed (accept() got EMFILE) for as long as they stayed, with nothing logged.
Three defences, all here:

* `raise_open_file_limit()` raises the soft RLIMIT_NOFILE to the hard limit at start-up, so
  the default 1,024 is not what decides how many clients can hurt us.
* `Connections` is the protocol factory for `loop.create_server`. It wraps aiohttp's
  low-level `web.Server` (a `web.AppRunner`'s `runner.server`): each accepted connection gets
  a `_Guard` protocol that passes every event on to aiohttp's own `RequestHandler`, counts
  the connection and keeps one timer for it.
* `read_body(request, timeout)` bounds the time a handler spends reading a body.

The exact rules:

1. Connection cap. A connection accepted while `max_connections` are already open is sent a
   fixed `503 Service Unavailable` (`Retry-After: 1`, `Connection: close`, JSON body
   `{"error": "too_many_connections", ...}`) and closed at once, before aiohttp sees it (no
   request handler, no parser, no task). Only admitted connections count towards the cap.
   Logged throttled (key `max_connections`); `Connections.refused` counts them.
2. One timer per admitted connection, in one of four states:
   - HEAD: from the moment the connection is accepted, the client has `header_timeout`
     seconds to deliver a complete request head. Bytes arriving in this state do not move
     the deadline: a byte a second buys nothing.
   - BUSY: from the moment aiohttp has parsed a head and starts the request handler until the
     handler returns its response, there is no timer: the body's time is bounded by
     `read_body` in the handler, the handler's own time by its own timeouts.
   - IDLE: when the handler returns (aiohttp then writes the response), the connection has
     `idle_timeout` seconds (keep-alive) before the first byte of its next request. The first
     byte that arrives in IDLE switches to HEAD with a fresh `header_timeout` from that
     moment. Bytes that arrive while BUSY (the body, or a pipelined next request) do not
     count; a pipelined request already parsed goes straight back to BUSY.
   - LINGER: when the response closes the connection (the handler called `force_close()`,
     the client asked for `Connection: close`, the handler failed), aiohttp closes it once
     the response is written, or first reads and discards whatever is left of an unread
     body for up to its `lingering_time` (10 s). The guard allows `header_timeout` for that,
     whatever arrives, then closes silently.
   When the timer of a HEAD connection runs out, the connection is closed: with a
   `408 Request Timeout` first if the client had sent any of its request, silently if it
   never sent a byte; logged throttled (key `header_timeout`, with the peer address);
   `Connections.header_timeouts` counts them. An IDLE connection that runs out is closed
   silently (`Connections.idle_closes`): that is ordinary keep-alive expiry, not an attack.
   A LINGER connection that runs out is closed silently too.
   A connection whose peer is not reading what we wrote (the write buffer is not empty) is
   aborted rather than closed, since a close would wait for that buffer to drain.
3. `read_body(request, timeout)` reads the whole body or raises `BodyTimeout` once `timeout`
   seconds have passed; `request_timeout_response()` is the 408 that closes the connection
   (the stream position is lost once a read is abandoned).

aiohttp's own keep-alive timer (the runner's `keepalive_timeout`) still runs underneath, as a
backstop: it closes a connection still waiting for a complete head that long after connecting
or after the previous response was written. `serve()` gives it `idle_timeout +
header_timeout`, the longest these rules allow, so it never fires before they do (with just
`idle_timeout` it would cut off a request head begun shortly before the idle deadline).
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from collections.abc import Awaitable
from typing import cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from enricher.config import IntakeConfig
from enricher.logs import Throttled

log = logging.getLogger("enricher.intake.connections")

# File descriptors the service needs besides client sockets: the store, outbound HTTP to
# backends and notifiers, logs. `Connections` warns when the cap leaves fewer than this.
FD_HEADROOM = 256
# Used when the hard limit is unlimited: Linux refuses a soft NOFILE limit above nr_open.
_UNLIMITED_CAP = 1 << 20

_HEAD, _BUSY, _IDLE, _LINGER, _CLOSED = range(5)


def _fixed_response(status: str, body: dict[str, str], extra: str = "") -> bytes:
    data = json.dumps(body, separators=(",", ":")).encode()
    head = (
        f"HTTP/1.1 {status}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n"
        f"{extra}"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + data


TOO_MANY_CONNECTIONS = _fixed_response(
    "503 Service Unavailable",
    {"error": "too_many_connections", "message": "too many open connections; retry shortly"},
    "Retry-After: 1\r\n",
)
HEADER_TIMEOUT = _fixed_response(
    "408 Request Timeout",
    {"error": "header_timeout", "message": "the request headers took too long to arrive"},
)


def raise_open_file_limit() -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; return (soft, hard) after.

    Every open connection costs a file descriptor, and the usual soft default (1,024) is low
    enough for a few slow clients to exhaust. Raising the soft limit up to the hard one needs
    no privilege. A failure is logged and the limits are returned as they are."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _UNLIMITED_CAP if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning(
                "cannot raise the open-file limit",
                extra={"soft": soft, "hard": hard, "error": str(exc)},
            )
        else:
            log.info("raised the open-file limit", extra={"from": soft, "to": target})
            soft = target
    else:
        log.info("open-file limit", extra={"soft": soft, "hard": hard})
    return soft, hard


def _peer(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = f"[{peer[0]}]" if ":" in str(peer[0]) else str(peer[0])
        return f"{host}:{peer[1]}"
    return str(peer)


def _shut(transport: asyncio.BaseTransport) -> None:
    """Close now: abort if unsent data is waiting on a peer that does not read, since
    `close()` would keep the socket (and its descriptor) until that data drained."""
    # uvloop's transports are not asyncio.Transport subclasses: cast, never isinstance.
    transport = cast(asyncio.Transport, transport)
    if transport.get_write_buffer_size():
        transport.abort()
    else:
        transport.close()


class Connections:
    """The protocol factory of one listening socket: `loop.create_server(connections, ...)`.

    Construct it after `runner.setup()` with `runner.server`: it wraps that server's request
    handler once, to learn when each request starts and when its response is ready. The
    counters (`open`, `refused`, `header_timeouts`, `idle_closes`) are for metrics."""

    def __init__(
        self, server: web.Server, config: IntakeConfig, *, log_every: float = 10.0
    ) -> None:
        self.server = server
        self.header_timeout = config.header_timeout
        self.idle_timeout = config.idle_timeout
        self.max_connections = config.max_connections
        self.open = 0
        self.refused = 0
        self.header_timeouts = 0
        self.idle_closes = 0
        self.throttled = Throttled(log, every=log_every)
        self._guards: dict[RequestHandler, _Guard] = {}
        self._handler = server.request_handler
        server.request_handler = self._tracked
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and self.max_connections > soft - FD_HEADROOM:
            log.warning(
                "intake.max_connections leaves too few file descriptors for the service",
                extra={"max_connections": self.max_connections, "open_file_limit": soft},
            )

    def __call__(self) -> asyncio.Protocol:
        return _Guard(self)

    async def _tracked(self, request: web.BaseRequest) -> web.StreamResponse:
        guard = self._guards.get(request.protocol)
        if guard is None:  # not accepted through this factory
            return await self._handler(request)
        guard.request_started()
        closing = True  # an error: aiohttp answers it with a response that closes
        try:
            resp = await self._handler(request)
            closing = resp.keep_alive is False
            return resp
        except web.HTTPException as exc:
            closing = exc.keep_alive is False
            raise
        finally:
            guard.response_ready(closing or not request.keep_alive)


class _Guard(asyncio.Protocol):
    """One connection: aiohttp's `RequestHandler` behind it, and its timer (module rules)."""

    __slots__ = ("_conns", "_got_bytes", "_inner", "_state", "_timer", "_transport")

    def __init__(self, conns: Connections) -> None:
        self._conns = conns
        self._inner: RequestHandler | None = None
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._state = _CLOSED
        self._got_bytes = False

    # -- the timer ----------------------------------------------------------------------

    def _arm(self, state: int, seconds: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._state = state
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(loop.time() + seconds, self._expire)

    def _disarm(self, state: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._state = state

    def _expire(self) -> None:
        self._timer = None
        transport = self._transport
        if transport is None or transport.is_closing() or self._state == _BUSY:
            return
        conns = self._conns
        if self._state == _HEAD:
            conns.header_timeouts += 1
            conns.throttled.log(
                logging.WARNING,
                "header_timeout",
                "closed a connection that did not send its request headers in time",
                peer=_peer(transport),
                timeout_s=conns.header_timeout,
                sent_bytes=self._got_bytes,
                open_connections=conns.open,
            )
            if self._got_bytes and not transport.get_write_buffer_size():
                transport.write(HEADER_TIMEOUT)
        elif self._state == _IDLE:
            conns.idle_closes += 1
        self._disarm(_CLOSED)
        _shut(transport)

    def request_started(self) -> None:
        if self._state != _CLOSED:
            self._disarm(_BUSY)

    def response_ready(self, closing: bool) -> None:
        if self._state == _CLOSED:
            return
        self._got_bytes = False
        if closing:
            self._arm(_LINGER, self._conns.header_timeout)
        else:
            self._arm(_IDLE, self._conns.idle_timeout)

    # -- asyncio.Protocol, passed on to aiohttp ----------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        conns = self._conns
        self._transport = transport
        if conns.open >= conns.max_connections:
            conns.refused += 1
            conns.throttled.log(
                logging.WARNING,
                "max_connections",
                "refused a connection: too many open connections",
                peer=_peer(transport),
                max_connections=conns.max_connections,
                refused_total=conns.refused,
            )
            transport.write(TOO_MANY_CONNECTIONS)
            _shut(transport)
            return
        conns.open += 1
        inner = conns.server()
        self._inner = inner
        conns._guards[inner] = self
        self._arm(_HEAD, conns.header_timeout)
        inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._state == _IDLE:
            self._arm(_HEAD, self._conns.header_timeout)
        self._got_bytes = True
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self._inner is not None:
            return self._inner.eof_received()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm(_CLOSED)
        self._transport = None
        inner, self._inner = self._inner, None
        if inner is not None:
            self._conns.open -= 1
            self._conns._guards.pop(inner, None)
            inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()


# -- request bodies ------------------------------------------------------------------------


class BodyTimeout(Exception):
    """The request body did not arrive within the time allowed."""

    def __init__(self, timeout: float) -> None:
        super().__init__(f"the request body did not arrive within {timeout:g}s")
        self.timeout = timeout


async def read_body(request: web.BaseRequest, timeout: float) -> bytes:
    """The whole body of `request`, or `BodyTimeout` after `timeout` seconds.

    Other errors of `request.read()` (a body over `client_max_size`, a lost connection) pass
    through unchanged. After a timeout the rest of the body is unread: answer with
    `request_timeout_response()`, which closes the connection."""
    read: Awaitable[bytes] = request.read()
    try:
        return await asyncio.wait_for(read, timeout)
    except TimeoutError:
        raise BodyTimeout(timeout) from None


def request_timeout_response(exc: BodyTimeout) -> web.Response:
    """The 408 for a body that took too long; the connection closes after it."""
    resp = web.json_response({"error": "body_timeout", "message": str(exc)}, status=408)
    resp.force_close()
    return resp

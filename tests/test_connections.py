"""Connection hygiene on real loopback sockets: slow clients are cut off by the header
timeout, connections beyond the cap get a 503 at once, keep-alive clients are left alone
until the idle timeout, and the limit log lines are throttled.

Most tests run the real service (`enricher.server.serve`) in-process; the log and body tests
use `Connections` in front of a tiny aiohttp app, where its counters are in reach.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from enricher.config import IntakeConfig, load_config
from enricher.intake.connections import (
    BodyTimeout,
    Connections,
    raise_open_file_limit,
    read_body,
    request_timeout_response,
)
from enricher.server import serve
from tests.conftest import webhook_body

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
LOGGER = "enricher.intake.connections"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _connect(port: int) -> Streams:
    return await asyncio.open_connection("127.0.0.1", port)


@asynccontextmanager
async def running(tmp_path: Path, **intake: Any) -> AsyncIterator[int]:
    """The real service on a free loopback port, with these `intake` settings."""
    port = _free_port()
    config = load_config(
        environ={},
        overrides={
            "data_dir": str(tmp_path / "data"),
            "listen": f"127.0.0.1:{port}",
            "intake": intake,
        },
    )
    stop = asyncio.Event()
    task = asyncio.create_task(serve(config, stop=stop))
    try:
        for _ in range(200):
            if task.done():
                task.result()
            try:
                _, w = await _connect(port)
            except OSError:
                await asyncio.sleep(0.02)
                continue
            w.close()
            break
        yield port
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


@asynccontextmanager
async def tiny_server(
    intake: IntakeConfig,
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    **kw: Any,
) -> AsyncIterator[tuple[int, Connections]]:
    """`Connections` in front of a one-route app: POST /echo."""
    app = web.Application()
    app.router.add_post("/echo", handler)
    backstop = intake.idle_timeout + intake.header_timeout  # as serve() does
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=backstop)
    await runner.setup()
    assert runner.server is not None
    conns = Connections(runner.server, intake, **kw)
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(conns, "127.0.0.1", 0)
    try:
        yield listener.sockets[0].getsockname()[1], conns
    finally:
        listener.close()
        await runner.cleanup()


async def _until_closed(reader: asyncio.StreamReader, timeout: float) -> bytes | None:
    """Everything the server sends until it closes (EOF or reset); None if still open."""
    data = b""
    try:
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(4096):
                data += chunk
    except TimeoutError:
        return None
    except ConnectionError:
        pass
    return data


async def _request(
    streams: Streams, method: str, path: str, body: bytes = b"", headers: str = ""
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request on an open connection, keep-alive; (status, headers, body)."""
    reader, writer = streams
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{headers}\r\n"
    writer.write(head.encode() + body)
    status_line = await reader.readline()
    fields: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        fields[name.strip().lower()] = value.strip()
    payload = await reader.readexactly(int(fields.get("content-length", "0")))
    return int(status_line.split()[1]), fields, payload


async def _post_webhook(port: int) -> tuple[int, bytes]:
    streams = await _connect(port)
    try:
        body = json.dumps(webhook_body()).encode()
        status, _, payload = await _request(
            streams, "POST", "/api/v1/alerts", body, "Content-Type: application/json\r\n"
        )
        return status, payload
    finally:
        streams[1].close()


def _is_refusal(data: bytes | None) -> bool:
    if data is None:
        return False
    head, _, body = data.partition(b"\r\n\r\n")
    return (
        head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        and b"\r\nRetry-After: 1" in head
        and b"\r\nConnection: close" in head
        and json.loads(body)["error"] == "too_many_connections"
    )


# -- a: slowloris ----------------------------------------------------------------------------


async def test_slow_clients_are_cut_off_and_a_normal_client_is_answered(
    tmp_path: Path, real_fixtures: Path
) -> None:
    loop = asyncio.get_running_loop()
    async with running(tmp_path, header_timeout=1.0) as port:
        slow: list[Streams] = []
        t0 = loop.time()
        for _ in range(6):
            slow += await asyncio.gather(*(_connect(port) for _ in range(50)))
        for _, w in slow:
            w.write(b"POST /api/v1/alerts HTTP/1.1\r\nHost: x\r\n")
        connected_s = loop.time() - t0

        async def trickle() -> None:  # half of them: one more header byte every 0.5 s
            while True:
                await asyncio.sleep(0.5)
                for _, w in slow[::2]:
                    if not w.is_closing():
                        w.write(b"X")

        trickling = asyncio.create_task(trickle())
        try:
            closing = [asyncio.create_task(_until_closed(r, 6.0)) for r, _ in slow]
            t1 = loop.time()
            status, payload = await asyncio.wait_for(_post_webhook(port), 2.0)
            latency = loop.time() - t1
            assert status == 200, payload
            still_open = sum(not c.done() for c in closing)
            results = await asyncio.gather(*closing)
            all_closed_s = loop.time() - t0
        finally:
            trickling.cancel()
            for _, w in slow:
                w.close()
    print(
        f"\n300 slow clients connected in {connected_s:.2f}s; normal POST answered 200 in "
        f"{latency * 1000:.0f} ms with {still_open} of them still open; all closed by the "
        f"server {all_closed_s:.2f}s after the first connected (header_timeout 1s)"
    )
    assert still_open >= 250, "the slow clients were gone before the normal request"
    assert all(r is not None for r in results), "slow clients still open after 6 s"
    # Those that sent part of a request head are told why.
    assert all(r == b"" or r.startswith(b"HTTP/1.1 408 ") for r in results if r is not None)
    assert all_closed_s < 5.0


# -- b: connection cap ---------------------------------------------------------------------


async def test_connections_over_the_cap_get_a_503_and_are_closed(
    tmp_path: Path, real_fixtures: Path
) -> None:
    async with running(tmp_path, header_timeout=1.5, max_connections=20) as port:
        idle = [await _connect(port) for _ in range(25)]
        first = await asyncio.gather(*(_until_closed(r, 0.6) for r, _ in idle))
        refused = [d for d in first if _is_refusal(d)]
        assert len(refused) == 5, first
        assert sum(d is None for d in first) == 20  # the admitted ones: still open
        # While the 20 are held, a newcomer is refused too.
        r, w = await _connect(port)
        assert _is_refusal(await _until_closed(r, 2.0))
        w.close()
        # The header timeout frees the slots; then a normal client is answered.
        held = [s for s, d in zip(idle, first, strict=True) if d is None]
        rest = await asyncio.gather(*(_until_closed(r, 3.0) for r, _ in held))
        assert rest == [b""] * 20  # closed silently: they never sent a byte
        status, payload = await asyncio.wait_for(_post_webhook(port), 2.0)
        assert status == 200, payload
        for _, w in idle:
            w.close()


# -- c: keep-alive -------------------------------------------------------------------------


async def test_keep_alive_clients_get_the_idle_timeout_not_the_header_timeout(
    tmp_path: Path, real_fixtures: Path
) -> None:
    loop = asyncio.get_running_loop()
    async with running(tmp_path, header_timeout=1.0, idle_timeout=3.0) as port:

        async def second_request_after_a_pause() -> float:
            streams = await _connect(port)
            assert (await _request(streams, "GET", "/healthz"))[0] == 200
            await asyncio.sleep(2.0)  # longer than header_timeout, shorter than idle
            assert (await _request(streams, "GET", "/healthz"))[0] == 200
            # Bytes of a new request switch to the header timeout from that moment.
            t = loop.time()
            streams[1].write(b"GET /healthz HTTP/1.1\r\n")
            data = await _until_closed(streams[0], 4.0)
            assert data is not None and data.startswith(b"HTTP/1.1 408 "), data
            return loop.time() - t

        async def idle_until_closed() -> float:
            streams = await _connect(port)
            assert (await _request(streams, "GET", "/healthz"))[0] == 200
            t = loop.time()
            assert await _until_closed(streams[0], 6.0) == b""
            return loop.time() - t

        partial_s, idle_s = await asyncio.gather(
            second_request_after_a_pause(), idle_until_closed()
        )
    print(f"\npartial head closed after {partial_s:.2f}s; idle closed after {idle_s:.2f}s")
    assert 0.8 < partial_s < 2.5
    assert 2.7 < idle_s < 5.0


# -- d: throttled logging ------------------------------------------------------------------


async def _echo(request: web.Request) -> web.Response:
    try:
        body = await read_body(request, 0.5)
    except BodyTimeout as exc:
        return request_timeout_response(exc)
    return web.Response(body=body)


async def test_refusals_log_a_line_per_interval_with_a_suppressed_count(caplog: Any) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    intake = IntakeConfig(max_connections=2, header_timeout=5.0)
    async with tiny_server(intake, _echo, log_every=0.5) as (port, conns):
        held = [await _connect(port) for _ in range(2)]
        for _ in range(30):
            r, w = await _connect(port)
            assert _is_refusal(await _until_closed(r, 2.0))
            w.close()
        lines = [r for r in caplog.records if r.name == LOGGER]
        assert len(lines) == 1 and lines[0].suppressed == 0  # type: ignore[attr-defined]
        await asyncio.sleep(0.6)
        r, w = await _connect(port)
        assert _is_refusal(await _until_closed(r, 2.0))
        w.close()
        assert conns.refused == 31
        assert conns.open == 2
        for _, w in held:
            w.close()
    lines = [r for r in caplog.records if r.name == LOGGER]
    assert len(lines) == 2, [r.getMessage() for r in lines]
    assert lines[1].suppressed == 29  # type: ignore[attr-defined]
    assert lines[1].max_connections == 2  # type: ignore[attr-defined]


async def test_header_timeouts_are_logged_with_the_peer(caplog: Any) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    intake = IntakeConfig(header_timeout=0.3)
    async with tiny_server(intake, _echo) as (port, conns):
        clients = [await _connect(port) for _ in range(10)]
        results = await asyncio.gather(*(_until_closed(r, 3.0) for r, _ in clients))
        assert results == [b""] * 10
        assert conns.header_timeouts == 10
        assert conns.open == 0
    lines = [r for r in caplog.records if r.name == LOGGER]
    assert len(lines) == 1
    assert lines[0].peer.startswith("127.0.0.1:")  # type: ignore[attr-defined]
    assert lines[0].suppressed == 0  # type: ignore[attr-defined]


# -- the body timeout helper, and bodies are not cut by the header timeout ---------------------


async def test_read_body_times_out_with_a_408_that_closes_the_connection() -> None:
    # The rest of the body is never read: aiohttp would linger 10 s for it, the guard
    # closes the connection header_timeout after the 408.
    intake = IntakeConfig(header_timeout=0.5)
    async with tiny_server(intake, _echo) as (port, _):
        streams = await _connect(port)
        status, _, body = await _request(streams, "POST", "/echo", b"hello")
        assert (status, body) == (200, b"hello")
        reader, writer = streams
        t = time.monotonic()
        writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        data = await _until_closed(reader, 3.0)
        took = time.monotonic() - t
        assert data is not None and data.startswith(b"HTTP/1.1 408 "), data
        assert b'"error": "body_timeout"' in data
        assert 0.9 < took < 2.5, took  # 0.5 s for the body, then 0.5 s of lingering
        writer.close()


async def test_a_slow_body_is_not_cut_by_the_header_timeout() -> None:
    intake = IntakeConfig(header_timeout=0.3)
    async with tiny_server(intake, _echo) as (port, conns):
        reader, writer = await _connect(port)
        writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n")
        for b in b"abcd":  # 0.4 s of body, longer than header_timeout, within read_body's
            await asyncio.sleep(0.1)
            writer.write(bytes([b]))
        status = await reader.readline()
        assert status.startswith(b"HTTP/1.1 200 "), status
        assert conns.header_timeouts == 0
        writer.close()


# -- the production event loop ---------------------------------------------------------------


def test_under_uvloop_slow_clients_are_cut_off_and_the_cap_answers_503(
    tmp_path: Path, real_fixtures: Path
) -> None:
    """`run()` serves on uvloop, whose transports are not asyncio classes: the same rules."""
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> None:
        async with running(tmp_path, header_timeout=1.0, max_connections=60) as port:
            clients = [await _connect(port) for _ in range(100)]
            for _, w in clients:
                w.write(b"POST /api/v1/alerts HTTP/1.1\r\nHost: x\r\n")
            results = await asyncio.gather(*(_until_closed(r, 4.0) for r, _ in clients))
            assert all(r is not None for r in results), "slow clients still open after 4 s"
            refused = [r for r in results if r and r.startswith(b"HTTP/1.1 503 ")]
            timed_out = [r for r in results if r and r.startswith(b"HTTP/1.1 408 ")]
            # A refused client that had already sent bytes may see a reset instead (b"").
            assert len(timed_out) == 60 and len(refused) <= 40, (len(timed_out), len(refused))
            status, payload = await asyncio.wait_for(_post_webhook(port), 2.0)
            assert status == 200, payload
            for _, w in clients:
                w.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())


def test_raise_open_file_limit_reaches_the_hard_limit() -> None:
    import resource

    soft, hard = raise_open_file_limit()
    assert (soft, hard) == resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY:
        assert soft == hard


# -- the real intake: a body that never finishes, and what /metrics says ----------------------


async def test_a_body_that_never_finishes_gets_408_and_the_limits_show_in_metrics(
    tmp_path: Path, real_fixtures: Path
) -> None:
    async with running(tmp_path, header_timeout=1.0, body_timeout=1.0, max_connections=5) as port:
        reader, writer = await _connect(port)
        body = json.dumps(webhook_body()).encode()
        head = (
            "POST /api/v1/alerts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        writer.write(head.encode() + body[:10])  # then nothing more
        data = await _until_closed(reader, 5.0)
        assert data is not None and data.startswith(b"HTTP/1.1 408"), data
        assert b'"body_timeout"' in data
        writer.close()
        held = [await _connect(port) for _ in range(6)]  # one over the cap
        await asyncio.gather(*(_until_closed(r, 3.0) for r, _ in held))
        for _, w in held:
            w.close()
        streams = await _connect(port)
        status, _, text = await _request(streams, "GET", "/metrics")
        streams[1].close()
    assert status == 200
    metrics = text.decode()
    assert 'enricher_connections_closed_total{reason="max_connections"} 1.0' in metrics
    timeouts = re.search(
        r'enricher_connections_closed_total\{reason="header_timeout"\} (\S+)', metrics
    )
    assert timeouts is not None and float(timeouts.group(1)) >= 5
    assert 'enricher_notifications_rejected_total{reason="body_timeout"} 1.0' in metrics
    assert "enricher_connections_open 1.0" in metrics  # the scrape itself

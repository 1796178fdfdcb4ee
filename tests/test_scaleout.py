"""Several enricher processes on one store: real processes, real redis-server, a counting pager.

An alert storm arrives from two senders posting the same notifications (as an HA pair of
Alertmanagers does), one process is killed with SIGKILL in the middle, Redis itself is
killed and restarted from its AOF: every notification is paged, once.
"""

from __future__ import annotations

import collections
import http.client
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import webhook_body
from tests.realstack import REDIS_SERVER, Enricher, RedisServer, free_port, wait_until

needs_redis = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")

STORM = 2000


class Pager:
    """The notifier double (a webhook receiver): every delivery, by the page's group key, with
    when it arrived. `pages` gives the pages (page ids) each notification became: one
    notification paged twice is two page ids; the same page delivered twice (a send in flight
    when its process died) is one."""

    def __init__(self) -> None:
        self.received: dict[str, list[tuple[float, dict[str, Any]]]] = collections.defaultdict(list)
        self.lock = threading.Lock()
        pager = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                return None

            def do_POST(self) -> None:
                at = time.time()
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with pager.lock:
                    pager.received[body["group_key"]].append((at, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/page"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def deliveries(self) -> collections.Counter[str]:
        with self.lock:
            return collections.Counter({g: len(d) for g, d in self.received.items()})

    @property
    def pages(self) -> dict[str, set[int]]:
        with self.lock:
            return {g: {body["id"] for _, body in d} for g, d in self.received.items()}

    def paged(self, groups: set[str] | None = None) -> int:
        with self.lock:
            return len(self.received if groups is None else groups & set(self.received))

    def close(self) -> None:
        self.server.shutdown()


class Sender:
    """One Alertmanager: posts each notification to one enricher, and on a refused
    connection or a 5xx retries it on the next one (as Alertmanager retries)."""

    def __init__(self, ports: list[int], offset: int) -> None:
        self.ports = ports
        self.offset = offset
        self.conns: dict[int, http.client.HTTPConnection] = {}
        self.sent = 0
        self.retries = 0
        self.answers: collections.Counter[int] = collections.Counter()

    def _post(self, port: int, body: bytes) -> int:
        conn = self.conns.get(port)
        if conn is None:
            conn = self.conns[port] = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("POST", "/api/v1/alerts", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            return resp.status
        except OSError:
            conn.close()
            del self.conns[port]
            return 0

    def send(self, bodies: list[bytes], stop: threading.Event | None = None) -> None:
        for i, body in enumerate(bodies):
            for attempt in range(200):
                port = self.ports[(i + self.offset + attempt) % len(self.ports)]
                status = self._post(port, body)
                self.answers[status] += 1
                if 200 <= status < 300:
                    break
                self.retries += 1
                time.sleep(0.02 if attempt < 10 else 0.2)
            else:
                raise AssertionError(f"notification {i} was never acknowledged")
            self.sent += 1


def _config(redis: RedisServer, pager: Pager, prefix: str) -> dict[str, Any]:
    return {
        "store": {"backend": "redis", "redis": {"url": redis.url, "prefix": prefix}},
        "notifiers": {"log": {"enabled": False}, "webhook": {"url": pager.url}},
        # A short lease, so a killed process's jobs are taken over within the test.
        "pipeline": {"lease": 2, "workers": 64},
    }


def _bodies(run: str) -> list[bytes]:
    return [
        json.dumps(webhook_body(groupKey=f'{{}}:{{alertname="Storm{run}-{i}"}}')).encode()
        for i in range(STORM)
    ]


def _assert_each_paged_once(pager: Pager, bodies: list[bytes]) -> None:
    groups = {json.loads(b)["groupKey"] for b in bodies}
    assert set(pager.deliveries) == groups, f"{len(groups - set(pager.deliveries))} never paged"
    two_pages = {g: k for g, k in pager.pages.items() if len(k) != 1}
    assert not two_pages, f"notifications paged as two different pages: {list(two_pages)[:3]}"


def _storm_with_a_kill(
    ports: list[int], pager: Pager, run: str, kill: Callable[[], None]
) -> tuple[int, int]:
    """The HA pair posts the storm, `kill` runs once a third is acknowledged; every
    notification must be paged as one page. Returns the senders' retries and the
    redeliveries the pager saw."""
    bodies = _bodies(run)
    a, b = Sender(ports, 0), Sender(ports, 1)
    threads = [threading.Thread(target=s.send, args=(bodies,)) for s in (a, b)]
    for t in threads:
        t.start()
    wait_until(lambda: a.sent >= STORM // 3, 60, what="a third of the storm acknowledged")
    kill()
    for t in threads:
        t.join(120)
    assert a.sent == b.sent == STORM
    wait_until(lambda: pager.paged() >= STORM, 90, what="every notification paged")
    time.sleep(3)  # longer than a lease: a job taken over twice would page again by now
    _assert_each_paged_once(pager, bodies)
    redelivered = sum(pager.deliveries.values()) - STORM
    # Only a delivery in flight in the killed process can reach the pager twice (it
    # carries the same Idempotency-Key, which receivers deduplicate on).
    assert redelivered <= 64, redelivered
    return a.retries + b.retries, redelivered


@needs_redis
def test_storm_from_an_ha_pair_across_three_processes_with_one_killed(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    pager = Pager()
    config = _config(redis, pager, f"storm-{uuid.uuid4().hex[:8]}:")
    procs = [Enricher(tmp_path / f"e{i}", config=config) for i in range(3)]
    try:
        for p in procs:
            p.start()
        ports = [p.port for p in procs]
        retries, redelivered = _storm_with_a_kill(ports, pager, "a", procs[2].kill9)
        print(
            f"\nstorm: {STORM} notifications x 2 senders, {retries} retries after "
            f"the kill, {redelivered} redeliveries of in-flight pages"
        )
    finally:
        for p in procs:
            p.stop()
        pager.close()
        redis.stop()


@needs_redis
def test_redis_killed_and_restarted_mid_storm_loses_no_acknowledged_notification(
    tmp_path: Path,
) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    pager = Pager()
    config = _config(redis, pager, f"restart-{uuid.uuid4().hex[:8]}:")
    procs = [Enricher(tmp_path / f"e{i}", config=config) for i in range(2)]
    try:
        for p in procs:
            p.start()
        bodies = _bodies("r")
        sender = Sender([p.port for p in procs], 0)
        thread = threading.Thread(target=sender.send, args=(bodies,))
        thread.start()
        wait_until(lambda: sender.sent >= STORM // 4, 60, what="a quarter acknowledged")
        redis.kill()
        # While Redis is down the intake must refuse (503), never acknowledge.
        wait_until(lambda: sender.answers[503] > 0, 30, what="a 503 while Redis is down")
        time.sleep(1.0)
        redis.start()
        thread.join(180)
        assert sender.sent == STORM
        wait_until(lambda: pager.paged() >= STORM, 120, what="every notification paged")
        _assert_each_paged_once(pager, bodies)
        for p in procs:
            assert p.alive(), p.log()[-2000:]
            assert p.get("/readyz")["status"] == "ready"
    finally:
        for p in procs:
            p.stop()
        pager.close()
        redis.stop()


@needs_redis
def test_serve_processes_shares_one_port_and_replaces_a_dead_child(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    pager = Pager()
    config = _config(redis, pager, f"procs-{uuid.uuid4().hex[:8]}:")
    server = Enricher(tmp_path / "e", config=config)
    server.extra_args = ["--processes", "2"]
    try:
        server.start()
        children = wait_until(
            lambda: _children(server.proc.pid) if len(_children(server.proc.pid)) == 2 else None,
            20,
            what="two service processes",
        )
        bodies = _bodies("p")[:200]
        Sender([server.port], 0).send(bodies)
        wait_until(lambda: pager.paged() >= 200, 60, what="200 pages")
        os.kill(children[0], signal.SIGKILL)
        wait_until(
            lambda: (
                len(_children(server.proc.pid)) == 2
                and children[0] not in _children(server.proc.pid)
            ),
            20,
            what="a new child in place of the killed one",
        )
        more = _bodies("q")[:200]
        Sender([server.port], 0).send(more)
        wait_until(lambda: pager.paged() >= 400, 60, what="400 pages")
        _assert_each_paged_once(pager, bodies + more)
    finally:
        server.stop()
        pager.close()
        redis.stop()


def test_sqlite_shared_by_processes_pages_a_storm_once_with_a_child_killed(
    tmp_path: Path,
) -> None:
    """`--processes 3` on one SQLite directory: the HA pair's 2,000 notifications twice over,
    a child SIGKILLed at a third (the supervisor starts another), every notification paged
    as one page; a second service on the same directory is refused meanwhile."""
    pager = Pager()
    config = {
        "notifiers": {"log": {"enabled": False}, "webhook": {"url": pager.url}},
        "pipeline": {"lease": 2, "workers": 64},
    }
    server = Enricher(tmp_path / "e", config=config)
    server.extra_args = ["--processes", "3"]
    try:
        server.start()
        children = wait_until(
            lambda: _children(server.proc.pid) if len(_children(server.proc.pid)) == 3 else None,
            20,
            what="three service processes",
        )
        intruder = Enricher(tmp_path / "e", config=config)
        with pytest.raises(RuntimeError, match="in use by another enricher"):
            intruder.start()
        retries, redelivered = _storm_with_a_kill(
            [server.port], pager, "s", lambda: os.kill(children[1], signal.SIGKILL)
        )
        now = _children(server.proc.pid)
        assert len(now) == 3 and children[1] not in now, now
        assert server.get("/readyz")["status"] == "ready"
        print(
            f"\nsqlite x3: {STORM} notifications x 2 senders, {retries} retries "
            f"after the kill, {redelivered} redeliveries of in-flight pages"
        )
    finally:
        server.stop()
        pager.close()


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]

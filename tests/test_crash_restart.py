"""kill -9 after acknowledging and before delivering: after a restart, each page goes out once."""

from __future__ import annotations

import collections
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.conftest import webhook_body
from tests.realstack import Enricher, free_port, http_post, wait_until

N = 20


class Sink:
    """A pager endpoint that first holds every request open, then accepts and counts."""

    def __init__(self) -> None:
        self.accepting = False
        self.release = threading.Event()
        self.held = 0
        self.accepted: collections.Counter[int] = collections.Counter()
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return None

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if not sink.accepting:
                    with sink.lock:
                        sink.held += 1
                    sink.release.wait(60)
                    try:
                        self.send_response(503)
                        self.end_headers()
                    except OSError:
                        pass
                    return
                with sink.lock:
                    sink.accepted[json.loads(body)["id"]] += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/page"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()


def test_kill_9_between_ack_and_delivery_delivers_each_page_exactly_once(tmp_path):
    sink = Sink()
    config = {
        "notifiers": {"log": {"enabled": False}, "webhook": {"url": sink.url, "timeout": 120}},
        "pipeline": {"workers": 32, "timeouts": {"deliver": 120}},
    }
    data = tmp_path / "data"
    first = Enricher(tmp_path / "run1", config=config, data_dir=data).start()
    try:
        for i in range(N):
            body = json.dumps(webhook_body(groupKey=f"crash-{i}")).encode()
            status, _ = http_post(f"{first.url}/api/v1/alerts", body)
            assert status == 200
        wait_until(lambda: sink.held >= N, 30, what="every delivery to be in flight")
        first.kill9()
        sink.accepting = True
        sink.release.set()

        second = Enricher(tmp_path / "run2", config=config, data_dir=data).start()
        try:
            wait_until(lambda: len(sink.accepted) >= N, 60, what="all pages after restart")
            time.sleep(1.0)  # room for any second delivery to show up
            assert sorted(sink.accepted) == list(range(1, N + 1))
            assert set(sink.accepted.values()) == {1}, sink.accepted
            pages = second.pages()
            assert len(pages) == N
            assert all(p["deliveries"][0]["state"] == "sent" for p in pages)
        finally:
            second.stop()
        assert "Traceback" not in second.log(), second.log()[-3000:]
    finally:
        first.stop()
        sink.close()


def test_sigterm_exits_within_grace_and_the_job_resumes_after_restart(tmp_path):
    sink = Sink()
    config = {
        "notifiers": {"log": {"enabled": False}, "webhook": {"url": sink.url, "timeout": 120}},
        "pipeline": {"shutdown_grace": 1, "timeouts": {"deliver": 120}},
    }
    data = tmp_path / "data"
    first = Enricher(tmp_path / "run1", config=config, data_dir=data).start()
    try:
        body = json.dumps(webhook_body(groupKey="sigterm")).encode()
        assert http_post(f"{first.url}/api/v1/alerts", body)[0] == 200
        wait_until(lambda: sink.held >= 1, 30, what="the delivery to be in flight")
        t0 = time.monotonic()
        assert first.stop(timeout=30) == 0
        assert time.monotonic() - t0 < 1 + 6  # grace, plus the bounded wait for cancellation
        assert "released unfinished jobs" in first.log()
        sink.accepting = True
        sink.release.set()
        second = Enricher(tmp_path / "run2", config=config, data_dir=data).start()
        try:
            wait_until(lambda: sink.accepted, 30, what="delivery after restart")
            assert dict(sink.accepted) == {1: 1}
        finally:
            second.stop()
    finally:
        first.stop()
        sink.close()

"""A real `redis-server` for the store tests: started on a free loopback port in a temporary
directory with the settings the Redis store requires (AOF on, fsync on every write), and
stopped afterwards. The tests that need it are skipped where `redis-server` is not installed
(`apt-get install redis-server`)."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from enricher.config import RedisStoreConfig

REDIS_SERVER = shutil.which("redis-server")
START_TIMEOUT_S = 20.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server process; `kill` and `start` again keep its port and directory."""

    def __init__(self, directory: Path, *extra: str) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.extra = extra
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        assert REDIS_SERVER is not None
        args = [
            REDIS_SERVER,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
            *self.extra,
        ]  # fmt: skip
        with open(self.dir / "redis.log", "ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        end = time.monotonic() + START_TIMEOUT_S
        while not self.ping():
            if self.proc.poll() is not None or time.monotonic() > end:
                log = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"redis-server did not start: {log}")
            time.sleep(0.02)
        return self

    def ping(self) -> bool:
        """PING answered with PONG (not LOADING while the AOF is read back)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final AOF flush, like a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()


def _need_redis() -> None:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One server for the whole session; each test keeps to its own key prefix."""
    _need_redis()
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


MakeRedis = Callable[..., RedisServer]


@pytest.fixture
def make_redis(tmp_path: Path) -> Iterator[MakeRedis]:
    """Servers of the test's own (to kill, restart or start with other settings)."""
    _need_redis()
    servers: list[RedisServer] = []

    def make(*extra: str) -> RedisServer:
        server = RedisServer(tmp_path / f"redis{len(servers)}", *extra)
        servers.append(server)
        return server.start()

    yield make
    for s in servers:
        s.stop()


def redis_config(url: str, **changes: Any) -> RedisStoreConfig:
    """Store settings for a test: its own prefix unless one is given."""
    changes.setdefault("prefix", f"test-{uuid.uuid4().hex[:12]}:")
    return RedisStoreConfig(url=url, **changes)

"""A real `redis-server` for the store tests: started on a free loopback port in a temporary
directory with the settings the Redis store requires (AOF on, fsync on every write), and
stopped afterwards. The tests that need it are skipped where `redis-server` is not installed
(`apt-get install redis-server`)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from enricher.config import RedisStoreConfig
from tests.realstack import REDIS_SERVER, RedisServer

__all__ = ["REDIS_SERVER", "RedisServer"]


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

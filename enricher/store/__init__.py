"""Durable state: notifications, jobs, pages, deliveries. `make_store` picks the backend."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from enricher.config import Config
from enricher.store.base import JobState, Store, StoreError
from enricher.store.sqlite import CommitObserver, SQLiteStore

if TYPE_CHECKING:
    from enricher.store.redis import RedisStore

__all__ = ["JobState", "SQLiteStore", "Store", "StoreError", "make_store"]


def make_store(
    config: Config, on_commit: CommitObserver | None = None, shared: bool = False
) -> SQLiteStore | RedisStore:
    """The backend `store.backend` names: SQLite in `data_dir`, or Redis at `store.redis.url`.

    Both implement `Store` and, beyond it, what the service also calls: `prune`,
    `add_deploy`, `deploys`, `notification_body`. The Redis client is imported only when
    Redis is configured. `shared`: this process is one of several on one SQLite directory
    (`enricher serve --processes N`; Redis is always shared)."""
    if config.store.backend == "redis":
        from enricher.store.redis import RedisStore

        return RedisStore(config.store.redis, on_commit)
    return SQLiteStore(
        Path(config.data_dir),
        config.store.synchronous,
        config.store.max_batch,
        on_commit,
        shared=shared,
    )

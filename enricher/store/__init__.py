"""Durable state: notifications, jobs, pages, deliveries. `open_store` picks the backend."""

from __future__ import annotations

from pathlib import Path

from enricher.config import Config
from enricher.store.base import JobState, Store, StoreError
from enricher.store.sqlite import CommitObserver, SQLiteStore

__all__ = ["JobState", "SQLiteStore", "Store", "StoreError", "make_store"]


def make_store(config: Config, on_commit: CommitObserver | None = None) -> SQLiteStore:
    return SQLiteStore(
        Path(config.data_dir), config.store.synchronous, config.store.max_batch, on_commit
    )

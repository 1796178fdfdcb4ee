"""What SQLite shared by several processes (`enricher serve --processes N`) has to show: two
stores on one directory that `prepare_shared` made ready behave as one store. Each store here
has its own connections, commit thread and write-lock descriptor, exactly as each forked
child has; only the event loop is shared, which the write lock does not depend on."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from enricher.store.base import JobState, StoreError
from enricher.store.sqlite import SQLiteStore, prepare_shared
from tests.store.test_contract import note


@pytest.fixture
def shared_dir(tmp_path: Path):
    fd = prepare_shared(tmp_path)
    yield tmp_path
    os.close(fd)


async def opened(data_dir: Path, n: int = 2) -> list[SQLiteStore]:
    stores = [SQLiteStore(data_dir, shared=True) for _ in range(n)]
    for s in stores:
        await s.open()
    return stores


async def test_a_prepared_directory_refuses_an_unshared_store(shared_dir):
    with pytest.raises(StoreError, match="in use by another enricher"):
        await SQLiteStore(shared_dir).open()
    with pytest.raises(StoreError, match="in use by another enricher"):
        prepare_shared(shared_dir)


async def test_two_processes_accepting_one_notification_make_one_job(shared_dir):
    a, b = await opened(shared_dir)
    try:
        results = await asyncio.gather(*(s.accept(note("same")) for _ in range(20) for s in (a, b)))
        assert sum(not r.duplicate for r in results) == 1
        assert len({r.id for r in results}) == 1
        assert await a.claim("x", 30, 100, 1000) and not await b.claim("y", 30, 100, 1000)
    finally:
        await a.close()
        await b.close()


async def test_two_processes_claiming_at_once_never_get_the_same_job(shared_dir):
    a, b = await opened(shared_dir)
    try:
        both = (s.accept(note(f"n{i}")) for i in range(150) for s in (a, b))
        accepted = await asyncio.gather(*both)
        ids = {r.id for r in accepted}
        assert len(ids) == 150  # each key accepted twice, stored once
        got: dict[str, list[int]] = {"a": [], "b": []}

        async def drain(name: str, store: SQLiteStore) -> None:
            while jobs := await store.claim(name, 30, 7, 1000):
                got[name] += [j.id for j in jobs]

        await asyncio.gather(*(drain(n, s) for n, s in (("a", a), ("b", b)) for _ in range(4)))
        assert got["a"] and got["b"]  # both took part
        assert not set(got["a"]) & set(got["b"])
        assert sorted(got["a"] + got["b"]) == sorted(ids)  # each exactly once
    finally:
        await a.close()
        await b.close()


async def test_a_sibling_takes_up_a_dead_ones_jobs_after_its_lease(shared_dir):
    dead, alive = await opened(shared_dir)
    try:
        jid = (await dead.accept(note("a"))).id
        await dead.claim("dead-worker", 0.2, 10, 1000)
        await dead.close()  # the process is gone; its lease runs out
        assert await alive.claim("alive", 30, 10, 1000) == []  # a live lease is respected
        await asyncio.sleep(0.4)
        [job] = await alive.claim("alive", 30, 10, 1000)
        assert (job.id, job.attempts) == (jid, 2)
        await alive.set_state(jid, "alive", JobState.DONE)
        await asyncio.sleep(0.6)  # past BACKLOG_REREAD_S: the count is read afresh
        assert await alive.backlog() == 0
    finally:
        await alive.close()


async def test_a_restarted_supervisor_resumes_the_jobs_its_children_held(tmp_path):
    fd = prepare_shared(tmp_path)
    [s] = await opened(tmp_path, 1)
    jid = (await s.accept(note("a"))).id
    await s.claim("child-1", 3600, 10, 1000)
    await s.close()
    os.close(fd)  # everything died
    fd = prepare_shared(tmp_path)  # the next supervisor
    try:
        [s] = await opened(tmp_path, 1)
        [job] = await s.claim("child-2", 30, 10, 1000)  # at once, not after the hour
        assert job.id == jid
        await s.close()
    finally:
        os.close(fd)


class _BeginFailsOnce:
    """The writer's connection, refusing its next BEGIN (as a full disk or an I/O error
    would)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn, self.failed = conn, False

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "BEGIN IMMEDIATE" and not self.failed:
            self.failed = True
            raise sqlite3.OperationalError("disk I/O error")
        return self.conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


async def test_a_failed_begin_fails_its_batch_and_gives_the_write_lock_back(shared_dir):
    a, b = await opened(shared_dir)
    try:
        assert a._writer is not None
        a._writer.conn = _BeginFailsOnce(a._writer.conn)  # type: ignore[assignment]
        with pytest.raises(StoreError, match="cannot begin a transaction: disk I/O error"):
            await a.accept(note("lost"))
        # The lock is free again: the sibling writes, and so does `a` on its next batch.
        assert not (await asyncio.wait_for(b.accept(note("b")), 5)).duplicate
        assert not (await a.accept(note("lost"))).duplicate  # not stored the first time
    finally:
        await a.close()
        await b.close()

"""SQLite store (WAL, synchronous=FULL) with group commit.

Why group commit: a 2xx to Alertmanager must mean the notification reached the disk, and one
fsync per request caps throughput at the disk's sync rate. Every write operation waiting at
the moment joins one transaction, each inside its own savepoint, and one COMMIT makes them all
durable before any waiter is woken (see `_GroupCommitter`). One failing operation rolls back
only its savepoint; a failing commit fails the whole batch, and nothing in it is acknowledged.

Reads run on a second thread with their own connection (WAL lets them proceed during writes).
One service owns a data directory; an exclusive lock file enforces that, which is also why
start-up may release every lease left by a previous, dead owner.

Several processes of one service (`enricher serve --processes N`) share the directory: the
supervisor takes the directory lock and prepares the database (`prepare_shared`) before it
forks, and each child opens the store with `shared=True`. Their writers then take turns on a
second lock file, held from BEGIN to COMMIT. Why a lock of our own when SQLite already
serialises writers: SQLite's busy handler waits by sleeping (1, 2, 5, 10 ... ms) and retrying,
so two processes committing every millisecond would mostly sleep; a blocking `flock` wakes
the waiter the moment the other commit ends, and the wait happens on the commit thread, never
on the event loop. Jobs are claimed inside those write transactions, so a job is leased to one
process; a dead child's jobs are taken over when their leases expire, as on Redis.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import json
import logging
import os
import queue
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from enricher.store.base import (
    FINAL_STATES,
    AcceptResult,
    DeliveryRecord,
    Job,
    JobState,
    NewNotification,
    PageRecord,
    StoreError,
)

log = logging.getLogger("enricher.store")
T = TypeVar("T")
_FINAL = tuple(str(s) for s in FINAL_STATES)

SCHEMA = """
CREATE TABLE IF NOT EXISTS notifications (
  id INTEGER PRIMARY KEY,
  idem_key TEXT NOT NULL UNIQUE,
  received_at REAL NOT NULL,
  group_key TEXT NOT NULL,
  status TEXT NOT NULL,
  severity TEXT NOT NULL,
  alert_count INTEGER NOT NULL,
  body BLOB NOT NULL,
  body_encoding TEXT NOT NULL DEFAULT 'identity',
  duplicates INTEGER NOT NULL DEFAULT 0,
  last_duplicate_at REAL
);
CREATE TABLE IF NOT EXISTS jobs (
  id INTEGER PRIMARY KEY REFERENCES notifications(id),
  state TEXT NOT NULL,
  priority INTEGER NOT NULL,
  received_at REAL NOT NULL,
  deadline REAL NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  lease_owner TEXT,
  lease_expires REAL,
  updated_at REAL NOT NULL,
  error TEXT,
  bundle TEXT
);
CREATE INDEX IF NOT EXISTS jobs_open ON jobs(priority, received_at)
  WHERE state NOT IN ('done', 'failed');
CREATE TABLE IF NOT EXISTS pages (
  id INTEGER PRIMARY KEY REFERENCES jobs(id),
  group_key TEXT NOT NULL,
  status TEXT NOT NULL,
  paged_at REAL NOT NULL,
  degraded INTEGER NOT NULL,
  doc BLOB NOT NULL,
  doc_encoding TEXT NOT NULL DEFAULT 'identity',
  resolved_at REAL,
  resolved_by INTEGER
);
CREATE INDEX IF NOT EXISTS pages_group ON pages(group_key, id);
CREATE TABLE IF NOT EXISTS deliveries (
  page_id INTEGER NOT NULL REFERENCES pages(id),
  notifier TEXT NOT NULL,
  state TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  last_error TEXT,
  delivered_at REAL,
  next_try REAL,
  receipt TEXT,
  kind TEXT NOT NULL DEFAULT 'page',
  PRIMARY KEY (page_id, notifier)
);
CREATE TABLE IF NOT EXISTS deploys (
  id INTEGER PRIMARY KEY,
  service TEXT NOT NULL,
  environment TEXT,
  version TEXT NOT NULL,
  commit_sha TEXT,
  at REAL NOT NULL,
  doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS deploys_service ON deploys(service, at);
CREATE TABLE IF NOT EXISTS heartbeat (id INTEGER PRIMARY KEY CHECK (id = 1), at REAL);
"""


def _connect(path: Path, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=OFF")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def _release_all_leases(c: sqlite3.Connection) -> int:
    return int(
        c.execute(
            "UPDATE jobs SET lease_owner=NULL, lease_expires=NULL"
            f" WHERE lease_owner IS NOT NULL AND state NOT IN {_FINAL}"
        ).rowcount
    )


def _count_open_jobs(c: sqlite3.Connection) -> int:
    return int(c.execute(f"SELECT count(*) FROM jobs WHERE state NOT IN {_FINAL}").fetchone()[0])


def _open_lock(data_dir: Path, name: str) -> int:
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        return os.open(data_dir / name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StoreError(f"cannot use data directory {data_dir}: {exc}") from None


def _lock_directory(data_dir: Path) -> int:
    """The directory lock: an open descriptor holding it, or StoreError saying it is taken."""
    fd = _open_lock(data_dir, "enricher.lock")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise StoreError(
            f"data directory {data_dir} is in use by another enricher process"
        ) from None
    return fd


def prepare_shared(data_dir: Path, synchronous: str = "FULL") -> int:
    """Make a directory ready for processes that share it (`SQLiteStore(shared=True)`).

    Run once by the supervisor before it forks: takes the directory lock (the descriptor it
    returns holds it; the children inherit it, so the lock stays taken while any of them
    lives), creates or migrates the schema, and releases the leases a dead predecessor left.
    """
    data_dir = Path(data_dir)
    fd = _lock_directory(data_dir)
    try:
        conn = _connect(data_dir / "enricher.db", synchronous)
        try:
            conn.executescript(SCHEMA)
            _migrate(conn)
            released = _release_all_leases(conn)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        os.close(fd)
        raise StoreError(f"cannot open {data_dir / 'enricher.db'}: {exc}") from None
    if released:
        log.info("resuming unfinished jobs", extra={"released": released})
    os.set_inheritable(fd, True)
    return fd


_Op = Callable[[sqlite3.Connection], Any]
# Called after each group commit with the batch size and the COMMIT's duration in seconds.
CommitObserver = Callable[[int, float], None]
_Item = tuple[_Op, "asyncio.Future[Any]"]


# Bodies and page documents above this size are stored zlib-compressed: a 50-alert group
# (36 KB of JSON) shrinks about 36-fold for 40 us of CPU, far less than writing it to the WAL
# and then to the database costs. Small ones are not worth it.
COMPRESS_ABOVE = 4096
# Deletes run on the event loop inside a group commit: small batches keep that commit short.
PRUNE_BATCH = 500
# How stale a shared store's backlog count may be (a count(*) over the open-jobs index).
BACKLOG_REREAD_S = 0.5


def _encode(body: bytes) -> tuple[bytes, str]:
    if len(body) > COMPRESS_ABOVE:
        return zlib.compress(body, 1), "zlib"
    return body, "identity"


def _decode(body: bytes, encoding: str) -> bytes:
    return zlib.decompress(body) if encoding == "zlib" else body


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a data directory written by an earlier version up to SCHEMA."""
    for table, column, decl in (
        ("notifications", "body_encoding", "TEXT NOT NULL DEFAULT 'identity'"),
        ("pages", "doc_encoding", "TEXT NOT NULL DEFAULT 'identity'"),
        ("deliveries", "next_try", "REAL"),
        ("deliveries", "receipt", "TEXT"),
        ("deliveries", "kind", "TEXT NOT NULL DEFAULT 'page'"),
    ):
        columns = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        if column not in columns:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")


class _Reader(threading.Thread):
    """Runs read-only queries one at a time on its own connection, off the event loop."""

    def __init__(self, conn: sqlite3.Connection, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(name="store-reader", daemon=True)
        self.conn = conn
        self.loop = loop
        self.q: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()

    def submit(self, op: _Op) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = self.loop.create_future()
        self.q.put((op, fut))
        return fut

    def stop(self) -> None:
        self.q.put(None)

    def run(self) -> None:
        while (item := self.q.get()) is not None:
            op, fut = item
            try:
                result: tuple[bool, Any] = (True, op(self.conn))
            except Exception as exc:
                result = (False, exc)
            self.loop.call_soon_threadsafe(_resolve, [(fut, result)])
        self.conn.close()


class _GroupCommitter:
    """Batches write operations into one transaction and one fsync.

    The operations' SQL runs on the event-loop thread: it is microseconds of work, and
    running it there avoids handing the GIL back and forth between threads around every
    statement (which, under load, costs up to a switch interval each time). Only COMMIT,
    where SQLite waits for the disk with the GIL released, runs on a helper thread. While
    one batch commits, the next one collects; the connection is never used by two threads
    at once.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        loop: asyncio.AbstractEventLoop,
        max_batch: int,
        on_commit: CommitObserver | None = None,
        write_lock: int | None = None,
    ) -> None:
        self.on_commit = on_commit
        # Shared directories only: the fd of the lock sibling processes' writers take turns on.
        self.write_lock = write_lock
        self.conn = conn
        self.loop = loop
        self.max_batch = max_batch
        self.pending: list[_Item] = []
        self.committing = False
        self.scheduled = False
        self.closed = False
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="store-commit")

    def submit(self, op: _Op) -> asyncio.Future[Any]:
        if self.closed:
            raise StoreError("store is closed")
        fut: asyncio.Future[Any] = self.loop.create_future()
        self.pending.append((op, fut))
        if not self.committing and not self.scheduled:
            self.scheduled = True
            # Let every request that arrived in this loop iteration join the batch.
            self.loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        self.scheduled = False
        if self.committing or not self.pending:
            return
        if self.write_lock is not None:
            try:
                fcntl.flock(self.write_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                # A sibling is writing: wait for it on the commit thread; what arrives
                # meanwhile joins this batch.
                self.committing = True
                wait = self.loop.run_in_executor(
                    self._pool, fcntl.flock, self.write_lock, fcntl.LOCK_EX
                )
                wait.add_done_callback(self._locked)
                return
            except OSError as exc:
                self._fail_pending(f"cannot take the write lock: {exc}")
                return
        self._begin()

    def _locked(self, f: asyncio.Future[None]) -> None:
        self.committing = False
        exc = f.exception()
        if exc is not None:
            self._fail_pending(f"cannot take the write lock: {exc}")
            return
        self._begin()

    def _fail_pending(self, why: str) -> None:
        items = self.pending[: self.max_batch]
        del self.pending[: self.max_batch]
        self._finish(items, [(False, StoreError(why))] * len(items))
        self._reschedule()

    def _unlock(self) -> None:
        if self.write_lock is not None:
            fcntl.flock(self.write_lock, fcntl.LOCK_UN)

    def _reschedule(self) -> None:
        if self.pending and not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self._flush)

    def _begin(self) -> None:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._unlock()
            self._fail_pending(f"cannot begin a transaction: {exc}")
            return
        items = self.pending[: self.max_batch]
        del self.pending[: self.max_batch]
        results = self._run_ops(items)
        self.committing = True
        self._commit_started = time.perf_counter()
        commit = self.loop.run_in_executor(self._pool, self._commit)
        commit.add_done_callback(lambda f: self._committed(items, results, f))

    def _run_ops(self, items: list[_Item]) -> list[tuple[bool, Any]]:
        conn = self.conn
        results: list[tuple[bool, Any]] = []
        for op, _fut in items:
            try:
                conn.execute("SAVEPOINT op")
                value = op(conn)
                conn.execute("RELEASE op")
                results.append((True, value))
            except Exception as exc:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                if isinstance(exc, sqlite3.Error):
                    exc = StoreError(f"store write failed: {exc}")
                results.append((False, exc))
        return results

    def _commit(self) -> None:
        try:
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
            raise StoreError(f"commit failed: {exc}") from None
        finally:
            self._unlock()

    def _committed(
        self, items: list[_Item], results: list[tuple[bool, Any]], f: asyncio.Future[None]
    ) -> None:
        self.committing = False
        if self.on_commit is not None:
            self.on_commit(len(items), time.perf_counter() - self._commit_started)
        exc = f.exception()
        self._finish(items, results if exc is None else [(False, exc)] * len(items))
        self._reschedule()

    def _finish(self, items: list[_Item], results: list[tuple[bool, Any]]) -> None:
        _resolve([(it[1], r) for it, r in zip(items, results, strict=True)])

    async def close(self) -> None:
        self.closed = True
        while self.pending or self.committing or self.scheduled:
            await asyncio.sleep(0.005)
        self._pool.shutdown(wait=True)
        self.conn.close()


def _resolve(pairs: list[tuple[asyncio.Future[Any], tuple[bool, Any]]]) -> None:
    for fut, (ok, value) in pairs:
        if fut.done():
            continue
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)


class SQLiteStore:
    """The embedded default store. See the module docstring for the commit model."""

    def __init__(
        self,
        data_dir: Path,
        synchronous: str = "FULL",
        max_batch: int = 512,
        on_commit: CommitObserver | None = None,
        shared: bool = False,
    ) -> None:
        self.on_commit = on_commit
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / "enricher.db"
        self.synchronous = synchronous
        self.max_batch = max_batch
        # One of several processes on a directory `prepare_shared` made ready (see the
        # module docstring): no directory lock, no lease release, writers take turns.
        self.shared = shared
        self._writer: _GroupCommitter | None = None
        self._reader: _Reader | None = None
        self._lock_fd: int | None = None
        self._open_jobs = 0
        self._backlog_read_at = 0.0

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        if self.shared:
            # Our own descriptor (not one inherited from the supervisor): flock locks belong
            # to an open file, and siblings sharing one would never exclude each other.
            fd = _open_lock(self.data_dir, "enricher.write.lock")
        else:
            fd = _lock_directory(self.data_dir)
        self._lock_fd = fd
        loop = asyncio.get_running_loop()
        try:
            wconn = _connect(self.path, self.synchronous)
            if not self.shared:  # shared: prepare_shared did this before the fork
                wconn.executescript(SCHEMA)
                _migrate(wconn)
            rconn = _connect(self.path, self.synchronous)
        except sqlite3.Error as exc:
            os.close(fd)
            self._lock_fd = None
            raise StoreError(f"cannot open {self.path}: {exc}") from None
        # SQLite's own checkpoint (every 1000 pages, inside the commit that crosses it) keeps
        # the WAL bounded under sustained writes; a background checkpointer never catches up
        # with a busy writer, and the WAL then grows without limit (seen: 1.4 GB in 30 s).
        wconn.execute("PRAGMA journal_size_limit=67108864")
        self._writer = _GroupCommitter(
            wconn, loop, self.max_batch, self.on_commit, fd if self.shared else None
        )
        self._reader = _Reader(rconn, loop)
        self._reader.start()
        if not self.shared:
            # This process owns the directory (lock above): leases of a dead predecessor are
            # void. (Shared: the supervisor released them before the fork; a sibling's
            # leases are live, and a dead sibling's expire.)
            released = await self._write(_release_all_leases)
            if released:
                log.info("resuming unfinished jobs", extra={"released": released})
        self._open_jobs = await self._read(_count_open_jobs)

    async def close(self) -> None:
        if self._writer is not None:
            await self._writer.close()
        if self._reader is not None:
            self._reader.stop()
            await asyncio.to_thread(self._reader.join, 10)
        self._writer = self._reader = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _write(self, op: _Op) -> asyncio.Future[Any]:
        if self._writer is None:
            raise StoreError("store is closed")
        return self._writer.submit(op)

    def _read(self, op: _Op) -> asyncio.Future[Any]:
        if self._reader is None:
            raise StoreError("store is closed")
        return self._reader.submit(op)

    # -- intake -------------------------------------------------------------------------------

    async def accept(self, n: NewNotification) -> AcceptResult:
        def op(c: sqlite3.Connection) -> AcceptResult:
            row = c.execute(
                "INSERT INTO notifications(idem_key, received_at, group_key, status, severity,"
                " alert_count, body, body_encoding) VALUES (?,?,?,?,?,?,?,?)"
                " ON CONFLICT(idem_key) DO UPDATE SET duplicates = duplicates + 1,"
                " last_duplicate_at = excluded.received_at"
                " RETURNING id, duplicates",
                (
                    n.idem_key,
                    n.received_at,
                    n.group_key,
                    n.status,
                    n.severity,
                    n.alert_count,
                    *_encode(n.body),
                ),
            ).fetchone()
            nid, dups = int(row[0]), int(row[1])
            if dups:
                return AcceptResult.model_construct(id=nid, duplicate=True, duplicates=dups)
            c.execute(
                "INSERT INTO jobs(id, state, priority, received_at, deadline, updated_at)"
                " VALUES (?,?,?,?,?,?)",
                (
                    nid,
                    JobState.RECEIVED.value,
                    n.priority,
                    n.received_at,
                    n.deadline,
                    n.received_at,
                ),
            )
            return AcceptResult.model_construct(id=nid, duplicate=False, duplicates=0)

        result: AcceptResult = await self._write(op)
        if not result.duplicate:
            self._open_jobs += 1
        return result

    async def backlog(self) -> int:
        """Unfinished jobs. One process counts them as it goes; siblings sharing a directory
        finish each other's jobs, so each re-reads the count, at most every half second."""
        if self.shared and time.monotonic() - self._backlog_read_at > BACKLOG_REREAD_S:
            self._backlog_read_at = time.monotonic()
            with contextlib.suppress(StoreError):
                self._open_jobs = await self._read(_count_open_jobs)
        return self._open_jobs

    # -- jobs ---------------------------------------------------------------------------------

    async def claim(self, owner: str, lease_s: float, limit: int, max_priority: int) -> list[Job]:
        def op(c: sqlite3.Connection) -> list[Job]:
            now = time.time()
            rows = c.execute(
                "SELECT j.id, j.state, j.priority, n.severity, n.status, n.group_key,"
                " j.received_at, j.deadline, j.attempts, n.body, j.bundle, n.body_encoding"
                " FROM jobs j JOIN notifications n ON n.id = j.id"
                f" WHERE j.state NOT IN {_FINAL} AND j.priority <= ?"
                " AND (j.lease_expires IS NULL OR j.lease_expires < ?)"
                " ORDER BY j.priority, j.received_at LIMIT ?",
                (max_priority, now, limit),
            ).fetchall()
            if not rows:
                return []
            ids = [r[0] for r in rows]
            # Taking a job is the start of its gather stage (resolutions skip straight on).
            c.execute(
                f"UPDATE jobs SET lease_owner=?, lease_expires=?, attempts=attempts+1,"
                f" updated_at=?, state=CASE WHEN state='received' THEN 'gathering' ELSE state END"
                f" WHERE id IN ({','.join('?' * len(ids))})",
                (owner, now + lease_s, now, *ids),
            )
            return [
                Job.model_construct(  # our own rows: no need to validate them again
                    id=r[0],
                    state=JobState.GATHERING if r[1] == "received" else JobState(r[1]),
                    priority=r[2],
                    severity=r[3],
                    status=r[4],
                    group_key=r[5],
                    received_at=r[6],
                    deadline=r[7],
                    attempts=r[8] + 1,
                    body=_decode(r[9], r[11]),
                    bundle=r[10],
                )
                for r in rows
            ]

        return await self._write(op)  # type: ignore[no-any-return]

    async def renew(self, job_ids: list[int], owner: str, lease_s: float) -> int:
        def op(c: sqlite3.Connection) -> int:
            return c.execute(
                f"UPDATE jobs SET lease_expires=? WHERE lease_owner=?"
                f" AND id IN ({','.join('?' * len(job_ids))})",
                (time.time() + lease_s, owner, *job_ids),
            ).rowcount

        return await self._write(op)  # type: ignore[no-any-return]

    async def release(self, owner: str) -> int:
        return await self._write(  # type: ignore[no-any-return]
            lambda c: (
                c.execute(
                    "UPDATE jobs SET lease_owner=NULL, lease_expires=NULL WHERE lease_owner=?",
                    (owner,),
                ).rowcount
            )
        )

    async def set_state(
        self,
        job_id: int,
        owner: str,
        state: JobState,
        *,
        bundle: str | None = None,
        error: str | None = None,
    ) -> None:
        final = state in FINAL_STATES

        def op(c: sqlite3.Connection) -> int:
            sets = ["state=?", "updated_at=?"]
            args: list[Any] = [state.value, time.time()]
            if bundle is not None:
                sets.append("bundle=?")
                args.append(bundle)
            if error is not None:
                sets.append("error=?")
                args.append(error)
            if final:
                sets.append("lease_owner=NULL, lease_expires=NULL")
            return c.execute(
                f"UPDATE jobs SET {', '.join(sets)} WHERE id=? AND state NOT IN {_FINAL}",
                (*args, job_id),
            ).rowcount

        changed = await self._write(op)
        if final and changed:
            self._open_jobs -= 1

    # -- pages and deliveries -----------------------------------------------------------------

    async def save_page(
        self, page: PageRecord, notifiers: list[str], resolves: int | None = None
    ) -> None:
        """Record the page, its pending deliveries, the job's move to delivering and, for a
        resolution, the firing page it resolves: one operation, so all of it or none."""
        doc = page.doc if isinstance(page.doc, str) else json.dumps(page.doc, default=str)

        def op(c: sqlite3.Connection) -> None:
            c.execute(
                "UPDATE jobs SET state='delivering', updated_at=? WHERE id=?",
                (page.paged_at, page.id),
            )
            if resolves is not None:
                c.execute(
                    "UPDATE pages SET status='resolved', resolved_at=?, resolved_by=? WHERE id=?",
                    (page.paged_at, page.id, resolves),
                )
            c.execute(
                "INSERT INTO pages(id, group_key, status, paged_at, degraded, doc, doc_encoding)"
                " VALUES (?,?,?,?,?,?,?) ON CONFLICT(id) DO NOTHING",
                (
                    page.id,
                    page.group_key,
                    page.status,
                    page.paged_at,
                    int(page.degraded),
                    *_encode(doc.encode()),
                ),
            )
            c.executemany(
                "INSERT INTO deliveries(page_id, notifier, state) VALUES (?,?,'pending')"
                " ON CONFLICT DO NOTHING",
                [(page.id, n) for n in notifiers],
            )

        await self._write(op)

    async def update_page_doc(self, page_id: int, doc: str) -> bool:
        def op(c: sqlite3.Connection) -> bool:
            cur = c.execute(
                "UPDATE pages SET doc=?, doc_encoding=? WHERE id=?",
                (*_encode(doc.encode()), page_id),
            )
            return cur.rowcount > 0

        return bool(await self._write(op))

    def _page_from_row(self, c: sqlite3.Connection, r: tuple[Any, ...]) -> PageRecord:
        deliveries = [
            DeliveryRecord(
                page_id=r[0],
                notifier=d[0],
                state=d[1],
                attempts=d[2],
                last_error=d[3],
                delivered_at=d[4],
                next_try=d[5],
                receipt=json.loads(d[6]) if d[6] else None,
                kind=d[7],
            )
            for d in c.execute(
                "SELECT notifier, state, attempts, last_error, delivered_at, next_try, receipt,"
                " kind FROM deliveries WHERE page_id=? ORDER BY notifier",
                (r[0],),
            )
        ]
        return PageRecord(
            id=r[0],
            group_key=r[1],
            status=r[2],
            paged_at=r[3],
            degraded=bool(r[4]),
            doc=json.loads(_decode(r[5], r[8])),
            resolved_at=r[6],
            resolved_by=r[7],
            deliveries=deliveries,
        )

    _PAGE_COLS = (
        "id, group_key, status, paged_at, degraded, doc, resolved_at, resolved_by, doc_encoding"
    )

    async def get_page(self, page_id: int) -> PageRecord | None:
        def op(c: sqlite3.Connection) -> PageRecord | None:
            r = c.execute(f"SELECT {self._PAGE_COLS} FROM pages WHERE id=?", (page_id,)).fetchone()
            return self._page_from_row(c, r) if r else None

        return await self._read(op)  # type: ignore[no-any-return]

    async def list_pages(self, limit: int, before: int | None = None) -> list[PageRecord]:
        def op(c: sqlite3.Connection) -> list[PageRecord]:
            rows = c.execute(
                f"SELECT {self._PAGE_COLS} FROM pages WHERE id < ? ORDER BY id DESC LIMIT ?",
                (before if before is not None else 2**62, limit),
            ).fetchall()
            return [self._page_from_row(c, r) for r in rows]

        return await self._read(op)  # type: ignore[no-any-return]

    async def latest_firing_page(self, group_key: str, before_id: int) -> PageRecord | None:
        def op(c: sqlite3.Connection) -> PageRecord | None:
            r = c.execute(
                f"SELECT {self._PAGE_COLS} FROM pages WHERE group_key=? AND status='firing'"
                " AND id < ? ORDER BY id DESC LIMIT 1",
                (group_key, before_id),
            ).fetchone()
            return self._page_from_row(c, r) if r else None

        return await self._read(op)  # type: ignore[no-any-return]

    async def record_delivery(
        self,
        page_id: int,
        notifier: str,
        state: str,
        error: str | None,
        at: float,
        next_try: float | None = None,
    ) -> None:
        await self._write(
            lambda c: c.execute(
                "UPDATE deliveries SET state=?, attempts=attempts+1, last_error=?, next_try=?,"
                " delivered_at=CASE WHEN ?='sent' THEN ? ELSE delivered_at END"
                " WHERE page_id=? AND notifier=?",
                (state, error, next_try, state, at, page_id, notifier),
            )
        )

    async def save_receipt(self, page_id: int, notifier: str, receipt: dict[str, str]) -> None:
        await self._write(
            lambda c: c.execute(
                "UPDATE deliveries SET receipt=? WHERE page_id=? AND notifier=?",
                (json.dumps(receipt), page_id, notifier),
            )
        )

    async def deliveries(self, page_id: int) -> list[DeliveryRecord]:
        def op(c: sqlite3.Connection) -> list[DeliveryRecord]:
            r = c.execute(f"SELECT {self._PAGE_COLS} FROM pages WHERE id=?", (page_id,)).fetchone()
            return self._page_from_row(c, r).deliveries if r else []

        return await self._read(op)  # type: ignore[no-any-return]

    async def requeue_update(
        self, job_id: int, owner: str, notifiers: list[str], lease_s: float
    ) -> bool:
        """Send a finished page again to these notifiers (its analysis changed after it went
        out): their deliveries become pending updates and the job is leased to `owner`, in
        one commit. False when the job is not final (its deliveries are still running)."""

        def op(c: sqlite3.Connection) -> bool:
            now = time.time()
            moved = c.execute(
                "UPDATE jobs SET state='delivering', updated_at=?, error=NULL, lease_owner=?,"
                f" lease_expires=? WHERE id=? AND state IN {_FINAL}",
                (now, owner, now + lease_s, job_id),
            ).rowcount
            if not moved:
                return False
            marks = ",".join("?" * len(notifiers))
            c.execute(
                "UPDATE deliveries SET state='pending', kind='update', attempts=0,"
                f" next_try=NULL WHERE page_id=? AND notifier IN ({marks})",
                (job_id, *notifiers),
            )
            return True

        moved = bool(await self._write(op))
        if moved:
            self._open_jobs += 1
        return moved

    async def finish(
        self,
        job_id: int,
        owner: str,
        state: JobState,
        sent: list[str],
        error: str | None,
        at: float,
    ) -> None:
        """Record the successful deliveries and the job's final state in one commit."""

        def op(c: sqlite3.Connection) -> int:
            c.executemany(
                "UPDATE deliveries SET state='sent', attempts=attempts+1, delivered_at=?,"
                " last_error=NULL, next_try=NULL WHERE page_id=? AND notifier=?",
                [(at, job_id, n) for n in sent],
            )
            return c.execute(
                "UPDATE jobs SET state=?, updated_at=?, error=?, lease_owner=NULL,"
                f" lease_expires=NULL WHERE id=? AND state NOT IN {_FINAL}",
                (state.value, at, error, job_id),
            ).rowcount

        if await self._write(op):
            self._open_jobs -= 1

    async def pending_deliveries(self, page_id: int) -> list[str]:
        return await self._read(  # type: ignore[no-any-return]
            lambda c: [
                r[0]
                for r in c.execute(
                    "SELECT notifier FROM deliveries WHERE page_id=? AND state='pending'",
                    (page_id,),
                )
            ]
        )

    async def check_writable(self) -> None:
        await self._write(
            lambda c: c.execute(
                "INSERT INTO heartbeat(id, at) VALUES (1, ?)"
                " ON CONFLICT(id) DO UPDATE SET at=excluded.at",
                (time.time(),),
            )
        )

    # -- deploy events (POST /api/v1/deploys) ----------------------------------------------

    async def add_deploy(
        self,
        service: str,
        environment: str | None,
        version: str,
        commit: str | None,
        at: float,
        doc: dict[str, Any],
    ) -> int:
        return await self._write(  # type: ignore[no-any-return]
            lambda c: c.execute(
                "INSERT INTO deploys(service, environment, version, commit_sha, at, doc)"
                " VALUES (?,?,?,?,?,?) RETURNING id",
                (service, environment, version, commit, at, json.dumps(doc, default=str)),
            ).fetchone()[0]
        )

    async def deploys(self, service: str, since: float, until: float) -> list[dict[str, Any]]:
        return await self._read(  # type: ignore[no-any-return]
            lambda c: [
                json.loads(r[0])
                for r in c.execute(
                    "SELECT doc FROM deploys WHERE service=? AND at BETWEEN ? AND ? ORDER BY at",
                    (service, since, until),
                )
            ]
        )

    async def prune(self, before: float, limit: int = PRUNE_BATCH) -> int:
        """Delete up to `limit` finished jobs received before `before`, with their notification,
        page and deliveries, and deploy events as old. Bounded, so one commit stays small."""

        def op(c: sqlite3.Connection) -> int:
            ids = [
                r[0]
                for r in c.execute(
                    f"SELECT id FROM jobs WHERE state IN {_FINAL} AND received_at < ?"
                    " ORDER BY id LIMIT ?",
                    (before, limit),
                )
            ]
            if ids:
                marks = ",".join("?" * len(ids))
                c.execute(f"DELETE FROM deliveries WHERE page_id IN ({marks})", ids)
                for table in ("pages", "jobs", "notifications"):
                    c.execute(f"DELETE FROM {table} WHERE id IN ({marks})", ids)
            c.execute("DELETE FROM deploys WHERE at < ?", (before,))
            return len(ids)

        return await self._write(op)  # type: ignore[no-any-return]

    async def notification_body(self, notification_id: int) -> bytes | None:
        """The notification exactly as it was received."""
        row = await self._read(
            lambda c: c.execute(
                "SELECT body, body_encoding FROM notifications WHERE id=?", (notification_id,)
            ).fetchone()
        )
        return _decode(row[0], row[1]) if row else None

    def _test_limit_pages(self) -> asyncio.Future[Any]:
        """Caps the database at its current size, so the next growth fails like a full disk."""
        return self._write(
            lambda c: c.execute(
                "PRAGMA max_page_count = " + str(c.execute("PRAGMA page_count").fetchone()[0])
            )
        )

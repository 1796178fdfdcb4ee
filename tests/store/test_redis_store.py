"""What only the Redis store has to show: several processes on one Redis, the durability
check at start-up, and a Redis that dies and comes back."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import stat
from pathlib import Path

import pytest

from enricher.config import ConfigError, load_config
from enricher.store import make_store
from enricher.store.base import JobState, Store, StoreError
from enricher.store.redis import RedisStore, durability_problems, redact
from enricher.store.sqlite import SQLiteStore
from tests.conftest import Recorder, post, service_of, wait_pages, webhook_body
from tests.store.conftest import redis_config
from tests.store.test_contract import note


async def opened(*stores: RedisStore) -> tuple[RedisStore, ...]:
    for s in stores:
        await s.open()
    return stores


async def test_two_processes_accepting_one_notification_make_one_job(redis_server):
    cfg = redis_config(redis_server.url)
    a, b = await opened(RedisStore(cfg), RedisStore(cfg))
    try:
        results = await asyncio.gather(*(s.accept(note("same")) for _ in range(20) for s in (a, b)))
        assert sum(not r.duplicate for r in results) == 1
        assert len({r.id for r in results}) == 1
        assert sorted(r.duplicates for r in results) == list(range(40))
        assert await a.backlog() == await b.backlog() == 1
    finally:
        await a.close()
        await b.close()


async def test_two_processes_claiming_at_once_never_get_the_same_job(redis_server):
    cfg = redis_config(redis_server.url)
    a, b = await opened(RedisStore(cfg), RedisStore(cfg))
    try:
        ids = {r.id for r in await asyncio.gather(*(a.accept(note(f"n{i}")) for i in range(300)))}
        got: dict[str, list[int]] = {"a": [], "b": []}

        async def drain(name: str, store: RedisStore) -> None:
            while jobs := await store.claim(name, 30, 7, 1000):
                got[name] += [j.id for j in jobs]

        await asyncio.gather(*(drain(n, s) for n, s in (("a", a), ("b", b)) for _ in range(4)))
        assert not set(got["a"]) & set(got["b"])
        assert sorted(got["a"] + got["b"]) == sorted(ids)  # each exactly once
        assert await a.release("a") == len(got["a"])
        assert await b.backlog() == 300
    finally:
        await a.close()
        await b.close()


async def test_a_worker_of_another_process_takes_up_a_dead_ones_jobs(redis_server):
    cfg = redis_config(redis_server.url)
    dead, alive = await opened(RedisStore(cfg), RedisStore(cfg))
    try:
        [jid] = [r.id for r in [await dead.accept(note("a"))]]
        await dead.claim("dead-worker", 0.2, 10, 1000)
        await dead.close()  # the process is gone; its lease runs out
        await asyncio.sleep(0.5)
        [job] = await alive.claim("alive", 30, 10, 1000)
        assert (job.id, job.attempts) == (jid, 2)
        await alive.set_state(jid, "alive", JobState.DONE)
        assert await alive.backlog() == 0
    finally:
        await alive.close()


async def test_prefixes_keep_two_services_apart(redis_server):
    one, two = await opened(
        RedisStore(redis_config(redis_server.url)), RedisStore(redis_config(redis_server.url))
    )
    try:
        await one.accept(note("a"))
        assert not (await two.accept(note("a"))).duplicate
        assert len(await one.claim("me", 30, 10, 1000)) == 1
        assert await two.backlog() == 1
    finally:
        await one.close()
        await two.close()


async def test_idempotency_keys_expire_after_their_ttl(redis_server):
    s = RedisStore(redis_config(redis_server.url, idempotency_ttl=0.2))
    await s.open()
    try:
        first = await s.accept(note("a"))
        assert (await s.accept(note("a"))).duplicate
        await asyncio.sleep(0.5)
        later = await s.accept(note("a"))
        assert not later.duplicate and later.id != first.id
    finally:
        await s.close()


# -- durability check --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "setting"),
    [
        (("--appendonly", "no"), "appendonly is no"),
        (("--appendfsync", "everysec"), "appendfsync is everysec"),
        (("--maxmemory", "100mb", "--maxmemory-policy", "allkeys-lru"), "maxmemory-policy"),
    ],
)
async def test_open_refuses_a_redis_that_can_lose_acknowledged_writes(
    make_redis, caplog, extra, setting
):
    server = make_redis(*extra)
    strict = RedisStore(redis_config(server.url))
    with pytest.raises(StoreError) as err:
        await strict.open()
    assert setting in str(err.value)
    assert "store.redis.require_durable: false" in str(err.value)
    with pytest.raises(StoreError):
        await strict.accept(note("a"))  # never opened

    lax = RedisStore(redis_config(server.url, require_durable=False))
    with caplog.at_level(logging.WARNING, logger="enricher.store"):
        await lax.open()
    try:
        assert any(
            "NOT DURABLE" in r.getMessage() and setting in r.getMessage() for r in caplog.records
        )
        assert not (await lax.accept(note("a"))).duplicate
    finally:
        await lax.close()


async def test_open_refuses_when_config_cannot_be_read_unless_told_not_to_check(make_redis, caplog):
    server = make_redis("--rename-command", "CONFIG", "")  # as managed Redis services do
    with pytest.raises(StoreError) as err:
        await RedisStore(redis_config(server.url)).open()
    message = str(err.value)
    assert "CONFIG GET is refused" in message and "managed Redis" in message
    assert "store.redis.require_durable: false" in message
    lax = RedisStore(redis_config(server.url, require_durable=False))
    with caplog.at_level(logging.WARNING, logger="enricher.store"):
        await lax.open()
    try:
        assert any("DURABILITY NOT VERIFIED" in r.getMessage() for r in caplog.records)
        await lax.check_writable()
    finally:
        await lax.close()


def test_durability_problems_name_each_setting():
    durable = {"appendonly": "yes", "appendfsync": "always", "maxmemory": "0"}
    assert durability_problems(durable) == []
    assert durability_problems({**durable, "maxmemory-policy": "allkeys-lru"}) == []  # no limit
    [p] = durability_problems({**durable, "appendfsync": "no"})
    assert p.startswith("appendfsync is no")


async def test_open_fails_with_store_error_when_redis_is_unreachable(make_redis):
    server = make_redis()
    server.kill()
    url = f"redis://:s3cret@127.0.0.1:{server.port}/0"
    with pytest.raises(StoreError) as err:
        await RedisStore(redis_config(url, connect_timeout=1)).open()
    assert f"127.0.0.1:{server.port}" in str(err.value)
    assert "s3cret" not in str(err.value)
    assert redact(url) == f"redis://***@127.0.0.1:{server.port}/0"


# -- a Redis that dies -------------------------------------------------------------------------


async def test_a_killed_redis_fails_calls_and_keeps_what_it_acknowledged(make_redis):
    server = make_redis()
    s = RedisStore(redis_config(server.url))
    await s.open()
    try:
        results = await asyncio.gather(*(s.accept(note(f"n{i}")) for i in range(50)))
        bodies = {r.id: note(f"n{i}").body for i, r in enumerate(results)}
        [claimed] = await s.claim("me", 30, 1, 1000)
        assert await s.backlog() == 50
        server.kill()  # SIGKILL: no shutdown, nothing flushed at exit
        with pytest.raises(StoreError):
            await s.accept(note("while-down"))
        with pytest.raises(StoreError):
            await s.check_writable()
        assert await s.backlog() == 50  # like SQLite's count it never fails: the last seen

        server.start()  # same port, same directory: it reads its AOF back
        # The same store object, no reopening: its connections come back by themselves.
        after = await s.accept(note("after-restart"))
        assert not after.duplicate
        assert (await s.accept(note("n7"))).duplicate  # acknowledged before the crash
        assert await s.backlog() == 51
        assert await s.renew([claimed.id], "me", 30) == 1  # its lease survived too
        rest = {j.id: j.body for j in await s.claim("other", 30, 100, 1000)}
        assert set(rest) == (set(bodies) - {claimed.id}) | {after.id}
        assert all(rest[i] == bodies[i] for i in rest if i != after.id)
    finally:
        await s.close()


async def test_a_redis_that_stops_answering_times_out_into_store_error(make_redis):
    server = make_redis()
    s = RedisStore(redis_config(server.url, socket_timeout=0.3))
    await s.open()
    try:
        await s.accept(note("before"))
        assert server.proc is not None
        server.proc.send_signal(signal.SIGSTOP)  # hung, not gone: connections stay open
        try:
            with pytest.raises(StoreError) as err:
                await s.accept(note("while-hung"))
            assert "Timeout" in str(err.value)
        finally:
            server.proc.send_signal(signal.SIGCONT)
        # Back: the timed-out connections were dropped, new ones work. (The refused accept
        # may still have been applied when Redis woke up: a retry is then a duplicate.)
        assert (await s.accept(note("before"))).duplicate
        await s.check_writable()
    finally:
        await s.close()


async def test_opening_another_process_leaves_the_leases_of_the_running_ones(redis_server):
    cfg = redis_config(redis_server.url)
    [running] = await opened(RedisStore(cfg))
    try:
        await running.accept(note("a"))
        assert len(await running.claim("running", 30, 10, 1000)) == 1
        [starting] = await opened(RedisStore(cfg))
        try:
            assert await starting.claim("starting", 30, 10, 1000) == []
            assert await starting.backlog() == 1
        finally:
            await starting.close()
    finally:
        await running.close()


def test_both_backends_have_every_method_of_the_store_protocol():
    wanted = {
        name: inspect.signature(fn)
        for name, fn in vars(Store).items()
        if inspect.iscoroutinefunction(fn)
    }
    assert {"accept", "claim", "save_page", "requeue_update", "check_writable"} <= set(wanted)
    extra = ("prune", "add_deploy", "deploys", "notification_body")  # used by the service
    for cls in (SQLiteStore, RedisStore):
        for name, sig in wanted.items():
            got = inspect.signature(getattr(cls, name))
            assert list(got.parameters) == list(sig.parameters), (cls.__name__, name)
            assert inspect.iscoroutinefunction(getattr(cls, name)), (cls.__name__, name)
        for name in extra:
            assert list(inspect.signature(getattr(RedisStore, name)).parameters) == list(
                inspect.signature(getattr(SQLiteStore, name)).parameters
            ), name


# -- configuration -----------------------------------------------------------------------------


def test_make_store_picks_the_configured_backend(tmp_path: Path):
    assert isinstance(
        make_store(load_config(environ={}, overrides={"data_dir": str(tmp_path)})), SQLiteStore
    )
    cfg = load_config(
        environ={
            "ENRICHER_STORE__BACKEND": "redis",
            "ENRICHER_STORE__REDIS__URL": "redis://10.0.0.1:6380/2",
            "ENRICHER_STORE__REDIS__PREFIX": "svc-a:",
            "ENRICHER_STORE__REDIS__REQUIRE_DURABLE": "false",
            "ENRICHER_STORE__REDIS__IDEMPOTENCY_TTL": "2d",
        }
    )
    store = make_store(cfg)
    assert isinstance(store, RedisStore)
    assert store.prefix == "svc-a:"
    assert cfg.store.redis.require_durable is False
    assert cfg.store.redis.idempotency_ttl == 2 * 86400
    assert cfg.store.redis.socket_timeout == 2.0


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"ENRICHER_STORE__BACKEND": "postgres"}, "store.backend"),
        ({"ENRICHER_STORE__REDIS__URL": "http://localhost:6379"}, "store.redis.url"),
        ({"ENRICHER_STORE__REDIS__PREFIX": ""}, "store.redis.prefix"),
        ({"ENRICHER_STORE__REDIS__IDEMPOTENCY_TTL": "0s"}, "store.redis.idempotency_ttl"),
        ({"ENRICHER_STORE__REDIS__SOCKET_TIMEOUT": "soon"}, "store.redis.socket_timeout"),
    ],
)
def test_store_settings_errors_name_the_field(env, field):
    with pytest.raises(ConfigError) as err:
        load_config(environ=env)
    assert any(p.startswith(f"{field}:") for p in err.value.problems), err.value.problems


def test_the_redis_password_can_come_from_a_file(tmp_path: Path):
    secret = tmp_path / "redis-password"
    secret.write_text("s3cret\n")
    os.chmod(secret, stat.S_IRUSR)
    cfg = load_config(environ={"ENRICHER_STORE__REDIS__PASSWORD_FILE": str(secret)})
    assert cfg.store.redis.password == "s3cret"


# -- the service on Redis ----------------------------------------------------------------------


async def test_the_service_pages_through_redis_and_answers_503_when_it_is_gone(
    make_redis, make_client, real_fixtures
):
    server = make_redis()  # requested before make_client: stopped after the service
    rec = Recorder()
    client = await make_client(
        {"store": {"backend": "redis", "redis": {"url": server.url, "prefix": "svc:"}}},
        notifiers=[rec],
    )
    assert isinstance(service_of(client).store, RedisStore)
    resp = await post(client, webhook_body())
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["status"] == "accepted"
    assert (await post(client, webhook_body())).status == 200  # a retry: duplicate
    [page] = await wait_pages(client, 1)
    assert [d["state"] for d in page["deliveries"]] == ["sent"]
    assert len(rec.pages) == 1

    server.kill()
    resp = await post(client, webhook_body(groupKey="another-group"))
    assert resp.status == 503
    assert (await resp.json())["error"] == "store_unavailable"
    assert (await client.get("/readyz")).status == 503

    server.start()  # back, with its AOF: the service carries on with the same store
    resp = await post(client, webhook_body(groupKey="another-group"))
    assert resp.status == 200, await resp.text()
    pages = await wait_pages(client, 2)
    assert {p["group_key"] for p in pages} == {page["group_key"], "another-group"}

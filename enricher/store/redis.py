"""Redis store: the same `Store` as SQLite, shared by several enricher processes.

Why Redis, and why this layout: SQLite is shared only by the processes of one machine (one
`--processes` service on a local disk). To scale the workers out across hosts (and to
survive losing one) every process must see one queue over the network, and a job a dead
process held must be taken up by another. Redis gives that with server-side scripts
that run atomically, so no process needs a lock and a burst costs one round trip per
operation, not one per key.

Data layout (every key starts with `store.redis.prefix`, `enricher:` by default, written
`P` here; ids are decimal strings):

- `P seq:id` (string, `INCR`): the next notification id; a job and its page share it.
  `P seq:deploy` likewise for deploy events.
- `P idem:<idem_key>` (string -> id, `PX` = `store.redis.idempotency_ttl`): the idempotency
  key, claimed inside the accept script, so two processes accepting the same notification at
  once get one job and one duplicate. SQLite keeps its key until the job is pruned; here it
  also expires after the TTL (a re-delivery after that is a new notification).
- `P job:<id>` (hash): the notification (idem_key, group_key, status, severity,
  alert_count, body + enc, duplicates, last_duplicate_at) and its job (state, priority,
  received_at, deadline, attempts, owner, lease_expires, updated_at, error, bundle, and `qm`,
  its member in the ready queue). Bodies over 4 KiB are zlib-compressed, as in SQLite.
- `P ready` (zset): open jobs no one holds. Score = priority; equal scores order by member,
  and the member is `<received_at as 16 sortable hex digits>:<id, 15 digits>`, so one
  `ZRANGEBYSCORE -inf max_priority LIMIT 0 n` is "most urgent first, then oldest, then
  lowest id", exactly SQLite's `ORDER BY priority, received_at` (a float score mixing
  priority and time would lose the time's precision).
- `P leased` (zset): open jobs someone holds, scored by lease expiry (Redis server time, so
  the workers of every host agree on one clock). `P owner:<owner>` (set): the jobs an owner
  holds, for `release`. Every open job is in exactly one of `ready` and `leased`; so
  `backlog` is `ZCARD ready + ZCARD leased`, for all processes together.
- `P done` (zset): final jobs scored by received_at, what `prune` walks.
- `P page:<id>` (hash: group_key, status, paged_at, degraded, doc + enc, resolved_at,
  resolved_by), `P pages` (zset of page ids by id: `list_pages`), `P firing:<group_key>`
  (zset of that group's pages with status firing, by id: `latest_firing_page`).
- `P dlvs:<page_id>` (set of notifier names) and `P dlv:<page_id>:<notifier>` (hash: state,
  attempts, last_error, delivered_at, next_try, receipt, kind): the outbox.
- `P deploy:<id>` (hash), `P deploys:<service>` (zset of ids by time: `deploys`), `P deploys`
  (zset of all ids by time: `prune`).
- `P schema` (layout version), `P heartbeat` (what `check_writable` writes).

Claims: one Lua script first reaps, moving every job whose lease expired (its worker died or
stalled) from `leased` back to `ready`, then moves the first `limit` ready jobs up to
`max_priority` to `leased` under the new owner and returns them. The reaper lives in `claim`
rather than in a background task so that no extra process, timer or leader is needed: any
worker asking for work takes up a dead one's. A lapsed lease keeps its owner until someone
else claims the job, so a late `renew` by that owner still succeeds, as in SQLite.

Every write that touches more than one key (accept, claim, renew, release, set_state,
save_page, finish, record_delivery, requeue_update, prune, add_deploy) is one Lua script:
all of it or none, one round trip. Reads that gather several keys are read-only scripts for
the same reason. Scripts build key names from the prefix, so the store needs one Redis
primary (standalone, or Sentinel-managed), not Redis Cluster. Floats travel and are stored
as Python's shortest round-trip text; scripts never turn a float into text with Lua's
`tostring` (14 digits).

"Acknowledged means durable": an accept is answered 2xx only after Redis replied, and Redis
replies to a write after its `appendfsync` policy has run:

- `appendonly yes` + `appendfsync always`: the AOF is fsynced before any reply (Redis groups
  the writes of one event-loop pass into one fsync, the same group commit SQLite does here),
  so nothing acknowledged is lost, not even on a power loss.
- `appendfsync everysec`: up to about one second of acknowledged writes is lost when the
  host crashes or loses power; nothing when only the Redis process dies (the data is in the
  OS page cache).
- `appendonly no` (snapshots only) or `appendfsync no`: minutes of acknowledged work.
- `maxmemory` with an eviction policy other than `noeviction` would drop jobs and
  idempotency keys when memory runs out, silently.

`open()` reads these with `CONFIG GET` and refuses to start (StoreError naming the setting)
unless they are `appendonly yes`, `appendfsync always` and no eviction, or
`store.redis.require_durable: false` is configured, which starts with a loud warning. A
managed Redis that disables CONFIG cannot be checked: that is refused the same way, and the
message says so. Replication is asynchronous: a failover to a replica can lose the last
acknowledged writes; this store does not `WAIT` for replicas.

Failures: every Redis error or timeout inside a method raises StoreError (the intake answers
503, never 2xx without a durable write); `backlog` alone reports its last count instead, as
SQLite's in-memory count never fails either. The client reconnects on its own: a failed call
drops its connection, and `retry` re-sends a call that failed on a dead connection or timed
out, twice, after 100 ms then 200 ms (so a hung Redis fails a call after about 3 x
`socket_timeout`, 6 s by default, inside Alertmanager's 10 s; a re-sent accept that had in
fact committed comes back as a duplicate of itself, which is still the truth; a re-sent
claim whose first try had committed leaves those jobs to their lease). `health_check_interval`
pings a pooled connection idle for a while before it is used. So after a Redis restart the
same store object works again with no reopening. Unlike SQLite, `open()` does not release
leases left by a dead predecessor: other live processes may hold them; they are taken up
when they expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError, ResponseError

from enricher.config import RedisStoreConfig
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
from enricher.store.sqlite import PRUNE_BATCH, CommitObserver, _decode, _encode

__all__ = ["PRUNE_BATCH", "RedisStore"]

log = logging.getLogger("enricher.store")

SCHEMA_VERSION = "1"
# Pooled connections idle longer than this are pinged before use (a restarted Redis has
# closed them), so the first call after a restart does not fail on a dead socket.
HEALTH_CHECK_S = 5.0
# Jobs the reaper inside one claim moves back from expired leases: bounds the script's run.
REAP_BATCH = 1000

# -- Lua ---------------------------------------------------------------------------------------
# Every script gets the key prefix as ARGV[1]. `_PRELUDE` is put before each.

_PRELUDE = """
local P = ARGV[1]
local READY, LEASED, DONE = P .. 'ready', P .. 'leased', P .. 'done'
local FINAL = {done = true, failed = true}
local function jkey(id) return P .. 'job:' .. id end
local function server_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
-- Take an open or final job out of every queue and its owner's set; clears the lease.
local function unqueue(id, key)
  local f = redis.call('HMGET', key, 'qm', 'owner')
  if f[1] then redis.call('ZREM', READY, f[1]) end
  redis.call('ZREM', LEASED, id)
  redis.call('ZREM', DONE, id)
  if f[2] then redis.call('SREM', P .. 'owner:' .. f[2], id) end
  redis.call('HDEL', key, 'owner', 'lease_expires')
end
local function to_done(id, key)
  unqueue(id, key)
  redis.call('ZADD', DONE, redis.call('HGET', key, 'received_at'), id)
end
local function to_ready(id, key)
  unqueue(id, key)
  local f = redis.call('HMGET', key, 'qm', 'priority')
  redis.call('ZADD', READY, f[2], f[1])
end
"""

# ARGV: P, idem_key, ttl_ms, received_at, group_key, status, severity, alert_count, body,
# enc, priority, deadline, ready-member prefix. Returns {id, duplicates}.
_ACCEPT = """
local idem = P .. 'idem:' .. ARGV[2]
local known = redis.call('GET', idem)
if known then
  local key = jkey(known)
  if redis.call('EXISTS', key) == 1 then
    local dups = redis.call('HINCRBY', key, 'duplicates', 1)
    redis.call('HSET', key, 'last_duplicate_at', ARGV[4])
    return {known, dups}
  end
end
local n = redis.call('INCR', P .. 'seq:id')
local id = string.format('%d', n)
local key = jkey(id)
local qm = ARGV[13] .. string.format('%015d', n)
redis.call('SET', idem, id, 'PX', ARGV[3])
redis.call('HSET', key, 'idem_key', ARGV[2], 'received_at', ARGV[4], 'group_key', ARGV[5],
  'status', ARGV[6], 'severity', ARGV[7], 'alert_count', ARGV[8], 'body', ARGV[9],
  'enc', ARGV[10], 'duplicates', 0, 'state', 'received', 'priority', ARGV[11],
  'deadline', ARGV[12], 'attempts', 0, 'updated_at', ARGV[4], 'qm', qm)
redis.call('ZADD', READY, ARGV[11], qm)
return {id, 0}
"""

# ARGV: P, owner, lease_s, limit, max_priority, reap batch. Returns the claimed jobs as
# {id, state before, priority, severity, status, group_key, received_at, deadline,
#  attempts before, body, bundle, enc}.
_CLAIM = """
local owner, limit = ARGV[2], tonumber(ARGV[4])
local now = server_now()
local expired = redis.call('ZRANGEBYSCORE', LEASED, '-inf', '(' .. string.format('%.17g', now),
  'LIMIT', 0, tonumber(ARGV[6]))
for _, id in ipairs(expired) do
  local f = redis.call('HMGET', jkey(id), 'qm', 'priority')
  redis.call('ZREM', LEASED, id)
  if f[1] then redis.call('ZADD', READY, f[2], f[1]) end
end
local members = redis.call('ZRANGEBYSCORE', READY, '-inf', ARGV[5], 'LIMIT', 0, limit)
local expires = now + tonumber(ARGV[3])
local oset = P .. 'owner:' .. owner
local out = {}
for _, qm in ipairs(members) do
  redis.call('ZREM', READY, qm)
  local id = string.match(qm, ':0*(%d+)$')
  local key = jkey(id)
  local f = redis.call('HMGET', key, 'state', 'priority', 'severity', 'status', 'group_key',
    'received_at', 'deadline', 'attempts', 'body', 'bundle', 'enc', 'owner')
  if f[1] and not FINAL[f[1]] then
    if f[12] and f[12] ~= owner then redis.call('SREM', P .. 'owner:' .. f[12], id) end
    local state = f[1]
    if state == 'received' then state = 'gathering' end
    redis.call('HSET', key, 'owner', owner, 'lease_expires', expires, 'state', state,
      'updated_at', now)
    redis.call('HINCRBY', key, 'attempts', 1)
    redis.call('ZADD', LEASED, expires, id)
    redis.call('SADD', oset, id)
    out[#out + 1] = {id, f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11]}
  end
end
return out
"""

# ARGV: P, owner, lease_s, job ids... Returns how many of them the owner holds.
_RENEW = """
local owner = ARGV[2]
local expires = server_now() + tonumber(ARGV[3])
local n = 0
for i = 4, #ARGV do
  local id = ARGV[i]
  local key = jkey(id)
  local f = redis.call('HMGET', key, 'owner', 'qm')
  if f[1] == owner then
    redis.call('HSET', key, 'lease_expires', expires)
    if f[2] then redis.call('ZREM', READY, f[2]) end
    redis.call('ZADD', LEASED, expires, id)
    n = n + 1
  end
end
return n
"""

# ARGV: P, owner. Returns how many leases were given back.
_RELEASE = """
local owner = ARGV[2]
local oset = P .. 'owner:' .. owner
local n = 0
for _, id in ipairs(redis.call('SMEMBERS', oset)) do
  local key = jkey(id)
  local f = redis.call('HMGET', key, 'owner', 'qm', 'priority')
  if f[1] == owner then
    redis.call('HDEL', key, 'owner', 'lease_expires')
    if redis.call('ZREM', LEASED, id) == 1 and f[2] then
      redis.call('ZADD', READY, f[3], f[2])
    end
    n = n + 1
  end
end
redis.call('DEL', oset)
return n
"""

# ARGV: P, id, state, now, has bundle, bundle, has error, error. Returns 1 if changed.
_SET_STATE = """
local id = ARGV[2]
local key = jkey(id)
local state = redis.call('HGET', key, 'state')
if not state or FINAL[state] then return 0 end
redis.call('HSET', key, 'state', ARGV[3], 'updated_at', ARGV[4])
if ARGV[5] == '1' then redis.call('HSET', key, 'bundle', ARGV[6]) end
if ARGV[7] == '1' then redis.call('HSET', key, 'error', ARGV[8]) end
if FINAL[ARGV[3]] then to_done(id, key) end
return 1
"""

# ARGV: P, id, group_key, status, paged_at, degraded, doc, enc, resolves ('' for none),
# notifiers...
_SAVE_PAGE = """
local id = ARGV[2]
local key = jkey(id)
local state = redis.call('HGET', key, 'state')
if state then
  redis.call('HSET', key, 'state', 'delivering', 'updated_at', ARGV[5])
  if FINAL[state] then to_ready(id, key) end
end
if ARGV[9] ~= '' then
  local rkey = P .. 'page:' .. ARGV[9]
  local group = redis.call('HGET', rkey, 'group_key')
  if group then
    redis.call('HSET', rkey, 'status', 'resolved', 'resolved_at', ARGV[5], 'resolved_by', id)
    redis.call('ZREM', P .. 'firing:' .. group, ARGV[9])
  end
end
local pkey = P .. 'page:' .. id
if redis.call('EXISTS', pkey) == 0 then
  redis.call('HSET', pkey, 'group_key', ARGV[3], 'status', ARGV[4], 'paged_at', ARGV[5],
    'degraded', ARGV[6], 'doc', ARGV[7], 'enc', ARGV[8])
  redis.call('ZADD', P .. 'pages', id, id)
  if ARGV[4] == 'firing' then redis.call('ZADD', P .. 'firing:' .. ARGV[3], id, id) end
end
for i = 10, #ARGV do
  local dkey = P .. 'dlv:' .. id .. ':' .. ARGV[i]
  if redis.call('EXISTS', dkey) == 0 then
    redis.call('HSET', dkey, 'state', 'pending', 'attempts', 0, 'kind', 'page')
    redis.call('SADD', P .. 'dlvs:' .. id, ARGV[i])
  end
end
return 1
"""

# ARGV: P, id, doc, enc. Returns 1 when the page exists.
_UPDATE_DOC = """
local pkey = P .. 'page:' .. ARGV[2]
if redis.call('EXISTS', pkey) == 0 then return 0 end
redis.call('HSET', pkey, 'doc', ARGV[3], 'enc', ARGV[4])
return 1
"""

# ARGV: P, id, state, at, has error, error, sent notifiers... Returns 1 if the job changed.
_FINISH = """
local id = ARGV[2]
for i = 7, #ARGV do
  local dkey = P .. 'dlv:' .. id .. ':' .. ARGV[i]
  if redis.call('EXISTS', dkey) == 1 then
    redis.call('HSET', dkey, 'state', 'sent', 'delivered_at', ARGV[4])
    redis.call('HINCRBY', dkey, 'attempts', 1)
    redis.call('HDEL', dkey, 'last_error', 'next_try')
  end
end
local key = jkey(id)
local state = redis.call('HGET', key, 'state')
if not state or FINAL[state] then return 0 end
redis.call('HSET', key, 'state', ARGV[3], 'updated_at', ARGV[4])
if ARGV[5] == '1' then redis.call('HSET', key, 'error', ARGV[6])
else redis.call('HDEL', key, 'error') end
if FINAL[ARGV[3]] then to_done(id, key) else to_ready(id, key) end
return 1
"""

# ARGV: P, page id, notifier, state, has error, error, at, has next_try, next_try.
_RECORD_DELIVERY = """
local dkey = P .. 'dlv:' .. ARGV[2] .. ':' .. ARGV[3]
if redis.call('EXISTS', dkey) == 0 then return 0 end
redis.call('HSET', dkey, 'state', ARGV[4])
redis.call('HINCRBY', dkey, 'attempts', 1)
if ARGV[5] == '1' then redis.call('HSET', dkey, 'last_error', ARGV[6])
else redis.call('HDEL', dkey, 'last_error') end
if ARGV[8] == '1' then redis.call('HSET', dkey, 'next_try', ARGV[9])
else redis.call('HDEL', dkey, 'next_try') end
if ARGV[4] == 'sent' then redis.call('HSET', dkey, 'delivered_at', ARGV[7]) end
return 1
"""

# ARGV: P, page id, notifier, receipt JSON.
_SAVE_RECEIPT = """
local dkey = P .. 'dlv:' .. ARGV[2] .. ':' .. ARGV[3]
if redis.call('EXISTS', dkey) == 0 then return 0 end
redis.call('HSET', dkey, 'receipt', ARGV[4])
return 1
"""

# ARGV: P, id, owner, lease_s, notifiers... Returns 1 when the final job was requeued.
_REQUEUE_UPDATE = """
local id, owner = ARGV[2], ARGV[3]
local key = jkey(id)
local state = redis.call('HGET', key, 'state')
if not state or not FINAL[state] then return 0 end
local now = server_now()
local expires = now + tonumber(ARGV[4])
unqueue(id, key)
redis.call('HSET', key, 'state', 'delivering', 'updated_at', now, 'owner', owner,
  'lease_expires', expires)
redis.call('HDEL', key, 'error')
redis.call('ZADD', LEASED, expires, id)
redis.call('SADD', P .. 'owner:' .. owner, id)
for i = 5, #ARGV do
  local dkey = P .. 'dlv:' .. id .. ':' .. ARGV[i]
  if redis.call('EXISTS', dkey) == 1 then
    redis.call('HSET', dkey, 'state', 'pending', 'kind', 'update', 'attempts', 0)
    redis.call('HDEL', dkey, 'next_try')
  end
end
return 1
"""

# ARGV: P, before, limit. Deletes up to `limit` final jobs received before `before` (with
# their notification, idempotency key, page and deliveries) and as many deploy events older
# than it. Returns how many jobs.
_PRUNE = """
local before = '(' .. ARGV[2]
local ids = redis.call('ZRANGEBYSCORE', DONE, '-inf', before, 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  local key = jkey(id)
  local idem = redis.call('HGET', key, 'idem_key')
  if idem then
    local ikey = P .. 'idem:' .. idem
    if redis.call('GET', ikey) == id then redis.call('DEL', ikey) end
  end
  local dset = P .. 'dlvs:' .. id
  for _, n in ipairs(redis.call('SMEMBERS', dset)) do
    redis.call('DEL', P .. 'dlv:' .. id .. ':' .. n)
  end
  redis.call('DEL', dset)
  local pkey = P .. 'page:' .. id
  local group = redis.call('HGET', pkey, 'group_key')
  if group then redis.call('ZREM', P .. 'firing:' .. group, id) end
  redis.call('DEL', pkey)
  redis.call('ZREM', P .. 'pages', id)
  redis.call('DEL', key)
  redis.call('ZREM', DONE, id)
end
local all = P .. 'deploys'
local old = redis.call('ZRANGEBYSCORE', all, '-inf', before, 'LIMIT', 0, tonumber(ARGV[3]))
for _, did in ipairs(old) do
  local dkey = P .. 'deploy:' .. did
  local service = redis.call('HGET', dkey, 'service')
  if service then redis.call('ZREM', P .. 'deploys:' .. service, did) end
  redis.call('DEL', dkey)
  redis.call('ZREM', all, did)
end
return #ids
"""

# ARGV: P, service, at, doc JSON, then field/value pairs (environment, version, commit).
_ADD_DEPLOY = """
local id = string.format('%d', redis.call('INCR', P .. 'seq:deploy'))
local dkey = P .. 'deploy:' .. id
redis.call('HSET', dkey, 'service', ARGV[2], 'at', ARGV[3], 'doc', ARGV[4])
for i = 5, #ARGV, 2 do redis.call('HSET', dkey, ARGV[i], ARGV[i + 1]) end
redis.call('ZADD', P .. 'deploys:' .. ARGV[2], ARGV[3], id)
redis.call('ZADD', P .. 'deploys', ARGV[3], id)
return id
"""

# -- read-only scripts ---------------------------------------------------------------------

# ARGV: P, mode, ...: 'get' id | 'list' max (an exclusive ZSET bound) limit |
# 'firing' group_key before_id. Returns pages as
# {id, group_key, status, paged_at, degraded, doc, enc, resolved_at, resolved_by,
#  {{notifier, state, attempts, last_error, delivered_at, next_try, receipt, kind}, ...}}.
_PAGES = """
local function page(id)
  local f = redis.call('HMGET', P .. 'page:' .. id, 'group_key', 'status', 'paged_at',
    'degraded', 'doc', 'enc', 'resolved_at', 'resolved_by')
  if not f[1] then return nil end
  local ds = {}
  for _, n in ipairs(redis.call('SMEMBERS', P .. 'dlvs:' .. id)) do
    local d = redis.call('HMGET', P .. 'dlv:' .. id .. ':' .. n, 'state', 'attempts',
      'last_error', 'delivered_at', 'next_try', 'receipt', 'kind')
    if d[1] then ds[#ds + 1] = {n, d[1], d[2], d[3], d[4], d[5], d[6], d[7]} end
  end
  return {id, f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], ds}
end
local mode = ARGV[2]
local out = {}
if mode == 'get' then
  local p = page(ARGV[3])
  if p then out[1] = p end
elseif mode == 'list' then
  local ids = redis.call('ZREVRANGEBYSCORE', P .. 'pages', ARGV[3], '-inf', 'LIMIT', 0,
    tonumber(ARGV[4]))
  for _, id in ipairs(ids) do
    local p = page(id)
    if p then out[#out + 1] = p end
  end
elseif mode == 'firing' then
  local ids = redis.call('ZREVRANGEBYSCORE', P .. 'firing:' .. ARGV[3], '(' .. ARGV[4],
    '-inf', 'LIMIT', 0, 10)
  for _, id in ipairs(ids) do
    local p = page(id)
    if p and p[3] == 'firing' then
      out[1] = p
      break
    end
  end
end
return out
"""

# ARGV: P, page id. Notifier names of its pending deliveries.
_PENDING = """
local id = ARGV[2]
local out = {}
for _, n in ipairs(redis.call('SMEMBERS', P .. 'dlvs:' .. id)) do
  if redis.call('HGET', P .. 'dlv:' .. id .. ':' .. n, 'state') == 'pending' then
    out[#out + 1] = n
  end
end
return out
"""

# ARGV: P, service, since, until. Deploy documents in time order.
_DEPLOYS = """
local out = {}
local ids = redis.call('ZRANGEBYSCORE', P .. 'deploys:' .. ARGV[2], ARGV[3], ARGV[4])
for _, id in ipairs(ids) do
  local doc = redis.call('HGET', P .. 'deploy:' .. id, 'doc')
  if doc then out[#out + 1] = doc end
end
return out
"""

_BACKLOG = "return redis.call('ZCARD', READY) + redis.call('ZCARD', LEASED)"

_BODY = "return redis.call('HMGET', jkey(ARGV[2]), 'body', 'enc')"


# -- helpers -----------------------------------------------------------------------------------


def _f(x: float) -> str:
    """A float as text that parses back to the same float (Lua and Redis read it exactly)."""
    return repr(float(x))


def _sortable(x: float) -> str:
    """16 hex digits whose string order is the float order (IEEE 754 bits, sign-folded)."""
    bits: int = struct.unpack(">Q", struct.pack(">d", float(x)))[0]
    bits = bits ^ 0xFFFFFFFFFFFFFFFF if bits >> 63 else bits | 1 << 63
    return f"{bits:016x}"


def _s(b: bytes | None) -> str | None:
    return None if b is None else b.decode()


def _opt_float(b: bytes | None) -> float | None:
    return None if b is None else float(b)


def _flag(value: str | None) -> tuple[str, str]:
    return ("0", "") if value is None else ("1", value)


def redact(url: str) -> str:
    """The URL without its credentials, for messages and logs."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


def _config_value(reply: Any, name: str) -> str | None:
    """One value out of CONFIG GET's reply (a dict in redis-py, bytes or str inside)."""
    if not isinstance(reply, dict):
        return None
    for k, v in reply.items():
        key = k.decode() if isinstance(k, bytes) else str(k)
        if key.lower() == name:
            return v.decode() if isinstance(v, bytes) else str(v)
    return None


def durability_problems(settings: dict[str, str | None]) -> list[str]:
    """What in these CONFIG values lets an acknowledged write be lost (empty: nothing)."""
    out = []
    appendonly = (settings.get("appendonly") or "").lower()
    fsync = (settings.get("appendfsync") or "").lower()
    if appendonly != "yes":
        out.append(
            f"appendonly is {appendonly or 'unknown'}: writes reach the disk only with the "
            "next snapshot, so a restart loses everything acknowledged since (needs appendonly "
            "yes)"
        )
    elif fsync != "always":
        why = {
            "everysec": "a host crash or power loss loses up to about a second of "
            "acknowledged writes (a crash of the Redis process alone loses nothing)",
            "no": "the operating system decides when the AOF reaches the disk, so a host "
            "crash loses up to about 30 seconds of acknowledged writes",
        }.get(fsync, "acknowledged writes may not be on disk")
        out.append(f"appendfsync is {fsync or 'unknown'}: {why} (needs appendfsync always)")
    maxmemory = settings.get("maxmemory") or "0"
    policy = (settings.get("maxmemory-policy") or "noeviction").lower()
    if maxmemory not in ("0", "") and policy != "noeviction":
        out.append(
            f"maxmemory-policy is {policy} with maxmemory {maxmemory}: a full Redis would "
            "evict stored jobs and idempotency keys (needs maxmemory-policy noeviction; a full "
            "Redis then refuses writes, which the intake answers with 503)"
        )
    return out


_Script = Callable[..., Awaitable[Any]]


# Pipelines in flight at once, and calls in one: enough to keep Redis busy, few enough that
# a caller is never queued behind many round trips.
MAX_PIPELINES = 4
MAX_BATCH = 256


def _fail(batch: list[tuple[str, tuple[Any, ...], asyncio.Future[Any]]], exc: Exception) -> None:
    for _, _, fut in batch:
        if not fut.done():
            fut.set_exception(exc)


class RedisStore:
    """The shared store. See the module docstring for the layout and the guarantees."""

    def __init__(self, config: RedisStoreConfig, on_commit: CommitObserver | None = None) -> None:
        self.config = config
        self.prefix = config.prefix
        self.url = redact(config.url)
        self.on_commit = on_commit
        self._client: Redis | None = None
        self._pool: BlockingConnectionPool | None = None
        self._scripts: dict[str, _Script] = {}
        self._backlog = 0
        # Calls waiting for the next pipeline, and the pipelines in flight (see `_run`).
        self._queue: list[tuple[str, tuple[Any, ...], asyncio.Future[Any]]] = []
        self._flushers = 0
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    def _connect(self) -> Redis:
        c = self.config
        extra: dict[str, Any] = {}
        if c.password is not None:
            extra["password"] = c.password
        self._pool = BlockingConnectionPool.from_url(
            c.url,
            max_connections=c.max_connections,
            timeout=c.socket_timeout,  # waiting for a free pooled connection
            socket_timeout=c.socket_timeout,
            socket_connect_timeout=c.connect_timeout,
            retry_on_timeout=True,
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 2),
            health_check_interval=HEALTH_CHECK_S,
            client_name="enricher",
            **extra,
        )
        client = Redis(connection_pool=self._pool)
        for name, body in (
            ("accept", _ACCEPT),
            ("claim", _CLAIM),
            ("renew", _RENEW),
            ("release", _RELEASE),
            ("set_state", _SET_STATE),
            ("save_page", _SAVE_PAGE),
            ("update_doc", _UPDATE_DOC),
            ("finish", _FINISH),
            ("record_delivery", _RECORD_DELIVERY),
            ("save_receipt", _SAVE_RECEIPT),
            ("requeue_update", _REQUEUE_UPDATE),
            ("prune", _PRUNE),
            ("add_deploy", _ADD_DEPLOY),
            ("pages", _PAGES),
            ("pending", _PENDING),
            ("deploys", _DEPLOYS),
            ("backlog", _BACKLOG),
            ("body", _BODY),
        ):
            self._scripts[name] = client.register_script(_PRELUDE + body)
        return client

    async def open(self) -> None:
        client = self._connect()
        try:
            await client.ping()
            await self._check_durability(client)
            await client.set(self.prefix + "schema", SCHEMA_VERSION, nx=True)
            version = await client.get(self.prefix + "schema")
        except StoreError:
            await self._disconnect(client)
            raise
        except (RedisError, OSError) as exc:
            await self._disconnect(client)
            raise StoreError(f"cannot use Redis at {self.url}: {exc}") from None
        if version is None or version.decode() != SCHEMA_VERSION:
            await self._disconnect(client)
            raise StoreError(
                f"Redis at {self.url} (prefix {self.prefix!r}) holds store layout "
                f"{version.decode() if version else 'none'}, this version reads layout "
                f"{SCHEMA_VERSION}"
            )
        self._client = client

    async def _check_durability(self, client: Redis) -> None:
        settings: dict[str, str | None] = {}
        try:
            for name in ("appendonly", "appendfsync", "maxmemory", "maxmemory-policy"):
                settings[name] = _config_value(await client.config_get(name), name)
        except ResponseError as exc:  # renamed or disabled (managed Redis), or not permitted
            problem = (
                f"cannot check that Redis at {self.url} makes acknowledged writes durable: "
                f"CONFIG GET is refused ({exc}), as a managed Redis often does"
            )
            if self.config.require_durable:
                raise StoreError(
                    f"{problem}. Make sure it runs with appendonly yes and appendfsync always, "
                    "then set store.redis.require_durable: false to start without the check"
                ) from None
            log.warning(
                "REDIS DURABILITY NOT VERIFIED: %s; store.redis.require_durable is false, so "
                "starting anyway: acknowledged notifications are lost if the server does not "
                "run with appendonly yes and appendfsync always",
                problem,
            )
            return
        problems = durability_problems(settings)
        if not problems:
            return
        what = "; ".join(problems)
        if self.config.require_durable:
            raise StoreError(
                f"Redis at {self.url} can lose acknowledged writes: {what}. Change the "
                "server's configuration, or set store.redis.require_durable: false to run "
                "anyway"
            )
        log.warning(
            "REDIS STORE IS NOT DURABLE: %s. store.redis.require_durable is false, so "
            "starting anyway: a 2xx to Alertmanager no longer guarantees the notification "
            "survives a crash",
            what,
        )

    async def _disconnect(self, client: Redis) -> None:
        with contextlib.suppress(RedisError, OSError):
            await client.aclose()
        if self._pool is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._pool.disconnect()
            self._pool = None

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await self._disconnect(client)

    async def _run(self, name: str, *args: Any, write: bool = True) -> Any:
        """Run one script. Calls made while others are on the wire go out together in one
        pipeline (the group commit of this store): under a storm, hundreds of accepts, claims
        and state changes cost one round trip and one AOF fsync instead of one each. Each
        script still runs atomically on its own; a failed one fails only its own call."""
        if self._client is None:
            raise StoreError("store is closed")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((name, args, fut))
        if self._flushers < MAX_PIPELINES:
            self._flushers += 1
            task = asyncio.get_running_loop().create_task(self._flush())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        t0 = time.perf_counter()
        result = await fut
        if write and self.on_commit is not None:
            self.on_commit(1, time.perf_counter() - t0)
        return result

    async def _flush(self) -> None:
        try:
            while self._queue:
                client = self._client
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                if client is None:
                    _fail(batch, StoreError("store is closed"))
                    continue
                try:
                    if len(batch) == 1:
                        name, args, fut = batch[0]
                        got = await self._scripts[name](
                            keys=[], args=[self.prefix, *args], client=client
                        )
                        results: list[Any] = [got]
                    else:
                        pipe = client.pipeline(transaction=False)
                        for name, args, _ in batch:  # queues the EVALSHA (loads it if needed)
                            await self._scripts[name](
                                keys=[], args=[self.prefix, *args], client=pipe
                            )
                        results = await pipe.execute(raise_on_error=False)
                except (RedisError, OSError) as exc:
                    what = batch[0][0] if len(batch) == 1 else f"{len(batch)} calls"
                    _fail(batch, StoreError(f"redis {what} failed: {type(exc).__name__}: {exc}"))
                    continue
                except BaseException as exc:  # never leave a caller waiting forever
                    _fail(batch, StoreError(f"redis call failed: {type(exc).__name__}: {exc}"))
                    raise
                for (name, _, fut), got in zip(batch, results, strict=True):
                    if fut.done():
                        continue
                    if isinstance(got, Exception):
                        fut.set_exception(
                            StoreError(f"redis {name} failed: {type(got).__name__}: {got}")
                        )
                    else:
                        fut.set_result(got)
        finally:
            self._flushers -= 1

    # -- intake -------------------------------------------------------------------------------

    async def accept(self, n: NewNotification) -> AcceptResult:
        body, enc = _encode(n.body)
        nid, dups = await self._run(
            "accept",
            n.idem_key,
            max(1, int(self.config.idempotency_ttl * 1000)),
            _f(n.received_at),
            n.group_key,
            n.status,
            n.severity,
            n.alert_count,
            body,
            enc,
            int(n.priority),
            _f(n.deadline),
            _sortable(n.received_at) + ":",
        )
        dups = int(dups)
        return AcceptResult.model_construct(id=int(nid), duplicate=dups > 0, duplicates=dups)

    async def backlog(self) -> int:
        """Open jobs of every process sharing this Redis. Like SQLite's (an in-memory count)
        it does not fail: callers use it for the intake's limit, metrics and shutdown logs,
        some outside any error handling. With Redis unreachable it is the last count seen;
        the write that follows fails on its own."""
        try:
            self._backlog = int(await self._run("backlog", write=False))
        except StoreError as exc:
            log.debug("backlog unknown, reporting the last count", extra={"error": str(exc)})
        return self._backlog

    # -- jobs ---------------------------------------------------------------------------------

    async def claim(self, owner: str, lease_s: float, limit: int, max_priority: int) -> list[Job]:
        if limit <= 0:
            return []
        rows = await self._run(
            "claim", owner, _f(lease_s), int(limit), int(max_priority), REAP_BATCH
        )
        jobs = []
        for r in rows:
            state = r[1].decode()
            jobs.append(
                Job.model_construct(
                    id=int(r[0]),
                    state=JobState.GATHERING if state == "received" else JobState(state),
                    priority=int(r[2]),
                    severity=r[3].decode(),
                    status=r[4].decode(),
                    group_key=r[5].decode(),
                    received_at=float(r[6]),
                    deadline=float(r[7]),
                    attempts=int(r[8]) + 1,
                    body=_decode(r[9], r[11].decode()),
                    bundle=_s(r[10]),
                )
            )
        return jobs

    async def renew(self, job_ids: list[int], owner: str, lease_s: float) -> int:
        ids = list(dict.fromkeys(int(i) for i in job_ids))
        if not ids:
            return 0
        return int(await self._run("renew", owner, _f(lease_s), *ids))

    async def release(self, owner: str) -> int:
        return int(await self._run("release", owner))

    async def set_state(
        self,
        job_id: int,
        owner: str,
        state: JobState,
        *,
        bundle: str | None = None,
        error: str | None = None,
    ) -> None:
        # Like SQLite: any caller may move an unfinished job; a final one stays as it is.
        await self._run(
            "set_state",
            int(job_id),
            JobState(state).value,
            _f(time.time()),
            *_flag(bundle),
            *_flag(error),
        )

    # -- pages and deliveries -----------------------------------------------------------------

    async def save_page(
        self, page: PageRecord, notifiers: list[str], resolves: int | None = None
    ) -> None:
        doc = page.doc if isinstance(page.doc, str) else json.dumps(page.doc, default=str)
        data, enc = _encode(doc.encode())
        await self._run(
            "save_page",
            int(page.id),
            page.group_key,
            page.status,
            _f(page.paged_at),
            "1" if page.degraded else "0",
            data,
            enc,
            "" if resolves is None else int(resolves),
            *notifiers,
        )

    async def update_page_doc(self, page_id: int, doc: str) -> bool:
        data, enc = _encode(doc.encode())
        return bool(await self._run("update_doc", int(page_id), data, enc))

    @staticmethod
    def _page(r: list[Any]) -> PageRecord:
        pid = int(r[0])
        deliveries = [
            DeliveryRecord(
                page_id=pid,
                notifier=d[0].decode(),
                state=d[1].decode(),
                attempts=int(d[2] or 0),
                last_error=_s(d[3]),
                delivered_at=_opt_float(d[4]),
                next_try=_opt_float(d[5]),
                receipt=json.loads(d[6]) if d[6] else None,
                kind=d[7].decode() if d[7] else "page",
            )
            # SQLite orders them by notifier (byte order), and so do we.
            for d in sorted(r[9], key=lambda d: d[0])
        ]
        return PageRecord(
            id=pid,
            group_key=r[1].decode(),
            status=r[2].decode(),
            paged_at=float(r[3]),
            degraded=r[4] == b"1",
            doc=json.loads(_decode(r[5], r[6].decode())),
            resolved_at=_opt_float(r[7]),
            resolved_by=None if r[8] is None else int(r[8]),
            deliveries=deliveries,
        )

    async def get_page(self, page_id: int) -> PageRecord | None:
        rows = await self._run("pages", "get", int(page_id), write=False)
        return self._page(rows[0]) if rows else None

    async def list_pages(self, limit: int, before: int | None = None) -> list[PageRecord]:
        if limit <= 0:
            return []
        bound = "+inf" if before is None else f"({int(before)}"
        rows = await self._run("pages", "list", bound, int(limit), write=False)
        return [self._page(r) for r in rows]

    async def latest_firing_page(self, group_key: str, before_id: int) -> PageRecord | None:
        rows = await self._run("pages", "firing", group_key, int(before_id), write=False)
        return self._page(rows[0]) if rows else None

    async def record_delivery(
        self,
        page_id: int,
        notifier: str,
        state: str,
        error: str | None,
        at: float,
        next_try: float | None = None,
    ) -> None:
        await self._run(
            "record_delivery",
            int(page_id),
            notifier,
            state,
            *_flag(error),
            _f(at),
            *_flag(None if next_try is None else _f(next_try)),
        )

    async def save_receipt(self, page_id: int, notifier: str, receipt: dict[str, str]) -> None:
        await self._run("save_receipt", int(page_id), notifier, json.dumps(receipt))

    async def deliveries(self, page_id: int) -> list[DeliveryRecord]:
        page = await self.get_page(page_id)
        return page.deliveries if page is not None else []

    async def requeue_update(
        self, job_id: int, owner: str, notifiers: list[str], lease_s: float
    ) -> bool:
        return bool(await self._run("requeue_update", int(job_id), owner, _f(lease_s), *notifiers))

    async def finish(
        self,
        job_id: int,
        owner: str,
        state: JobState,
        sent: list[str],
        error: str | None,
        at: float,
    ) -> None:
        await self._run("finish", int(job_id), JobState(state).value, _f(at), *_flag(error), *sent)

    async def pending_deliveries(self, page_id: int) -> list[str]:
        names = await self._run("pending", int(page_id), write=False)
        return [n.decode() for n in sorted(names)]

    async def check_writable(self) -> None:
        client = self._client
        if client is None:
            raise StoreError("store is closed")
        try:
            await client.set(self.prefix + "heartbeat", _f(time.time()))
        except (RedisError, OSError) as exc:
            raise StoreError(f"redis write failed: {type(exc).__name__}: {exc}") from None

    # -- deploy events ------------------------------------------------------------------------

    async def add_deploy(
        self,
        service: str,
        environment: str | None,
        version: str,
        commit: str | None,
        at: float,
        doc: dict[str, Any],
    ) -> int:
        fields: list[str] = ["version", version]
        if environment is not None:
            fields += ["environment", environment]
        if commit is not None:
            fields += ["commit", commit]
        return int(
            await self._run("add_deploy", service, _f(at), json.dumps(doc, default=str), *fields)
        )

    async def deploys(self, service: str, since: float, until: float) -> list[dict[str, Any]]:
        docs = await self._run("deploys", service, _f(since), _f(until), write=False)
        return [json.loads(d) for d in docs]

    async def prune(self, before: float, limit: int = PRUNE_BATCH) -> int:
        """Delete up to `limit` finished jobs received before `before`, with their
        notification, idempotency key, page and deliveries, and up to as many deploy events
        as old. Bounded, so one script (which blocks Redis while it runs) stays short."""
        return int(await self._run("prune", _f(before), int(limit)))

    async def notification_body(self, notification_id: int) -> bytes | None:
        """The notification exactly as it was received."""
        body, enc = await self._run("body", int(notification_id), write=False)
        return None if body is None else _decode(body, enc.decode())


# The scripts' FINAL table spells the final states out.
assert {s.value for s in FINAL_STATES} == {"done", "failed"}

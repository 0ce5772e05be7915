"""Redis back end: Redis Streams with a consumer group, per-user hashes, Lua commits.

Key layout (``P`` is the configured prefix):

====================  ======  ================================================
key                   type    holds
====================  ======  ================================================
``P:stream``          stream  published events: per entry ``e`` one event
                              (JSON) or ``g`` a user's events of one publish
                              call (joined by U+001E), ``t`` publish us, ``u``
                              the user when known; with N > 1 partitions
                              ``P:stream:0`` ... ``P:stream:<N-1>``, a user's
                              events all in partition
                              :func:`~recsys.events.store.partition_of`
``P:u:<user>``        hash    ``v`` version, ``p`` profile JSON, ``a:<name>``
                              attributes, ``c:<purpose>`` consent
``P:ch:<user>``       list    consent history
``P:ev:<user>``       list    stored events: per committed batch one element,
                              the user's events of the batch (see
                              :func:`~recsys.events.redis_codec.event_chunk`)
``P:applied``         set     committed event ids (idempotency keys)
``P:eid``             hash    published event id -> ``<user> <digest>``
                              (:meth:`RedisStore.publish_new`); ``P:eu:<user>``
                              (set) the user's ids, for erasure
``P:dl``              stream  dead letters; ``P:dlu:<user>`` lists a user's ids
``P:seg:<segment>``   hash    members -> entry time; ``P:segments`` names them
``P:seglog``          stream  membership changes; ``P:slu:<user>`` a user's ids
``P:useg:<user>``     set     segments the user ever entered (for erasure)
``P:active``          zset    user -> latest event time
``P:audit``           stream  audit trail; ``P:audit:head`` last hash
``P:erased``          set     erasure tombstones
``P:partitions``      string  the stream's partition count (set by the first
                              store opened on the prefix)
====================  ======  ================================================

:meth:`RedisStore.commit` is one Lua script, so Redis runs it atomically:
version checks and the idempotency check first (returning conflicts with
nothing written), then every write, then ``XACK``. Because the script touches
keys it computes, it needs a single Redis node (not Redis Cluster); it uses
``SMISMEMBER`` (Redis >= 6.2).

The hot calls (publish, read, load, commit) are shaped for CPU per event:
lists travel as one string joined with NUL characters (``Z`` prefix), which
neither side has to escape or parse element by element; JSON (``J``) is used
only when an element itself holds a NUL. Validated events and the documents
this package writes never do (JSON escapes control characters). Publishing
packs its arguments directly in the Redis protocol.

Per batch a consumer needs one round trip in the common case:
:meth:`RedisStore.commit_and_read` commits a batch and reads the next in one
script; a user's events of one publish call share a stream entry (fewer
entries to add, read and acknowledge); and every entry carries its user's
record version from publishing, so users with no record yet are not loaded and
a consumer woken from idle needs no second call for them.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis
from redis.exceptions import NoScriptError

from recsys.events.deadletter import DeadLetter
from recsys.events.redis_codec import (
    GROUP_SEP,
    chunk_events,
    commit_args,
    delivered,
    expand,
    join_list,
    pack_command,
    parse_read,
    publish_args,
    publish_ids,
    split_list,
)
from recsys.events.store import (
    PUBLISHED,
    AuditRecord,
    CommitBatch,
    CommitReply,
    Delivery,
    EventKey,
    MembershipChange,
    PublishResult,
    UserRecord,
    canonical_json,
    classify_keys,
    stream_user_of,
)

# Lua side of the list encoding (see the module docstring). '' is the empty list.
_LUA_LISTS = r"""
local function decode(s)
  if s == '' then return {} end
  if string.sub(s, 1, 1) == 'J' then return cjson.decode(string.sub(s, 2)) end
  -- A plain find is several times faster than a gmatch pattern here.
  local out, n, i, find, sub = {}, 0, 2, string.find, string.sub
  while true do
    local j = find(s, '\0', i, true)
    n = n + 1
    if not j then
      out[n] = sub(s, i)
      return out
    end
    out[n] = sub(s, i, j - 1)
    i = j + 1
  end
end
local function encode(list)
  if #list == 0 then return '' end
  for _, x in ipairs(list) do
    if string.find(x, '\0', 1, true) then return 'J' .. cjson.encode(list) end
  end
  return 'Z' .. table.concat(list, '\0')
end
local function chunked(cmd, key, extra, list, first, last)
  local k = first - 1
  while k < last do
    local upto = math.min(k + 500, last)
    if extra then
      redis.call(cmd, key, extra, unpack(list, k + 1, upto))
    else
      redis.call(cmd, key, unpack(list, k + 1, upto))
    end
    k = upto
  end
end
"""

# publish(base): KEYS: stream keys; ARGV from index base: prefix, publish time,
# MAXLEN ('' = none), then per key the number of its entries followed by (kind,
# user or '', body) per entry: kind 'e' holds one event, 'g' a user's events
# joined by U+001E (see RedisStore.publish). An entry that names its user also
# carries the version of the user's record now (field 'v': '0' no record, '' a
# record without one), a hint that spares the reader a lookup. Returns the new
# ids, space-joined.
_LUA_PUBLISH = r"""
local function publish(base)
  local p, ts, maxlen = ARGV[base], ARGV[base + 1], ARGV[base + 2]
  local out, j, m, call = {}, base + 3, 0, redis.call
  local head = {'XADD', '', '*'}
  if maxlen ~= '' then head = {'XADD', '', 'MAXLEN', '~', maxlen, '*'} end
  local h = #head
  for k = 1, #KEYS do
    local n = tonumber(ARGV[j])
    head[2] = KEYS[k]
    j = j + 1
    for _ = 1, n do
      local kind, u, body = ARGV[j], ARGV[j + 1], ARGV[j + 2]
      head[h + 1], head[h + 2], head[h + 3], head[h + 4] = kind, body, 't', ts
      local id
      if u == '' then
        head[h + 5], head[h + 6], head[h + 7], head[h + 8] = nil, nil, nil, nil
        id = call(unpack(head, 1, h + 4))
      else
        local key = p .. ':u:' .. u
        local v = call('HGET', key, 'v')
        if not v then v = call('EXISTS', key) == 1 and '' or '0' end
        head[h + 5], head[h + 6], head[h + 7], head[h + 8] = 'u', u, 'v', v
        id = call(unpack(head, 1, h + 8))
      end
      m = m + 1
      out[m] = id
      j = j + 3
    end
  end
  return table.concat(out, ' ')
end
"""

_PUBLISH_LUA = _LUA_PUBLISH + "return publish(1)\n"

# publish_new: ARGV: n, then n (event id, user, digest) triples of distinct new
# candidates, then publish()'s arguments. Registrations live in hash P:eid
# (event id -> 'user digest') and per user in set P:eu:<user> (for erasure).
# If any candidate is registered already nothing is written, and the reply is
# 'R' and each candidate's registration ('' none) joined by NUL (ids and
# digests hold no NUL or space): the caller classifies them and sends the rest
# again. Else every candidate is registered and published; the reply is
# publish()'s.
_PUBLISH_NEW_LUA = (
    _LUA_PUBLISH
    + r"""
local n = tonumber(ARGV[1])
local call = redis.call
local reg = ARGV[3 * n + 2] .. ':eid'
local found, any = {}, false
for k = 1, n, 500 do
  local ids = {}
  for i = k, math.min(k + 499, n) do ids[#ids + 1] = ARGV[3 * i - 1] end
  local vals = call('HMGET', reg, unpack(ids))
  for i, v in ipairs(vals) do
    if v then
      any = true
      found[k + i - 1] = v
    else
      found[k + i - 1] = ''
    end
  end
end
if any then return 'R' .. table.concat(found, '\0') end
local users, pairs_ = {}, {}
for i = 1, n do
  local id, u = ARGV[3 * i - 1], ARGV[3 * i]
  pairs_[#pairs_ + 1] = id
  pairs_[#pairs_ + 1] = u .. ' ' .. ARGV[3 * i + 1]
  local l = users[u]
  if not l then
    l = {}
    users[u] = l
  end
  l[#l + 1] = id
end
for k = 1, #pairs_, 1000 do
  call('HSET', reg, unpack(pairs_, k, math.min(k + 999, #pairs_)))
end
local ukey = ARGV[3 * n + 2] .. ':eu:'
for u, l in pairs(users) do
  for k = 1, #l, 500 do call('SADD', ukey .. u, unpack(l, k, math.min(k + 499, #l))) end
end
return publish(3 * n + 2)
"""
)

# read(p, grp, consumer, count, mode, first_label, known): XREADGROUP of KEYS
# for the consumer ('>' new, '0' own pending), the labels ('' or
# '<partition>:') at ARGV[first_label ...] one per key. Returns one string
# (the list encoding): per entry: labelled id, publish time, user ('' unknown), that user's
# record version ('' unknown, '0' no record), body ('' deleted entry, else the
# kind and the payload). Versions let the consumer skip loading users that
# have no record yet (a hint: the commit checks versions again); they come from
# ``known`` (versions the caller just wrote, nil: none), else from the entry
# (stamped when it was published), else from a lookup.
_LUA_READ = r"""
local function read(p, grp, consumer, count, mode, first_label, known)
  local call, find = redis.call, string.find
  local cmd = {'XREADGROUP', 'GROUP', grp, consumer, 'COUNT', count, 'STREAMS'}
  local labels = {}
  for k = 1, #KEYS do
    cmd[#cmd + 1] = KEYS[k]
    labels[KEYS[k]] = ARGV[first_label + k - 1]
  end
  for k = 1, #KEYS do cmd[#cmd + 1] = mode end
  local r = #KEYS > 0 and call(unpack(cmd)) or {}
  local vers = known or {}  -- user -> version, known without a lookup
  local function version(u)
    local v = vers[u]
    if v == nil then
      local key = p .. ':u:' .. u
      v = call('HGET', key, 'v')
      if not v then v = call('EXISTS', key) == 1 and '' or '0' end
      vers[u] = v
    end
    return v
  end
  local out, n, clean = {}, 0, true
  for _, s in ipairs(r or {}) do  -- nil reply: nothing new
    local label = labels[s[1]]
    for _, e in ipairs(s[2]) do
      local f, body, t, u, ver, hint = e[2], '', '0', '', '', nil
      if f then  -- false when the entry was deleted after delivery (erasure)
        body = 'e'  -- no known payload field: an empty event (a dead letter)
        for j = 1, #f, 2 do
          local name = f[j]
          if name == 'e' or name == 'g' then
            body = name .. f[j + 1]
          elseif name == 't' then
            t = f[j + 1]
          elseif name == 'u' then
            u = f[j + 1]
          elseif name == 'v' and find(f[j + 1], '^%d*$') then
            hint = f[j + 1]
          end
        end
        if u ~= '' then ver = vers[u] or hint or version(u) end
      end
      if clean and (find(body, '\0', 1, true) or find(t, '\0', 1, true)
                    or find(u, '\0', 1, true)) then
        clean = false
      end
      out[n + 1] = label == '' and e[1] or label .. e[1]  -- stream ids never hold NUL
      out[n + 2] = t
      out[n + 3] = u
      out[n + 4] = ver
      out[n + 5] = body
      n = n + 5
    end
  end
  if n == 0 then return '' end
  if clean then return 'Z' .. table.concat(out, '\0') end
  return 'J' .. cjson.encode(out)
end
"""

# KEYS: stream keys; ARGV: prefix, group, consumer, COUNT, '>' (new) or '0'
# (own pending), one label per key.
_READ_LUA = (
    _LUA_LISTS
    + _LUA_READ
    + r"""
return read(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], 6, nil)
"""
)

# ARGV: prefix, user ids. Returns per user the number of hash fields and values,
# then those fields and values.
_LOAD_LUA = (
    _LUA_LISTS
    + r"""
local out = {}
for k = 2, #ARGV do
  local flat = redis.call('HGETALL', ARGV[1] .. ':u:' .. ARGV[k])
  out[#out + 1] = tostring(#flat)
  for j = 1, #flat do out[#out + 1] = flat[j] end
end
return encode(out)
"""
)

_APPLIED_LUA = (
    _LUA_LISTS
    + r"""
local ids = decode(ARGV[2])
local out = {}
for k = 1, #ids, 500 do
  local flags = redis.call('SMISMEMBER', ARGV[1], unpack(ids, k, math.min(k + 499, #ids)))
  for _, f in ipairs(flags) do out[#out + 1] = f == 1 and '1' or '0' end
end
return table.concat(out)
"""
)

# commit(p, grp, w, e, i, d, m, a): the lists (list encoding) of profile
# writes (user, expected version, document, latest event time or ''), stored
# events (user, chunk of events), applied event ids, dead letters (user or '',
# JSON), membership changes (user, segment, '1'/'0', time, trigger) and
# acknowledgements (stream key, count, ids...). Returns the conflicts ({} when
# committed; else nothing was written) and the new version of each user written.
_LUA_COMMIT = r"""
local function commit(p, grp, w, e, i, d, m, a)
  local W, I = decode(w), decode(i)
  local bad = {}
  for k = 1, #W, 4 do
    local cur = redis.call('HGET', p .. ':u:' .. W[k], 'v') or '0'
    if cur ~= W[k + 1] then bad[#bad + 1] = W[k] end
  end
  local applied = p .. ':applied'
  for k = 1, #I, 500 do
    local flags = redis.call('SMISMEMBER', applied, unpack(I, k, math.min(k + 499, #I)))
    for j, f in ipairs(flags) do
      if f == 1 then bad[#bad + 1] = 'dup:' .. I[k + j - 1] end
    end
  end
  if #bad > 0 then return bad end

  local active, written = {}, {}
  for k = 1, #W, 4 do
    local v = tostring(tonumber(W[k + 1]) + 1)
    redis.call('HSET', p .. ':u:' .. W[k], 'p', W[k + 2], 'v', v)
    written[W[k]] = v
    if W[k + 3] ~= '' then
      active[#active + 1] = W[k + 3]
      active[#active + 1] = W[k]
    end
  end
  chunked('ZADD', p .. ':active', 'GT', active, 1, #active)
  local E = decode(e)
  for k = 1, #E, 2 do redis.call('RPUSH', p .. ':ev:' .. E[k], E[k + 1]) end
  chunked('SADD', applied, nil, I, 1, #I)
  local D = decode(d)
  for k = 1, #D, 2 do
    local id = redis.call('XADD', p .. ':dl', '*', 'u', D[k], 'd', D[k + 1])
    if D[k] ~= '' then redis.call('RPUSH', p .. ':dlu:' .. D[k], id) end
  end

  -- Membership: every change goes to the log; each (segment, user) ends in the
  -- state of its last change, written once per segment.
  local M = decode(m)
  local final, logs, entered, order = {}, {}, {}, {}
  for k = 1, #M, 5 do
    local u, s, e, at = M[k], M[k + 1], M[k + 2], M[k + 3]
    local fs = final[s]
    if not fs then
      fs = {}
      final[s] = fs
    end
    fs[u] = e == '1' and at or false
    local id = redis.call('XADD', p .. ':seglog', '*',
                          'u', u, 's', s, 'e', e, 't', at, 'g', M[k + 4])
    local l = logs[u]
    if not l then
      l = {}
      logs[u] = l
      order[#order + 1] = u
    end
    l[#l + 1] = id
    if e == '1' then
      local es = entered[u]
      if not es then
        es = {}
        entered[u] = es
      end
      es[s] = true
    end
  end
  for _, u in ipairs(order) do chunked('RPUSH', p .. ':slu:' .. u, nil, logs[u], 1, #logs[u]) end
  local names = {}
  for u, es in pairs(entered) do
    local list = {}
    for s in pairs(es) do
      list[#list + 1] = s
      names[s] = true
    end
    chunked('SADD', p .. ':useg:' .. u, nil, list, 1, #list)
  end
  local list = {}
  for s in pairs(names) do list[#list + 1] = s end
  chunked('SADD', p .. ':segments', nil, list, 1, #list)
  for s, fs in pairs(final) do
    local sets, dels = {}, {}
    for u, at in pairs(fs) do
      if at then
        sets[#sets + 1] = u
        sets[#sets + 1] = at
      else
        dels[#dels + 1] = u
      end
    end
    chunked('HSET', p .. ':seg:' .. s, nil, sets, 1, #sets)
    chunked('HDEL', p .. ':seg:' .. s, nil, dels, 1, #dels)
  end

  local A = decode(a)
  local k = 1
  while k <= #A do
    local n = tonumber(A[k + 1])
    chunked('XACK', A[k], grp, A, k + 2, k + 1 + n)
    k = k + 2 + n
  end
  return {}, written
end
"""

# ARGV: prefix, group, then the six lists of commit(). Returns the conflicts.
_COMMIT_LUA = (
    _LUA_LISTS
    + _LUA_COMMIT
    + r"""
return (commit(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]))
"""
)

# The consumer's hot call: commit one batch and, when it committed, read the
# next (one round trip per batch instead of two). KEYS: stream keys to read;
# ARGV: the eight arguments of commit(), then consumer, COUNT and one label per
# key. Returns 'C' and the conflicts (list encoding), or what read() returns.
_COMMIT_READ_LUA = (
    _LUA_LISTS
    + _LUA_COMMIT
    + _LUA_READ
    + r"""
local bad, written = commit(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7],
                            ARGV[8])
if #bad > 0 then return 'C' .. encode(bad) end
return read(ARGV[1], ARGV[2], ARGV[9], ARGV[10], '>', 11, written)
"""
)


def _now_us() -> int:
    return time.time_ns() // 1000


class _Channel:
    """Connections for the hot scripts: one kept for the store's main user (a
    consumer's loop), the client's pool for anyone else at the same time
    (collector threads). Taking a pooled connection costs about 20 us of
    health checks per call, a third of a small batch's client time.

    Args:
        client: the Redis client (its pool and connection settings are used).
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self._own: Any = None
        self._lock = threading.Lock()

    def call(self, packed: bytes, decode: bool) -> Any:
        """Sends one packed command and returns its reply."""
        return self.start(packed, decode)()

    def start(self, packed: bytes, decode: bool) -> Callable[[], Any]:
        """Sends one packed command now; returns a function that reads its
        reply (call it exactly once). Meanwhile the kept connection is busy,
        so other calls, even from this thread, take a pooled one."""
        pool = self.client.connection_pool
        own = self._lock.acquire(blocking=False)
        try:
            if own:
                if self._own is None:
                    self._own = pool.make_connection()
                conn = self._own
            else:
                conn = pool.get_connection()
        except BaseException:
            if own:
                self._lock.release()
            raise

        def release() -> None:
            if own:
                self._lock.release()
            else:
                pool.release(conn)

        try:
            conn.send_packed_command([packed])  # connects first when needed
        except BaseException as e:
            if isinstance(e, redis.ConnectionError | redis.TimeoutError):
                conn.disconnect()
            release()
            raise

        def reply() -> Any:
            try:
                return conn.read_response(disable_decoding=not decode)
            except (redis.ConnectionError, redis.TimeoutError):
                conn.disconnect()
                raise
            finally:
                release()

        return reply

    def close(self) -> None:
        """Disconnects the kept connection. Does not wait for a reply still
        outstanding (its reader gets a connection error instead)."""
        own, self._own = self._own, None
        if own is not None:
            own.disconnect()


class _Script:
    """A Lua script run with ``EVALSHA``.

    Args:
        channel: where commands go.
        text: the Lua source; loaded on first use and again after a server
            restart (``NOSCRIPT``).
    """

    def __init__(self, channel: _Channel, text: str) -> None:
        self.channel = channel
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest().encode()

    def __call__(
        self, keys: Sequence[str], args: Sequence[str | bytes], decode: bool = True
    ) -> Any:
        """Runs the script; ``decode=False`` returns bulk replies as bytes.

        A lost connection raises rather than retrying: a read that ran but
        whose reply was lost leaves its entries pending at this consumer,
        which re-reads them when it starts again.
        """
        return self.start(keys, args, decode)()

    def start(
        self, keys: Sequence[str], args: Sequence[str | bytes], decode: bool = True
    ) -> Callable[[], Any]:
        """Sends the call now; returns a function that waits for its reply
        (see :meth:`_Channel.start`)."""
        head = [b"EVALSHA", self.sha, b"%d" % len(keys), *(k.encode() for k in keys)]
        packed = pack_command(head + [a if isinstance(a, bytes) else a.encode() for a in args])
        pending = self.channel.start(packed, decode)

        def reply() -> Any:
            try:
                return pending()
            except NoScriptError:  # nothing ran: load the script, send again
                self.channel.client.script_load(self.text)
                return self.channel.call(packed, decode)

        return reply


class RedisStore:
    """:class:`~recsys.events.store.RealtimeStore` on one Redis server.

    Args:
        url: ``redis://host:port/db``.
        prefix: prefix of every key (lets tests and tenants share a server).
        group: consumer group name of the stream.
        stream_maxlen: approximate cap on each stream partition's length
            (``XADD MAXLEN ~``); None keeps every entry. Set it well above the
            worst backlog: Redis trims unread entries too.
        partitions: number of stream partitions. A user's events all go to
            one partition, so several consumers, each owning partitions, run
            in parallel and each user's events stay in order. The first store
            opened on a prefix records the number (``P:partitions``); None
            (the default) uses the recorded one (1 on a new prefix), so a
            server or a report opened by URL writes and reads the partitions
            the producers and consumers use. Another number than the recorded
            one is refused (ValueError): change it only after draining the
            stream and deleting the prefix's stream keys and ``P:partitions``.
        group_user_events: a user's events of one :meth:`publish` call share
            one stream entry (fewer entries to add, read and acknowledge);
            False publishes one entry per event.

    Example:
        >>> store = RedisStore("redis://127.0.0.1:6379/0", prefix="rt")  # doctest: +SKIP
    """

    def __init__(
        self,
        url: str,
        prefix: str = "rt",
        group: str = "profiles",
        stream_maxlen: int | None = None,
        partitions: int | None = None,
        group_user_events: bool = True,
    ) -> None:
        if partitions is not None and partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {partitions}")
        self.url = url
        self.prefix = prefix
        self.group = group
        self.stream_maxlen = stream_maxlen
        self.group_user_events = group_user_events
        # decode_responses=True makes every reply str; the client's stubs cannot
        # express that. Text that is not UTF-8 is read with replacement
        # characters (a bad entry becomes a dead letter, not a crash loop).
        self.r: Any = redis.Redis.from_url(url, decode_responses=True, encoding_errors="replace")
        self.partitions = partitions = self._stream_partitions(partitions)
        self.stream_keys = [
            f"{prefix}:stream" if partitions == 1 else f"{prefix}:stream:{k}"
            for k in range(partitions)
        ]
        self.stream_key = self.stream_keys[0]
        self._labels = ["" if partitions == 1 else f"{k}:" for k in range(partitions)]
        # (consumer, partitions) -> its last read left nothing behind.
        self._drained: dict[tuple[str | int, ...], bool] = {}
        self._channel = _Channel(self.r)
        self._commit = _Script(self._channel, _COMMIT_LUA)
        self._commit_read = _Script(self._channel, _COMMIT_READ_LUA)
        self._load = _Script(self._channel, _LOAD_LUA)
        self._read = _Script(self._channel, _READ_LUA)
        self._applied = _Script(self._channel, _APPLIED_LUA)
        self._publish = _Script(self._channel, _PUBLISH_LUA)
        self._publish_new = _Script(self._channel, _PUBLISH_NEW_LUA)
        for key in self.stream_keys:
            try:
                self.r.xgroup_create(key, group, id="0", mkstream=True)
            except redis.ResponseError as e:
                if "BUSYGROUP" not in str(e):
                    raise

    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def _stream_partitions(self, asked: int | None) -> int:
        """The prefix's partition count: the recorded one, which ``asked`` must equal.

        A prefix written before the count was recorded gets the count of its stream
        keys. Two stores opening a new prefix at once agree (``SET NX``: the first
        one's count stands, the other compares with it).
        """
        key = self._k("partitions")
        recorded = self.r.get(key)
        if recorded is None:
            found = 0
            while self.r.exists(self._k("stream", str(found))):
                found += 1
            if found == 0 and self.r.exists(self._k("stream")):
                found = 1
            # the keys on the server decide; ``asked`` only for a new prefix
            self.r.set(key, str(found or asked or 1), nx=True)
            recorded = self.r.get(key)
        count = int(recorded)
        if asked is not None and asked != count:
            raise ValueError(self._partitions_error(count, asked))
        return count

    def _partitions_error(self, count: int, asked: int) -> str:
        return (
            f"Redis prefix {self.prefix!r} holds a stream of {count} partition(s), not "
            f"{asked}: every producer and consumer of a prefix uses the same number (open "
            f"it without one to use the prefix's); to change it, drain the stream and "
            f"delete {self.prefix}:stream* and {self._k('partitions')}"
        )

    def _owned(self, partitions: Sequence[int] | None) -> list[int]:
        if partitions is None:
            return list(range(self.partitions))
        bad = [k for k in partitions if not 0 <= k < self.partitions]
        if bad:
            raise ValueError(f"partitions {bad} do not exist (the stream has {self.partitions})")
        return list(partitions)

    # -- stream ---------------------------------------------------------------------
    def publish(
        self,
        payloads: Sequence[str],
        published_us: int | None = None,
        users: Sequence[str | None] | None = None,
    ) -> list[str]:
        """Appends events to the stream (see :meth:`RealtimeStore.publish`).

        With ``group_user_events`` (the default) a user's events of one call
        share one stream entry (field ``g``), so reading, acknowledging and
        publishing work per entry is divided among them; their ids are
        ``<entry id>/<index>``. Events without a known user (``users`` not
        given on a single-partition stream) travel one per entry (field
        ``e``). Every entry names its user (field ``u``) when known, which
        lets the reader return the user's record version with it.
        """
        if not payloads:
            return []
        ts = published_us if published_us is not None else _now_us()
        keys, args, entries = publish_args(
            self.prefix,
            ts,
            self.stream_maxlen,
            self.stream_keys,
            payloads,
            users,
            self.group_user_events,
        )
        ids = str(self._publish(keys, args)).split(" ")
        return publish_ids(ids, self._labels, entries, len(payloads))

    def publish_new(
        self,
        payloads: Sequence[str],
        keys: Sequence[EventKey],
        published_us: int | None = None,
    ) -> PublishResult:
        """Publishes the payloads whose event id is new (see
        :meth:`RealtimeStore.publish_new`): one script call when no id was
        published before, which registers and appends atomically. When some
        were, that call writes nothing and returns their registrations; the
        outcomes are recomputed with them and the rest sent again (each retry
        knows more registrations, so it ends)."""
        if len(keys) != len(payloads):
            raise ValueError(f"{len(payloads)} payloads but {len(keys)} keys")
        for key in keys:
            # They travel joined by spaces and NUL (validated ids never hold them).
            if any(c in field for field in key for c in " \0") or "" in key:
                raise ValueError(
                    f"event key {key!r}: fields must be non-empty, without NUL or spaces"
                )
        ts = published_us if published_us is not None else _now_us()
        known: dict[str, tuple[str, str]] = {}
        while True:
            outcomes = classify_keys(keys, dict(known))
            todo = [i for i, o in enumerate(outcomes) if o == PUBLISHED]
            if not todo:
                return PublishResult(outcomes, [])
            head = [str(len(todo))]
            for i in todo:
                head += keys[i]
            stream_keys, args, entries = publish_args(
                self.prefix,
                ts,
                self.stream_maxlen,
                self.stream_keys,
                [payloads[i] for i in todo],
                [keys[i].user_id for i in todo],
                self.group_user_events,
            )
            reply = str(self._publish_new(stream_keys, head + args))
            if reply[:1] != "R":
                ids = publish_ids(reply.split(" "), self._labels, entries, len(todo))
                return PublishResult(outcomes, ids)
            for i, found in zip(todo, reply[1:].split("\0"), strict=True):
                if found:
                    user, _, digest = found.partition(" ")
                    known[keys[i].event_id] = (user, digest)

    def _deliveries(self, k: int, entries: Any) -> list[Delivery]:
        """Deliveries of entries as the client returns them (decoded fields)."""
        label = self._labels[k]
        out: list[Delivery] = []
        for entry_id, fields in entries or ():
            if fields is None:  # deleted after delivery (erasure): acknowledge-only
                out.append(Delivery(label + entry_id, "", 0))
                continue
            if "e" in fields:
                body = "e" + fields["e"]
            elif "g" in fields:
                body = "g" + fields["g"]
            else:
                body = "e"  # no payload field: an empty event (a dead letter)
            out += expand(label + entry_id, fields.get("t", "0"), fields.get("u", ""), "", body)
        return out

    def read(
        self,
        consumer: str,
        count: int,
        block_ms: int,
        pending: bool,
        partitions: Sequence[int] | None = None,
    ) -> list[Delivery]:
        """Reads up to ``count`` entries per partition (see
        :meth:`RealtimeStore.read`); a grouped entry yields one delivery per
        event. Deliveries carry their user's record version when the entry
        names its user."""
        owned = self._owned(partitions)
        if not owned:
            return []
        keys = [self.stream_keys[k] for k in owned]
        labels = [self._labels[k] for k in owned]
        state: tuple[str | int, ...] = (consumer, *owned)
        if pending or block_ms <= 0 or not self._drained.get(state, False):
            now, entries = self._read_now(keys, labels, consumer, count, pending)
            # A short read drained the stream: next time go straight to the
            # blocking read, which returns at once if entries arrived meanwhile.
            self._drained[state] = entries < count
            if now or pending or block_ms <= 0:
                return now
        # Idle: block in a plain XREADGROUP. Entries carry their user's record
        # version from publishing, so what it returns needs no second call; a
        # full read leaves the rest to the next (script) read.
        command = [b"XREADGROUP", b"GROUP", self.group.encode(), consumer.encode()]
        command += [b"COUNT", b"%d" % count, b"BLOCK", b"%d" % block_ms, b"STREAMS"]
        command += [k.encode() for k in keys] + [b">"] * len(keys)
        reply = self._channel.call(pack_command(command), False)
        if not reply:
            return []
        # RESP3 answers with a map, RESP2 with pairs.
        streams = reply.items() if isinstance(reply, dict) else reply
        label_of = {k.encode(): label for k, label in zip(keys, labels, strict=True)}
        found: list[Delivery] = []
        drained = True
        for key, entries_ in streams:
            label = label_of[key]
            drained = drained and len(entries_) < count
            for entry_id, fields in entries_:
                found += delivered(label + entry_id.decode(), fields)
        self._drained[state] = drained
        return found

    def _read_now(
        self, keys: list[str], labels: list[str], consumer: str, count: int, pending: bool
    ) -> tuple[list[Delivery], int]:
        """What the consumer can read without waiting (the read script):
        deliveries and how many entries."""
        mode = "0" if pending else ">"
        args = [self.prefix, self.group, consumer, str(count), mode, *labels]
        # Bytes back: a payload that is not UTF-8 must become a dead letter,
        # not stop the consumer.
        return parse_read(self._read(keys, args, False).decode("utf-8", "replace"))

    def claim_stale(
        self,
        consumer: str,
        min_idle_ms: int,
        count: int,
        partitions: Sequence[int] | None = None,
    ) -> list[Delivery]:
        out: list[Delivery] = []
        for k in self._owned(partitions):
            reply = self.r.xautoclaim(
                self.stream_keys[k], self.group, consumer, min_idle_time=min_idle_ms, count=count
            )
            out += self._deliveries(k, reply[1])
        return out

    def stream_stats(self) -> dict[str, int]:
        length = pending = 0
        for key in self.stream_keys:
            length += int(self.r.xlen(key))
            pending += int(self.r.xpending(key, self.group)["pending"])
        return {"length": length, "pending": pending}

    # -- per-user records ----------------------------------------------------------
    def load_users(self, user_ids: Sequence[str]) -> dict[str, UserRecord]:
        if not user_ids:
            return {}
        flat = split_list(self._load([], [self.prefix, *user_ids]))
        out: dict[str, UserRecord] = {}
        j = 0
        for uid in user_ids:
            rec = UserRecord(uid)
            n = int(flat[j])
            for i in range(j + 1, j + 1 + n, 2):
                name, value = flat[i], flat[i + 1]
                if name == "v":
                    rec.version = int(value)
                elif name == "p":
                    rec.profile = value
                elif name.startswith("a:"):
                    rec.attributes[name[2:]] = value
                elif name.startswith("c:"):
                    rec.consent[name[2:]] = value
            j += 1 + n
            out[uid] = rec
        return out

    def applied(self, event_ids: Sequence[str]) -> set[str]:
        if not event_ids:
            return set()
        flags = self._applied([], [self._k("applied"), join_list(event_ids)])
        return {e for e, f in zip(event_ids, flags, strict=True) if f == "1"}

    def _commit_args(self, batch: CommitBatch) -> list[str]:
        """The eight arguments of the Lua ``commit`` function."""
        return commit_args(self.prefix, self.group, self.stream_keys, batch)

    def commit(self, batch: CommitBatch) -> list[str]:
        return [str(x) for x in self._commit([], self._commit_args(batch))]

    def commit_and_read(
        self,
        batch: CommitBatch,
        consumer: str,
        count: int,
        partitions: Sequence[int] | None = None,
    ) -> tuple[list[str], list[Delivery]]:
        """Commits ``batch`` and, when it committed, reads the consumer's next
        entries without waiting, in one script call (see
        :meth:`RealtimeStore.commit_and_read`)."""
        return self.begin_commit_and_read(batch, consumer, count, partitions)()

    def begin_commit_and_read(
        self,
        batch: CommitBatch,
        consumer: str,
        count: int,
        partitions: Sequence[int] | None = None,
    ) -> CommitReply:
        """Sends :meth:`commit_and_read`'s script call and returns a function
        that waits for its reply: Redis runs the script while the caller
        computes."""
        owned = self._owned(partitions)
        keys = [self.stream_keys[k] for k in owned]
        labels = [self._labels[k] for k in owned]
        args = [*self._commit_args(batch), consumer, str(count), *labels]
        pending = self._commit_read.start(keys, args, False)
        state: tuple[str | int, ...] = (consumer, *owned)

        def reply() -> tuple[list[str], list[Delivery]]:
            text = pending().decode("utf-8", "replace")
            if text[:1] == "C":
                return split_list(text[1:]), []
            found, entries = parse_read(text)
            self._drained[state] = entries < count
            return [], found

        return reply

    def _bump_pipe(self, pipe: Any, user_id: str) -> None:
        pipe.hincrby(self._k("u", user_id), "v", 1)

    def write_attributes(self, user_id: str, values: Mapping[str, str | None]) -> int:
        key = self._k("u", user_id)
        pipe = self.r.pipeline(transaction=True)
        sets = {f"a:{n}": v for n, v in values.items() if v is not None}
        dels = [f"a:{n}" for n, v in values.items() if v is None]
        if sets:
            pipe.hset(key, mapping=sets)
        if dels:
            pipe.hdel(key, *dels)
        self._bump_pipe(pipe, user_id)
        return int(pipe.execute()[-1])

    def write_consent(self, user_id: str, purpose: str, record: str) -> int:
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self._k("u", user_id), f"c:{purpose}", record)
        pipe.rpush(self._k("ch", user_id), record)
        self._bump_pipe(pipe, user_id)
        return int(pipe.execute()[-1])

    def consent_history(self, user_id: str) -> list[str]:
        return list(self.r.lrange(self._k("ch", user_id), 0, -1))

    def user_events(self, user_id: str) -> list[str]:
        return [
            e for chunk in self.r.lrange(self._k("ev", user_id), 0, -1) for e in chunk_events(chunk)
        ]

    def active_users(self, since_us: int) -> list[str]:
        return sorted(self.r.zrangebyscore(self._k("active"), since_us, "+inf"))

    # -- dead letters ------------------------------------------------------------------
    def add_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        if letters:
            self.commit(CommitBatch(dead_letters=list(letters)))

    def dead_letters(self, user_id: str | None = None, limit: int = 1000) -> list[DeadLetter]:
        if user_id is None:
            entries = self.r.xrange(self._k("dl"), count=limit)
            return [DeadLetter.from_json(f["d"]) for _id, f in entries]
        out = []
        for entry_id in self.r.lrange(self._k("dlu", user_id), 0, limit - 1):
            for _id, f in self.r.xrange(self._k("dl"), entry_id, entry_id):
                out.append(DeadLetter.from_json(f["d"]))
        return out

    def dead_letter_count(self) -> int:
        return int(self.r.xlen(self._k("dl")))

    # -- segments ----------------------------------------------------------------------
    def segment_members(self, segment: str) -> set[str]:
        return set(self.r.hkeys(self._k("seg", segment)))

    def segment_size(self, segment: str) -> int:
        return int(self.r.hlen(self._k("seg", segment)))

    def segment_log(
        self,
        segment: str | None = None,
        user_id: str | None = None,
        since_us: int | None = None,
        until_us: int | None = None,
    ) -> list[MembershipChange]:
        if user_id is not None:
            ids = self.r.lrange(self._k("slu", user_id), 0, -1)
            pipe = self.r.pipeline(transaction=False)
            for i in ids:
                pipe.xrange(self._k("seglog"), i, i)
            entries = [e for res in pipe.execute() for e in res]
        else:
            entries = []
            start = "-"
            while True:
                chunk = self.r.xrange(self._k("seglog"), start, "+", count=5000)
                if not chunk:
                    break
                entries += chunk
                if len(chunk) < 5000:
                    break
                start = "(" + chunk[-1][0]
        out = []
        for _id, f in entries:
            m = MembershipChange(f["u"], f["s"], f["e"] == "1", int(f["t"]), f["g"])
            if segment is not None and m.segment != segment:
                continue
            if since_us is not None and m.at_us < since_us:
                continue
            if until_us is not None and m.at_us >= until_us:
                continue
            out.append(m)
        return out

    # -- privacy -------------------------------------------------------------------------
    def append_audit(self, body: dict[str, Any]) -> AuditRecord:
        text = canonical_json(body)
        head = self._k("audit", "head")
        with self.r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(head)
                    state = pipe.hgetall(head)
                    prev = state.get("hash", "")
                    seq = int(state.get("seq", 0)) + 1
                    digest = hashlib.sha256((prev + text).encode()).hexdigest()
                    pipe.multi()
                    pipe.xadd(self._k("audit"), {"seq": seq, "b": text, "prev": prev, "h": digest})
                    pipe.hset(head, mapping={"hash": digest, "seq": seq})
                    pipe.execute()
                    return AuditRecord(seq, body, prev, digest)
                except redis.WatchError:
                    continue

    def audit_records(self) -> list[AuditRecord]:
        return [
            AuditRecord(int(f["seq"]), json.loads(f["b"]), f["prev"], f["h"])
            for _id, f in self.r.xrange(self._k("audit"))
        ]

    def erase_user(self, user_id: str, tombstone: str) -> dict[str, int]:
        r = self.r
        fields = [str(f) for f in r.hkeys(self._k("u", user_id))]
        # Attributes and consent live in the user's hash here (own tables in SQLite):
        # counted per field, so both stores report (and audit) the same categories.
        counts: dict[str, int] = {
            "profile": int(bool(fields)),
            "attributes": sum(f.startswith("a:") for f in fields),
            "consent": sum(f.startswith("c:") for f in fields),
            "events": len(self.user_events(user_id)),
            "consent_history": int(r.llen(self._k("ch", user_id))),
            "active": int(r.zscore(self._k("active"), user_id) is not None),
        }
        dl_ids = r.lrange(self._k("dlu", user_id), 0, -1)
        log_ids = r.lrange(self._k("slu", user_id), 0, -1)
        segments = r.smembers(self._k("useg", user_id))
        event_ids = list(r.smembers(self._k("eu", user_id)))
        stream_ids, stream_events = self._stream_ids_of(user_id)
        pipe = r.pipeline(transaction=True)
        pipe.delete(
            self._k("u", user_id),
            self._k("ev", user_id),
            self._k("ch", user_id),
            self._k("dlu", user_id),
            self._k("slu", user_id),
            self._k("useg", user_id),
            self._k("eu", user_id),
        )
        for k in range(0, len(event_ids), 1000):
            pipe.hdel(self._k("eid"), *event_ids[k : k + 1000])
        if dl_ids:
            pipe.xdel(self._k("dl"), *dl_ids)
        if log_ids:
            pipe.xdel(self._k("seglog"), *log_ids)
        for s in segments:
            pipe.hdel(self._k("seg", s), user_id)
        pipe.zrem(self._k("active"), user_id)
        for key, ids in stream_ids.items():
            pipe.xack(key, self.group, *ids)
            pipe.xdel(key, *ids)
        pipe.sadd(self._k("erased"), tombstone)
        pipe.execute()
        counts.update(
            dead_letters=len(dl_ids),
            segment_log=len(log_ids),
            memberships=len(segments),
            stream=stream_events,
        )
        return counts

    def _stream_ids_of(self, user_id: str) -> tuple[dict[str, list[str]], int]:
        """Stream key -> ids of the user's entries, and the number of events
        they hold. Every partition is scanned: an entry's partition came from
        whatever the producer sent."""
        found: dict[str, list[str]] = {}
        events = 0
        for key in self.stream_keys:
            start = "-"
            while True:
                chunk = self.r.xrange(key, start, "+", count=5000)
                for entry_id, f in chunk:
                    # The entry's routing user, or any event it holds naming the user.
                    texts = [f["e"]] if "e" in f else f.get("g", "").split(GROUP_SEP)
                    if f.get("u") == user_id or any(stream_user_of(t) == user_id for t in texts):
                        found.setdefault(key, []).append(entry_id)
                        events += len(texts)
                if len(chunk) < 5000:
                    break
                start = "(" + chunk[-1][0]
        return found, events

    def erased(self) -> set[str]:
        return set(self.r.smembers(self._k("erased")))

    def close(self) -> None:
        self._channel.close()
        self.r.close()

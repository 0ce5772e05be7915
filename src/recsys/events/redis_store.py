"""Redis back end: Redis Streams with a consumer group, per-user hashes, Lua commits.

Key layout (``P`` is the configured prefix):

====================  ======  ================================================
key                   type    holds
====================  ======  ================================================
``P:stream``          stream  published events (fields ``e`` JSON, ``t`` publish us)
``P:u:<user>``        hash    ``v`` version, ``p`` profile JSON, ``a:<name>``
                              attributes, ``c:<purpose>`` consent
``P:ch:<user>``       list    consent history
``P:ev:<user>``       list    stored events (JSON)
``P:applied``         set     committed event ids (idempotency keys)
``P:dl``              stream  dead letters; ``P:dlu:<user>`` lists a user's ids
``P:seg:<segment>``   hash    members -> entry time; ``P:segments`` names them
``P:seglog``          stream  membership changes; ``P:slu:<user>`` a user's ids
``P:useg:<user>``     set     segments the user ever entered (for erasure)
``P:active``          zset    user -> latest event time
``P:audit``           stream  audit trail; ``P:audit:head`` last hash
``P:erased``          set     erasure tombstones
====================  ======  ================================================

:meth:`RedisStore.commit` is one Lua script, so Redis runs it atomically:
version checks and the idempotency check first (returning conflicts with
nothing written), then every write, then ``XACK``. Because the script touches
keys it computes, it needs a single Redis node (not Redis Cluster).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis

from recsys.events.deadletter import DeadLetter
from recsys.events.store import (
    AuditRecord,
    CommitBatch,
    Delivery,
    MembershipChange,
    UserRecord,
    canonical_json,
)

_COMMIT_LUA = """
local p, grp, stream = ARGV[1], ARGV[2], ARGV[3]
local b = cjson.decode(ARGV[4])
local bad = {}
for _, w in ipairs(b.w) do
  local cur = redis.call('HGET', p .. ':u:' .. w[1], 'v') or '0'
  if cur ~= w[2] then bad[#bad + 1] = w[1] end
end
local ids = b.i
for _, id in ipairs(ids) do
  if redis.call('SISMEMBER', p .. ':applied', id) == 1 then bad[#bad + 1] = 'dup:' .. id end
end
if #bad > 0 then return bad end
local function chunked(cmd, key, extra, list)
  local k = 0
  while k < #list do
    local last = math.min(k + 500, #list)
    if extra then
      redis.call(cmd, key, extra, unpack(list, k + 1, last))
    else
      redis.call(cmd, key, unpack(list, k + 1, last))
    end
    k = last
  end
end
for _, w in ipairs(b.w) do
  local key = p .. ':u:' .. w[1]
  redis.call('HSET', key, 'p', w[3])
  redis.call('HINCRBY', key, 'v', 1)
  if w[4] ~= '' then redis.call('ZADD', p .. ':active', 'GT', w[4], w[1]) end
end
for user, list in pairs(b.e) do chunked('RPUSH', p .. ':ev:' .. user, nil, list) end
chunked('SADD', p .. ':applied', nil, ids)
for _, d in ipairs(b.d) do
  local id = redis.call('XADD', p .. ':dl', '*', 'u', d[1], 'd', d[2])
  if d[1] ~= '' then redis.call('RPUSH', p .. ':dlu:' .. d[1], id) end
end
for _, m in ipairs(b.m) do
  local u, s, e, at, tr = m[1], m[2], m[3], m[4], m[5]
  if e == '1' then
    redis.call('HSET', p .. ':seg:' .. s, u, at)
    redis.call('SADD', p .. ':useg:' .. u, s)
    redis.call('SADD', p .. ':segments', s)
  else
    redis.call('HDEL', p .. ':seg:' .. s, u)
  end
  local id = redis.call('XADD', p .. ':seglog', '*', 'u', u, 's', s, 'e', e, 't', at, 'g', tr)
  redis.call('RPUSH', p .. ':slu:' .. u, id)
end
chunked('XACK', stream, grp, b.a)
return {}
"""

# Replies come back as one JSON string: a single bulk reply is far cheaper for
# the Python client to read than thousands of nested RESP elements.
_LOAD_LUA = """
local out = {}
for k = 2, #ARGV do
  local flat = redis.call('HGETALL', ARGV[1] .. ':u:' .. ARGV[k])
  if #flat == 0 then out[k - 1] = false else out[k - 1] = flat end
end
return cjson.encode(out)
"""

_APPLIED_LUA = """
local ids = cjson.decode(ARGV[2])
local out = {}
for k, id in ipairs(ids) do
  out[k] = redis.call('SISMEMBER', ARGV[1], id) == 1 and '1' or '0'
end
return table.concat(out)
"""

_READ_LUA = """
local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3],
                     'STREAMS', KEYS[1], ARGV[4])
if not r then return '[]' end
local applied = ARGV[5]
local out = {}
for _, e in ipairs(r[1][2]) do
  local f = e[2]
  if f then
    local m = {}
    for j = 1, #f, 2 do m[f[j]] = f[j + 1] end
    local payload = m['e'] or ''
    -- Idempotency check while reading saves the consumer a round trip; ids
    -- that are not strings are left to the consumer ('' = not checked).
    local flag = ''
    local ok, doc = pcall(cjson.decode, payload)
    if ok and type(doc) == 'table' and type(doc.event_id) == 'string' then
      flag = redis.call('SISMEMBER', applied, doc.event_id) == 1 and '1' or '0'
    end
    out[#out + 1] = {e[1], payload, m['t'] or '0', flag}
  else
    out[#out + 1] = {e[1], '', '0', ''}
  end
end
if #out == 0 then return '[]' end
return cjson.encode(out)
"""


def _now_us() -> int:
    return time.time_ns() // 1000


class RedisStore:
    """:class:`~recsys.events.store.RealtimeStore` on one Redis server.

    Args:
        url: ``redis://host:port/db``.
        prefix: prefix of every key (lets tests and tenants share a server).
        group: consumer group name of the stream.
        stream_maxlen: approximate cap on stream length (``XADD MAXLEN ~``);
            None keeps every entry. Set it well above the worst backlog:
            Redis trims unread entries too.

    Example:
        >>> store = RedisStore("redis://127.0.0.1:6379/0", prefix="rt")  # doctest: +SKIP
    """

    def __init__(
        self,
        url: str,
        prefix: str = "rt",
        group: str = "profiles",
        stream_maxlen: int | None = None,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.group = group
        self.stream_maxlen = stream_maxlen
        # decode_responses=True makes every reply str; the client's stubs cannot express that.
        self.r: Any = redis.Redis.from_url(url, decode_responses=True)
        self.stream_key = f"{prefix}:stream"
        self._commit = self.r.register_script(_COMMIT_LUA)
        self._load = self.r.register_script(_LOAD_LUA)
        self._read = self.r.register_script(_READ_LUA)
        self._applied = self.r.register_script(_APPLIED_LUA)
        try:
            self.r.xgroup_create(self.stream_key, group, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # -- stream ---------------------------------------------------------------------
    def publish(self, payloads: Sequence[str], published_us: int | None = None) -> list[str]:
        pipe = self.r.pipeline(transaction=False)
        ts = str(published_us if published_us is not None else _now_us())
        for p in payloads:
            pipe.xadd(
                self.stream_key,
                {"e": p, "t": ts},
                maxlen=self.stream_maxlen,
                approximate=True,
            )
        return [str(x) for x in pipe.execute()]

    def _deliveries(self, reply: Any) -> list[Delivery]:
        out: list[Delivery] = []
        for _key, entries in reply or ():
            for entry_id, fields in entries:
                if fields is None:  # deleted after delivery (erasure): acknowledge-only
                    out.append(Delivery(entry_id, "", 0))
                else:
                    out.append(Delivery(entry_id, fields.get("e", ""), int(fields.get("t", 0))))
        return out

    def read(self, consumer: str, count: int, block_ms: int, pending: bool) -> list[Delivery]:
        # Non-blocking read through a script (one JSON reply); only when the
        # stream is idle does the client block in a plain XREADGROUP.
        rows = json.loads(
            self._read(
                keys=[self.stream_key],
                args=[self.group, consumer, count, "0" if pending else ">", self._k("applied")],
            )
        )
        if rows:
            flags = {"1": True, "0": False, "": None}
            return [Delivery(r[0], r[1], int(r[2]), flags[r[3]]) for r in rows]
        if pending or block_ms <= 0:
            return []
        reply = self.r.xreadgroup(
            self.group, consumer, {self.stream_key: ">"}, count=count, block=block_ms
        )
        return self._deliveries(reply)

    def claim_stale(self, consumer: str, min_idle_ms: int, count: int) -> list[Delivery]:
        reply = self.r.xautoclaim(
            self.stream_key, self.group, consumer, min_idle_time=min_idle_ms, count=count
        )
        entries = reply[1]
        return self._deliveries([(self.stream_key, entries)])

    def stream_stats(self) -> dict[str, int]:
        length = int(self.r.xlen(self.stream_key))
        info = self.r.xpending(self.stream_key, self.group)
        return {"length": length, "pending": int(info["pending"])}

    # -- per-user records ----------------------------------------------------------
    def load_users(self, user_ids: Sequence[str]) -> dict[str, UserRecord]:
        if not user_ids:
            return {}
        rows = json.loads(self._load(args=[self.prefix, *user_ids]))
        out: dict[str, UserRecord] = {}
        for uid, flat in zip(user_ids, rows, strict=True):
            rec = UserRecord(uid)
            for j in range(0, len(flat) if flat else 0, 2):
                name, value = flat[j], flat[j + 1]
                if name == "v":
                    rec.version = int(value)
                elif name == "p":
                    rec.profile = value
                elif name.startswith("a:"):
                    rec.attributes[name[2:]] = value
                elif name.startswith("c:"):
                    rec.consent[name[2:]] = value
            out[uid] = rec
        return out

    def applied(self, event_ids: Sequence[str]) -> set[str]:
        if not event_ids:
            return set()
        flags = self._applied(args=[self._k("applied"), json.dumps(list(event_ids))])
        return {e for e, f in zip(event_ids, flags, strict=True) if f == "1"}

    def commit(self, batch: CommitBatch) -> list[str]:
        events: dict[str, list[str]] = {}
        for uid, text in batch.events:
            events.setdefault(uid, []).append(text)
        # Numbers travel as strings: Lua's cjson reads numbers as doubles and
        # would print large microsecond times in exponent form.
        payload = {
            "w": [
                [w.user_id, str(w.expected_version), w.doc, str(batch.last_seen.get(w.user_id, ""))]
                for w in batch.profiles
            ],
            "e": events,
            "i": batch.applied_ids,
            "d": [[d.user_id or "", d.to_json()] for d in batch.dead_letters],
            "m": [
                [m.user_id, m.segment, "1" if m.entered else "0", str(m.at_us), m.trigger]
                for m in batch.memberships
            ],
            "a": batch.acks,
        }
        text = json.dumps(payload, separators=(",", ":"))
        args = [self.prefix, self.group, self.stream_key, text]
        return [str(x) for x in self._commit(args=args)]

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
        return list(self.r.lrange(self._k("ev", user_id), 0, -1))

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
        counts: dict[str, int] = {
            "profile": int(r.exists(self._k("u", user_id))),
            "events": int(r.llen(self._k("ev", user_id))),
            "consent_history": int(r.llen(self._k("ch", user_id))),
        }
        dl_ids = r.lrange(self._k("dlu", user_id), 0, -1)
        log_ids = r.lrange(self._k("slu", user_id), 0, -1)
        segments = r.smembers(self._k("useg", user_id))
        stream_ids = self._stream_ids_of(user_id)
        pipe = r.pipeline(transaction=True)
        pipe.delete(
            self._k("u", user_id),
            self._k("ev", user_id),
            self._k("ch", user_id),
            self._k("dlu", user_id),
            self._k("slu", user_id),
            self._k("useg", user_id),
        )
        if dl_ids:
            pipe.xdel(self._k("dl"), *dl_ids)
        if log_ids:
            pipe.xdel(self._k("seglog"), *log_ids)
        for s in segments:
            pipe.hdel(self._k("seg", s), user_id)
        pipe.zrem(self._k("active"), user_id)
        if stream_ids:
            pipe.xack(self.stream_key, self.group, *stream_ids)
            pipe.xdel(self.stream_key, *stream_ids)
        pipe.sadd(self._k("erased"), tombstone)
        pipe.execute()
        counts.update(
            dead_letters=len(dl_ids),
            segment_log=len(log_ids),
            memberships=len(segments),
            stream=len(stream_ids),
        )
        return counts

    def _stream_ids_of(self, user_id: str) -> list[str]:
        ids: list[str] = []
        start = "-"
        while True:
            chunk = self.r.xrange(self.stream_key, start, "+", count=5000)
            for entry_id, f in chunk:
                try:
                    raw = json.loads(f.get("e", ""))
                except ValueError:
                    continue
                if isinstance(raw, dict) and str(raw.get("user_id")) == user_id:
                    ids.append(entry_id)
            if len(chunk) < 5000:
                return ids
            start = "(" + chunk[-1][0]

    def erased(self) -> set[str]:
        return set(self.r.smembers(self._k("erased")))

    def close(self) -> None:
        self.r.close()

"""What the Redis store's hot calls send and receive, as plain functions.

:class:`~recsys.events.redis_store.RedisStore` keeps the connection, the
scripts and the key names; this module turns its arguments into the strings
the Lua scripts take and their replies back into deliveries. It holds no
state and touches no socket, so a consumer's per-batch encoding and decoding
can be compiled with the other per-event modules (``RECSYS_MYPYC=1``,
``docs/realtime.md``, "Deploying consumers").

Lists travel as one string: ``Z`` and the elements joined with NUL, or ``J``
and a JSON array when an element itself holds a NUL (validated events and the
documents the package writes never do: JSON escapes control characters).

Example:
    >>> split_list(join_list(["a", "b"]))
    ['a', 'b']
    >>> [d.entry_id for d in expand("1-0", "7", "u1", "", "g{}" + GROUP_SEP + "{}")]
    ['1-0/0', '1-0/1']
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from recsys.events.store import CommitBatch, Delivery, partition_of, stream_user_of

__all__ = [
    "GROUP_SEP",
    "chunk_events",
    "commit_args",
    "delivered",
    "entry_of",
    "event_chunk",
    "expand",
    "join_list",
    "pack_command",
    "parse_read",
    "publish_args",
    "publish_ids",
    "split_list",
]

# Joins a user's events of one publish call in one stream entry (field ``g``).
# JSON text never holds it raw (JSON escapes control characters), so it can only
# split an invalid payload, and payloads holding it travel alone (field ``e``).
GROUP_SEP = "\x1e"


def join_list(items: Sequence[str]) -> str:
    """A list as one string for the Lua side.

    Args:
        items: the elements.

    Returns:
        ``""`` for no elements, else ``Z`` + NUL-joined, or ``J`` + JSON.
    """
    if not items:
        return ""
    text = "\0".join(items)
    if text.count("\0") == len(items) - 1:
        return "Z" + text
    return "J" + json.dumps(list(items), separators=(",", ":"), ensure_ascii=False)


def split_list(text: str) -> list[str]:
    """Reads back a list the Lua side encoded (the inverse of :func:`join_list`)."""
    if not text:
        return []
    if text[0] == "J":
        return [str(x) for x in json.loads(text[1:])]
    return text[1:].split("\0")


def event_chunk(texts: Sequence[str]) -> str:
    """One list element holding a user's events of a batch: ``Y`` and the
    texts joined by U+0001, or ``J`` and a JSON array when a text holds U+0000
    or U+0001 (validated events never do). One element per user and batch
    instead of one per event saves the commit most of its list work."""
    text = "\x01".join(texts)
    if "\0" not in text and text.count("\x01") == len(texts) - 1:
        return "Y" + text
    return "J" + json.dumps(list(texts), ensure_ascii=False)


def chunk_events(chunk: str) -> list[str]:
    """The events in a stored element (a single JSON event is one event)."""
    if chunk[:1] == "Y":
        return chunk[1:].split("\x01")
    if chunk[:1] == "J":
        return [str(x) for x in json.loads(chunk[1:])]
    return [chunk]


def expand(entry_id: str, published: str, user: str, version: str, body: str) -> list[Delivery]:
    """The deliveries of one stream entry: one per event it holds.

    Events of a grouped entry get ids ``<entry id>/<index>`` (unique, for dead
    letters); acknowledging any of them acknowledges the entry.

    Args:
        entry_id: the entry's id, with its partition label.
        published: publish time, epoch us, as text.
        user: the user the entry was routed by ("" when unknown).
        version: the user's record version as text ("" when unknown).
        body: ``e`` + one event, ``g`` + events joined by :data:`GROUP_SEP`,
            or "" for an entry deleted after delivery (acknowledge-only).

    Returns:
        The deliveries, in order.
    """
    if not body:
        return [Delivery(entry_id, "", 0)]
    ts = int(published)
    uid = user or None
    ver = int(version) if version else None
    if body[0] != "g":
        return [Delivery(entry_id, body[1:], ts, None, uid, ver)]
    return [
        Delivery(f"{entry_id}/{j}", text, ts, None, uid, ver)
        for j, text in enumerate(body[1:].split(GROUP_SEP))
    ]


def delivered(entry_id: str, fields: list[bytes] | None) -> list[Delivery]:
    """The deliveries of one entry as ``XREADGROUP`` returns it (field names
    and values alternating, as bytes; None when deleted after delivery)."""
    if fields is None:
        return [Delivery(entry_id, "", 0)]
    values = dict(zip(fields[::2], fields[1::2], strict=True))
    if b"e" in values:
        body = "e" + values[b"e"].decode("utf-8", "replace")
    elif b"g" in values:
        body = "g" + values[b"g"].decode("utf-8", "replace")
    else:
        body = "e"  # no payload field: an empty event (a dead letter)
    user = values.get(b"u", b"").decode("utf-8", "replace")
    hint = values.get(b"v", b"").decode("ascii", "replace") if user else ""
    return expand(
        entry_id, values.get(b"t", b"0").decode(), user, hint if hint.isdigit() else "", body
    )


def pack_command(args: Sequence[bytes]) -> bytes:
    """One command in the Redis protocol. redis-py's packer spends about
    2 us per argument in Python; this one about a quarter of that, which
    matters for publishing (one argument per event)."""
    return b"*%d\r\n" % len(args) + b"".join([b"$%d\r\n%b\r\n" % (len(a), a) for a in args])


def parse_read(text: str) -> tuple[list[Delivery], int]:
    """The read script's reply: five elements per entry (id, publish us,
    user, record version, body as in :func:`expand`).

    Returns:
        The deliveries and the number of entries they came from.
    """
    parts = split_list(text)
    out: list[Delivery] = []
    entries = 0
    for i in range(0, len(parts), 5):
        entries += 1
        body = parts[i + 4]
        if body[:1] == "e":  # the common case, inline
            ver = parts[i + 3]
            out.append(
                Delivery(
                    parts[i],
                    body[1:],
                    int(parts[i + 1]),
                    None,
                    parts[i + 2] or None,
                    int(ver) if ver else None,
                )
            )
        else:
            out += expand(parts[i], parts[i + 1], parts[i + 2], parts[i + 3], body)
    return out, entries


def entry_of(entry_id: str, partitions: int) -> tuple[int, str]:
    """(partition, stream id) of an entry id (or of an event in a grouped entry)."""
    sid = entry_id.partition("/")[0]
    if partitions == 1:
        return 0, sid
    k, _, sid = sid.partition(":")
    return int(k), sid


def commit_args(
    prefix: str, group: str, stream_keys: Sequence[str], batch: CommitBatch
) -> list[str]:
    """The eight arguments of the Lua ``commit`` function.

    Args:
        prefix: the store's key prefix.
        group: the consumer group.
        stream_keys: the stream key of each partition.
        batch: what to commit.

    Returns:
        prefix, group, then the lists (profile writes, event chunks per user,
        applied ids, dead letters, membership changes, acknowledgements),
        each joined by :func:`join_list`.
    """
    last_seen = batch.last_seen
    writes: list[str] = []
    for w in batch.profiles:
        seen = last_seen.get(w.user_id)
        writes += (w.user_id, str(w.expected_version), w.doc, "" if seen is None else str(seen))
    per_user: dict[str, list[str]] = {}
    for uid, text in batch.events:
        texts = per_user.get(uid)
        if texts is None:
            per_user[uid] = [text]
        else:
            texts.append(text)
    events: list[str] = []
    for uid, texts in per_user.items():
        events += (uid, event_chunk(texts))
    letters: list[str] = []
    for d in batch.dead_letters:
        letters += (d.user_id or "", d.to_json())
    changes: list[str] = []
    for m in batch.memberships:
        changes += (m.user_id, m.segment, "1" if m.entered else "0", str(m.at_us), m.trigger)
    acks: list[str] = []
    # Events of one grouped entry share its acknowledgement.
    partitions = len(stream_keys)
    by_partition: dict[int, dict[str, None]] = {}
    for entry_id in batch.acks:
        k, sid = entry_of(entry_id, partitions)
        ids = by_partition.get(k)
        if ids is None:
            by_partition[k] = ids = {}
        ids[sid] = None
    for k, sids in by_partition.items():
        acks += (stream_keys[k], str(len(sids)), *sids)
    return [
        prefix,
        group,
        join_list(writes),
        join_list(events),
        join_list(batch.applied_ids),
        join_list(letters),
        join_list(changes),
        join_list(acks),
    ]


def publish_args(
    prefix: str,
    published_us: int,
    maxlen: int | None,
    stream_keys: Sequence[str],
    payloads: Sequence[str],
    users: Sequence[str | None] | None,
    group: bool,
) -> tuple[list[str], list[str], list[list[list[int]]]]:
    """The publish script's keys and arguments.

    With ``group`` a user's events of one call share one entry (field ``g``);
    events without a known user travel one per entry (field ``e``).

    Args:
        prefix: the store's key prefix.
        published_us: the publish time stamped on every entry.
        maxlen: approximate cap on a partition's length, or None.
        stream_keys: the stream key of each partition.
        payloads: the events (JSON text).
        users: each payload's user (None: read from the payloads when the
            stream has several partitions).
        group: group a user's events in one entry.

    Returns:
        The keys, the arguments, and per partition its entries (payload
        indices, in order of first event) for :func:`publish_ids`.
    """
    n = len(stream_keys)
    if users is None and n > 1:
        users = [stream_user_of(p) for p in payloads]
    entries: list[list[list[int]]] = [[] for _ in range(n)]
    owners: list[list[str]] = [[] for _ in range(n)]
    open_groups: list[dict[str, list[int]]] = [{} for _ in range(n)]
    for i, payload in enumerate(payloads):
        uid = users[i] if users is not None else None
        k = partition_of(uid, n) if n > 1 else 0
        if not uid or not group or GROUP_SEP in payload:
            entries[k].append([i])
            owners[k].append(uid or "")
            continue
        members = open_groups[k].get(uid)
        if members is None:
            members = [i]
            open_groups[k][uid] = members
            entries[k].append(members)
            owners[k].append(uid)
        else:
            members.append(i)
    keys: list[str] = []
    args: list[str] = [prefix, str(published_us), "" if maxlen is None else str(maxlen)]
    for k in range(n):
        if not entries[k]:
            continue
        keys.append(stream_keys[k])
        args.append(str(len(entries[k])))
        for members, uid in zip(entries[k], owners[k], strict=True):
            if len(members) == 1:
                args += ("e", uid, payloads[members[0]])
            else:
                args += ("g", uid, GROUP_SEP.join([payloads[i] for i in members]))
    return keys, args, entries


def publish_ids(
    ids: Sequence[str], labels: Sequence[str], entries: list[list[list[int]]], n: int
) -> list[str]:
    """Each payload's id from the publish script's entry ids.

    Args:
        ids: the new entries' stream ids, in the order of the arguments.
        labels: each partition's label (``"<k>:"``, or "" with one partition).
        entries: :func:`publish_args`'s entries.
        n: the number of payloads.

    Returns:
        Per payload its entry id, ``<entry id>/<index>`` inside a grouped entry.
    """
    out = [""] * n
    pos = 0
    for k in range(len(labels)):
        label = labels[k]
        for members in entries[k]:
            sid = label + ids[pos]
            pos += 1
            if len(members) == 1:
                out[members[0]] = sid
            else:
                for j, i in enumerate(members):
                    out[i] = f"{sid}/{j}"
    return out

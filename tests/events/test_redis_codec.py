"""The Redis store's encoding of script arguments and decoding of replies."""

from __future__ import annotations

import pytest

from recsys.events.deadletter import DeadLetter
from recsys.events.redis_codec import (
    GROUP_SEP,
    chunk_events,
    commit_args,
    delivered,
    entry_of,
    event_chunk,
    expand,
    join_list,
    pack_command,
    parse_read,
    publish_args,
    publish_ids,
    split_list,
)
from recsys.events.store import CommitBatch, Delivery, MembershipChange, ProfileWrite, partition_of


@pytest.mark.parametrize(
    "items", [[], ["a"], ["a", "", "c"], ["x\0y", "z"], ["é", "\x01"], ['{"a":1}', "[]"]]
)
def test_lists_round_trip(items: list[str]) -> None:
    text = join_list(items)
    assert split_list(text) == items
    # NUL inside an element switches to JSON, never to a wrong split.
    assert text[:1] == ("" if not items else "J" if any("\0" in x for x in items) else "Z")


@pytest.mark.parametrize("texts", [["{}"], ["{}", '{"a":"b"}'], ["x\x01y", "z"], ["a\0", "b"]])
def test_event_chunks_round_trip(texts: list[str]) -> None:
    chunk = event_chunk(texts)
    assert chunk_events(chunk) == texts
    assert chunk[0] == ("Y" if all("\0" not in t and "\x01" not in t for t in texts) else "J")


def test_a_plain_stored_event_is_one_event() -> None:
    assert chunk_events('{"event_id":"e"}') == ['{"event_id":"e"}']


def test_expand_gives_each_event_of_a_grouped_entry_its_own_id() -> None:
    body = "g" + GROUP_SEP.join(["{1}", "{2}", "{3}"])
    out = expand("2:5-0", "17", "u1", "4", body)
    assert [d.entry_id for d in out] == ["2:5-0/0", "2:5-0/1", "2:5-0/2"]
    assert [d.payload for d in out] == ["{1}", "{2}", "{3}"]
    assert {(d.published_us, d.user_id, d.user_version, d.applied) for d in out} == {
        (17, "u1", 4, None)
    }


def test_expand_single_unknown_user_and_deleted_entries() -> None:
    assert expand("5-0", "3", "", "", "e{x}") == [Delivery("5-0", "{x}", 3, None, None, None)]
    assert expand("5-0", "3", "u", "", "") == [Delivery("5-0", "", 0)]


def test_delivered_reads_xreadgroup_fields() -> None:
    fields = [b"t", b"9", b"u", b"u1", b"v", b"2", b"g", ("{a}" + GROUP_SEP + "{b}").encode()]
    out = delivered("0:1-1", fields)
    assert [(d.entry_id, d.payload, d.user_version) for d in out] == [
        ("0:1-1/0", "{a}", 2),
        ("0:1-1/1", "{b}", 2),
    ]
    # A version hint that is not a number is ignored, not trusted.
    bad = delivered("1-1", [b"t", b"9", b"u", b"u1", b"v", b"x", b"e", b"{}"])
    assert bad[0].user_version is None
    # No payload field: an empty event (it becomes a dead letter downstream).
    assert delivered("1-2", [b"t", b"9"])[0].payload == ""
    assert delivered("1-3", None) == [Delivery("1-3", "", 0)]


def test_pack_command_is_the_redis_protocol() -> None:
    packed = pack_command([b"SET", b"k", b"a\r\nb"])
    assert packed == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n"


def test_parse_read_counts_entries_not_events() -> None:
    parts = ["1-0", "5", "u1", "3", "e{a}", "2-0", "6", "u2", "", "g{b}" + GROUP_SEP + "{c}"]
    out, entries = parse_read(join_list(parts))
    assert entries == 2
    assert [(d.entry_id, d.payload, d.user_id, d.user_version) for d in out] == [
        ("1-0", "{a}", "u1", 3),
        ("2-0/0", "{b}", "u2", None),
        ("2-0/1", "{c}", "u2", None),
    ]
    assert parse_read("") == ([], 0)


def test_entry_of_strips_group_index_and_partition_label() -> None:
    assert entry_of("3-1/4", 1) == (0, "3-1")
    assert entry_of("2:3-1/4", 4) == (2, "3-1")
    assert entry_of("1:3-1", 4) == (1, "3-1")


def test_commit_args_groups_events_per_user_and_acks_per_entry() -> None:
    letter = DeadLetter(1, "stream", ("bad",), None, "u9", "{")
    batch = CommitBatch(
        profiles=[ProfileWrite("u1", 0, "{}"), ProfileWrite("u2", 3, '{"n":1}')],
        events=[("u1", "{a}"), ("u2", "{b}"), ("u1", "{c}")],
        applied_ids=["e1", "e2", "e3"],
        dead_letters=[letter],
        memberships=[MembershipChange("u1", "s", True, 12, "e1")],
        last_seen={"u1": 99},
        acks=["0:1-0/0", "0:1-0/1", "1:2-0"],
    )
    args = commit_args("P", "G", ["P:stream:0", "P:stream:1"], batch)
    assert args[:2] == ["P", "G"]
    writes, events, applied, letters, changes, acks = (split_list(a) for a in args[2:])
    assert writes == ["u1", "0", "{}", "99", "u2", "3", '{"n":1}', ""]
    assert events[0::2] == ["u1", "u2"]
    assert [chunk_events(c) for c in events[1::2]] == [["{a}", "{c}"], ["{b}"]]
    assert applied == ["e1", "e2", "e3"]
    assert letters == ["u9", letter.to_json()]
    assert changes == ["u1", "s", "1", "12", "e1"]
    assert acks == ["P:stream:0", "1", "1-0", "P:stream:1", "1", "2-0"]


def test_publish_args_and_ids_group_a_users_events_per_partition() -> None:
    keys = ["P:stream:0", "P:stream:1"]
    users = ["a", "b", "a", None, "b"]
    payloads = ["{1}", "{2}", "{3}", "{4}", "{5}" + GROUP_SEP]
    used, args, entries = publish_args("P", 77, 1000, keys, payloads, users, True)
    assert args[:3] == ["P", "77", "1000"]
    # Entries per partition: a user's events together, unknown users and
    # payloads holding the separator alone.
    flat = [sorted(m) for part in entries for m in part]
    assert sorted(flat) == [[0, 2], [1], [3], [4]]
    assert all(partition_of(users[m[0]], 2) == k for k, part in enumerate(entries) for m in part)
    assert used == [keys[k] for k in range(2) if entries[k]]
    ids = [f"{n}-0" for n in range(sum(len(p) for p in entries))]
    labels = ["0:", "1:"]
    out = publish_ids(ids, labels, entries, len(payloads))
    grouped = next(m for part in entries for m in part if m == [0, 2])
    k = next(k for k, part in enumerate(entries) if grouped in part)
    assert out[0].startswith(labels[k]) and out[0].endswith("/0") and out[2].endswith("/1")
    assert out[0].rsplit("/", 1)[0] == out[2].rsplit("/", 1)[0]
    assert "/" not in out[1] and "/" not in out[3] and "/" not in out[4]
    assert len(set(out)) == len(out)


def test_publish_args_without_grouping_or_maxlen() -> None:
    _, args, entries = publish_args("P", 5, None, ["P:stream"], ["{1}", "{2}"], ["a", "a"], False)
    assert args == ["P", "5", "", "2", "e", "a", "{1}", "e", "a", "{2}"]
    assert entries == [[[0], [1]]]

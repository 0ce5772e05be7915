"""Reading event JSON: orjson when installed, exactly the standard library's result."""

from __future__ import annotations

import json

import pytest

from recsys.events import validation
from recsys.events.validation import decode_json

# Text orjson and the standard library read alike, and text only the standard
# library reads, or reads differently (integers beyond 64 bits).
TEXTS = [
    '{"event_id":"e1","user_id":"u1","type":"click","item_id":214716935,"x":[1.5,-0.0,1e5]}',
    '{"a": 1, "a": 2}',
    '{"item_id": 123456789012345678901}',
    '{"item_id": -9223372036854775809}',
    '{"item_id": 18446744073709551615}',
    '{"price": NaN, "x": Infinity}',
    '{"q": "\\ud800"}',
    '{"q": "\ud800"}',  # a lone surrogate in the text itself, not escaped
    "[1e400]",
    "[" * 500 + "]" * 500,
]
INVALID = ['{"a": 1,}', "", '{"a": 1}x', "\ufeff{}", '{"a": "\x00"}']


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("fast", [True, False])
def test_decode_json_reads_what_the_standard_library_reads(
    text: str, fast: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not fast:
        monkeypatch.setattr(validation, "_orjson", None)
    got, want = decode_json(text), json.loads(text)
    # repr: the same types (an int stays an int) and NaN compares by its text.
    assert repr(got) == repr(want)


@pytest.mark.parametrize("text", INVALID)
def test_decode_json_fails_as_the_standard_library_fails(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as want:
        json.loads(text)
    with pytest.raises(json.JSONDecodeError) as got:
        decode_json(text)
    assert str(got.value) == str(want.value)


def test_decode_json_nesting_past_the_standard_library_limit_raises_as_it_does() -> None:
    text = "[" * 100_000 + "]" * 100_000
    with pytest.raises(RecursionError):
        json.loads(text)
    with pytest.raises(RecursionError):
        decode_json(text)


def test_payload_with_a_long_integer_is_read_exactly() -> None:
    # 2**64 + 1 read by orjson alone would become 1.8446744073709552e+19.
    assert decode_json('{"item_id": 18446744073709551617}')["item_id"] == 2**64 + 1

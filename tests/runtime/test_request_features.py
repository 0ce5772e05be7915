"""The request-feature encoder shared by training examples and served requests."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.runtime.context import DEVICE_TYPES, RequestContext
from recsys.runtime.request_features import (
    UNKNOWN_ID,
    RequestFeature,
    encode_contexts,
    encode_requests,
)

HOUR = RequestFeature("ctx_hour", "local_hour", 25)
WEEKDAY = RequestFeature("ctx_weekday", "weekday", 8)
DAYPART = RequestFeature("ctx_daypart", "daypart", 5)
DEVICE = RequestFeature("ctx_device", "device_type", 1 + len(DEVICE_TYPES))
SURFACE = RequestFeature("ctx_surface", "surface", 32)
SEGMENTS = RequestFeature("user_segments", "segments", 5, max_len=3)
ALL = [HOUR, WEEKDAY, DAYPART, DEVICE, SURFACE]


def test_time_features_agree_with_the_request_context() -> None:
    rng = np.random.default_rng(0)
    times_ms = rng.integers(946_684_800_000, 4_102_444_800_000, 300)
    offsets = rng.integers(-720, 841, 300)
    contexts = [
        RequestContext.from_values(request_time_ms=int(t), utc_offset_minutes=int(o))
        for t, o in zip(times_ms, offsets, strict=True)
    ]
    ids = encode_contexts(ALL[:3], contexts).ids[:, :, 0]
    assert ids[:, 0].tolist() == [1 + c.local_hour for c in contexts]  # type: ignore[operator]
    assert ids[:, 1].tolist() == [1 + c.weekday for c in contexts]  # type: ignore[operator]
    assert ids[:, 2].tolist() == [1 + c.local_hour // 6 for c in contexts]  # type: ignore[operator]
    # the offline path: seconds and offsets as arrays gives the same ids
    offline = encode_requests(ALL[:3], times_ms / 1000.0, offsets).ids[:, :, 0]
    np.testing.assert_array_equal(offline, ids)


def test_an_unknown_context_is_the_unknown_bucket_never_a_clock() -> None:
    ids = encode_contexts(ALL, [RequestContext()]).ids
    assert (ids[0, :, 0] == UNKNOWN_ID).all()
    nan = encode_requests(ALL, request_time_s=[np.nan], devices=[None], surfaces=[""]).ids
    assert (nan[0, :, 0] == UNKNOWN_ID).all()


def test_devices_and_surfaces() -> None:
    enc = encode_requests(
        [DEVICE, SURFACE],
        devices=["mobile", "desktop", "smart-fridge", None],
        surfaces=["home", "home", "search", None],
    )
    ids = enc.ids[:, :, 0]
    assert ids[:, 0].tolist() == [
        1 + DEVICE_TYPES.index("mobile"),
        1 + DEVICE_TYPES.index("desktop"),
        UNKNOWN_ID,
        UNKNOWN_ID,
    ]
    assert enc.unknown_devices == 1
    assert ids[0, 1] == ids[1, 1] != ids[2, 1]
    assert 0 < ids[0, 1] < SURFACE.size and ids[3, 1] == UNKNOWN_ID


def test_unknown_segments_are_dropped_and_counted_never_remapped() -> None:
    vocab = {"a": 1, "b": 2, "c": 3, "d": 4}
    enc = encode_requests(
        [SEGMENTS],
        segments=[["b", "zz", "a"], [], ["d", "c", "b", "a"], ["zz", "yy"]],
        segment_vocab=vocab,
    )
    ids = enc.ids[:, 0, :]
    assert ids[0].tolist() == [1, 2, -1]
    assert ids[1].tolist() == [-1, -1, -1]
    assert ids[2].tolist() == [1, 2, 3]  # max_len 3 keeps the first ids
    assert ids[3].tolist() == [-1, -1, -1]
    assert enc.dropped_segments == 3 and enc.dropped_names == {"zz": 2, "yy": 1}
    with pytest.raises(ValueError, match="segment vocabulary"):
        encode_requests([SEGMENTS], segments=[["a"]])


def test_bad_specs_and_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown source"):
        RequestFeature("x", "moon_phase", 8)
    with pytest.raises(ValueError, match="needs size 25"):
        RequestFeature("x", "local_hour", 24)
    with pytest.raises(ValueError, match="different lengths"):
        encode_requests([HOUR, DEVICE], request_time_s=[1.0, 2.0], devices=["mobile"])
    spec = RequestFeature.from_json(SEGMENTS.to_json())
    assert spec == SEGMENTS

"""The ranker's request features: one encoder for training examples and for requests.

A request feature (role ``request`` of the feature schema, declared under
``request_features`` in ``configs/schema/*.yaml``) describes the request a candidate
list answers rather than the user or the item: the local hour, weekday and quarter of
the day of the request time, the device class, the surface, and the user's segments.
:func:`encode_requests` turns them into the ranker's padded ids ``[R, F, L]``; offline,
:mod:`recsys.recommend.ranker_data` calls it with each training example's request (the
held-out interaction's own time and device), and the ``recommend`` engine calls it with
the parsed :class:`~recsys.runtime.context.RequestContext` and the segments read with
the profile (:func:`encode_contexts`). Nothing else computes these ids.

Encoding (``source`` of each feature):

=================  ================================================================
``local_hour``     1 + hour of day at the user (UTC + offset; 0 offset when unknown)
``weekday``        1 + day of week at the user (Monday = 1)
``daypart``        1 + quarter of the local day: 0-6, 6-12, 12-18, 18-24 h
``device_type``    1 + index in :data:`~recsys.runtime.context.DEVICE_TYPES`
``surface``        1 + CRC-32 of the UTF-8 surface name modulo ``size - 1``
``segments``       1 + index of each segment name in the segment vocabulary (a bag)
=================  ================================================================

Id 0 is the explicit *unknown* bucket: a request without a time, device or surface
gets it, never a value from the training clock. A segment name outside the vocabulary
is dropped (and counted), never mapped to another segment's id; a device name that is
not a device class goes to unknown (and is counted).

Numpy and the standard library only (Python 3.10): this runs in Triton's python backend.

Example:
    >>> spec = RequestFeature("ctx_hour", "local_hour", 25)
    >>> enc = encode_requests([spec], request_time_s=[3600.0 * 7, float("nan")],
    ...                       utc_offset_minutes=[60, 0])
    >>> enc.ids[:, 0, 0].tolist()
    [9, 0]
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recsys.runtime.context import DEVICE_TYPES, RequestContext

__all__ = [
    "DAYPART_HOURS",
    "SOURCES",
    "UNKNOWN_ID",
    "RequestEncoding",
    "RequestFeature",
    "encode_contexts",
    "encode_requests",
]

SOURCES: tuple[str, ...] = (
    "local_hour",
    "weekday",
    "daypart",
    "device_type",
    "surface",
    "segments",
)
"""What a request feature can be computed from."""

UNKNOWN_ID = 0
"""The id of an unknown value (no request time, device, surface)."""

DAYPART_HOURS = 6
"""Hours per ``daypart`` bucket (four parts of the day)."""

_SIZES = {"local_hour": 25, "weekday": 8, "daypart": 1 + 24 // DAYPART_HOURS}
_SIZES["device_type"] = 1 + len(DEVICE_TYPES)


@dataclass(frozen=True)
class RequestFeature:
    """One request feature as the runtime needs it.

    Attributes:
        name: the feature (the ranker's KJT key).
        source: one of :data:`SOURCES`.
        size: embedding rows (ids are ``0..size-1``); for ``segments`` 1 + the
            vocabulary's length.
        max_len: ids per request (1, or the most segments kept).
    """

    name: str
    source: str
    size: int
    max_len: int = 1

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(
                f"request feature {self.name!r}: unknown source {self.source!r}; "
                f"known: {list(SOURCES)}"
            )
        need = _SIZES.get(self.source)
        if need is not None and self.size != need:
            raise ValueError(
                f"request feature {self.name!r} ({self.source}) needs size {need}, got {self.size}"
            )
        if self.size < 2 or self.max_len < 1:
            raise ValueError(f"request feature {self.name!r}: size >= 2 and max_len >= 1 needed")
        if self.source != "segments" and self.max_len != 1:
            raise ValueError(f"request feature {self.name!r} holds one id (max_len 1)")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "size": self.size,
            "max_len": self.max_len,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> RequestFeature:
        return cls(str(raw["name"]), str(raw["source"]), int(raw["size"]), int(raw["max_len"]))


@dataclass
class RequestEncoding:
    """What :func:`encode_requests` made.

    Attributes:
        ids: ``[R, F, L]`` int64 ids, ``-1`` = padding (a bag's empty slots).
        dropped_segments: segment names outside the vocabulary (dropped).
        unknown_devices: device names that are no device class (encoded unknown).
    """

    ids: np.ndarray
    dropped_segments: int = 0
    unknown_devices: int = 0
    dropped_names: dict[str, int] = field(default_factory=dict)


def _local_seconds(times: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    known = np.isfinite(times)
    local = np.where(known, np.floor(np.where(known, times, 0.0)), 0.0) + 60.0 * offsets
    return local.astype(np.int64), known


def encode_requests(
    features: Sequence[RequestFeature],
    request_time_s: Sequence[float] | np.ndarray | None = None,
    utc_offset_minutes: Sequence[int | None] | np.ndarray | None = None,
    devices: Sequence[str | None] | None = None,
    surfaces: Sequence[str | None] | None = None,
    segments: Sequence[Sequence[str]] | None = None,
    segment_vocab: Mapping[str, int] | None = None,
    seq_len: int | None = None,
    n: int | None = None,
) -> RequestEncoding:
    """The request features' ids of ``R`` requests.

    Args:
        features: the request features, in the ranker's order.
        request_time_s: ``[R]`` request time in seconds since the epoch (UTC); NaN (or
            None for all) = unknown.
        utc_offset_minutes: ``[R]`` the user's offset from UTC (None = 0, as the
            request context takes it).
        devices: ``[R]`` device class names (None = unknown).
        surfaces: ``[R]`` surface names (None = unknown).
        segments: ``[R]`` segment names of each request's user (None: none known).
        segment_vocab: segment name -> id (``1..``), the bundle's; needed when a
            ``segments`` feature is asked for.
        seq_len: ``L`` of the output (default: the largest ``max_len``).
        n: ``R`` when every input is None.

    Returns:
        A :class:`RequestEncoding`.

    Raises:
        ValueError: inputs of different lengths, or ``segments`` without a vocabulary.
    """
    lengths = {
        len(x)
        for x in (request_time_s, utc_offset_minutes, devices, surfaces, segments)
        if x is not None
    }
    if n is not None:
        lengths.add(n)
    if len(lengths) > 1:
        raise ValueError(f"request inputs of different lengths: {sorted(lengths)}")
    rows = lengths.pop() if lengths else 0
    width = seq_len if seq_len is not None else max((f.max_len for f in features), default=1)
    out = np.full((rows, len(features), width), -1, dtype=np.int64)
    enc = RequestEncoding(out)
    times = (
        np.full(rows, np.nan)
        if request_time_s is None
        else np.asarray(request_time_s, dtype=np.float64)
    )
    offsets = np.zeros(rows, dtype=np.float64)
    if utc_offset_minutes is not None:
        offsets = np.asarray(
            [0 if o is None else o for o in utc_offset_minutes], dtype=np.float64
        ).reshape(rows)
    local, known = _local_seconds(times.reshape(rows), offsets)
    for f, feat in enumerate(features):
        if feat.max_len > width:
            raise ValueError(f"{feat.name}: max_len {feat.max_len} exceeds L = {width}")
        src = feat.source
        if src in ("local_hour", "weekday", "daypart"):
            hour = (local // 3600) % 24
            value = {
                "local_hour": hour,
                # 1970-01-01 was a Thursday (weekday 3)
                "weekday": (local // 86_400 + 3) % 7,
                "daypart": hour // DAYPART_HOURS,
            }[src]
            out[:, f, 0] = np.where(known, value + 1, UNKNOWN_ID)
        elif src == "device_type":
            codes = np.full(rows, UNKNOWN_ID, dtype=np.int64)
            for r, name in enumerate(devices or ()):
                if name is None:
                    continue
                if name in DEVICE_TYPES:
                    codes[r] = 1 + DEVICE_TYPES.index(name)
                else:
                    enc.unknown_devices += 1
            out[:, f, 0] = codes
        elif src == "surface":
            codes = np.full(rows, UNKNOWN_ID, dtype=np.int64)
            for r, name in enumerate(surfaces or ()):
                if name:
                    codes[r] = 1 + zlib.crc32(name.encode("utf-8")) % (feat.size - 1)
            out[:, f, 0] = codes
        else:  # segments
            if segment_vocab is None:
                raise ValueError(f"{feat.name}: the segments feature needs a segment vocabulary")
            for r, names in enumerate(segments or ()):
                kept: list[int] = []
                for name in names:
                    sid = segment_vocab.get(name)
                    if sid is None or not 0 < sid < feat.size:
                        enc.dropped_segments += 1
                        enc.dropped_names[name] = enc.dropped_names.get(name, 0) + 1
                    elif sid not in kept:
                        kept.append(sid)
                kept = sorted(kept)[: feat.max_len]
                out[r, f, : len(kept)] = kept
    return enc


def encode_contexts(
    features: Sequence[RequestFeature],
    contexts: Sequence[RequestContext],
    segments: Sequence[Sequence[str]] | None = None,
    segment_vocab: Mapping[str, int] | None = None,
    seq_len: int | None = None,
) -> RequestEncoding:
    """:func:`encode_requests` of parsed request contexts (the serving path).

    Args:
        features: the request features, in the ranker's order.
        contexts: ``[R]`` parsed request contexts (unknown fields -> id 0).
        segments: ``[R]`` the segments read with each request's profile.
        segment_vocab: segment name -> id.
        seq_len: ``L`` of the output.

    Example:
        >>> spec = RequestFeature("ctx_device", "device_type", 8)
        >>> ctx = RequestContext.from_values(device_type="mobile")
        >>> encode_contexts([spec], [ctx, RequestContext()]).ids[:, 0, 0].tolist()
        [2, 0]
    """
    times = [
        float("nan") if c.request_time_ms is None else c.request_time_ms / 1000.0 for c in contexts
    ]
    return encode_requests(
        features,
        request_time_s=np.asarray(times, dtype=np.float64),
        utc_offset_minutes=[c.utc_offset_minutes for c in contexts],
        devices=[c.device_type for c in contexts],
        surfaces=[c.surface for c in contexts],
        segments=segments,
        segment_vocab=segment_vocab,
        seq_len=seq_len,
        n=len(contexts),
    )

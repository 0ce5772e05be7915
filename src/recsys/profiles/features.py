"""Profile features in the feature schema's shapes, for the ranker and Triton.

:func:`profile_features` reads a :class:`UserProfile` (plus static attributes)
at a time ``as_of`` and returns, for every user- and context-role feature of a
:class:`~recsys.features.schema.FeatureSchema` that the profile can produce,
the raw value in that feature's shape: one value for ``categorical``, a list
of at most ``max_len`` ids for ``sequence``/``multi_hot`` (sequences most
recent last), a float for ``dense``. Raw values, not vocabulary indices: the
feature layer's vocabularies map them. Dense counts come in a fixed order
(:func:`dense_feature_names`), so they can form one tensor.

Features are matched by their ``source``: ``user_id``, ``recent_items``,
``age_bucket``, ``gender``, ``occupation``, ``hour``, ``weekday``,
``dominant_device``, any static attribute name, and any dense name of
:func:`dense_feature_names` (e.g. ``count_click_24h``).

Example:
    >>> from recsys.features.schema import FeatureSchema
    >>> schema = FeatureSchema.from_yaml("configs/schema/ml100k.yaml")  # doctest: +SKIP
    >>> row = profile_features(profile, {}, schema, now_us)  # doctest: +SKIP
    >>> row.values["user_recent_items"][-1]  # doctest: +SKIP
    214716935
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from recsys.events.schema import EventType
from recsys.features.schema import FeatureSchema, Kind, Role
from recsys.profiles.attributes import age_bucket
from recsys.profiles.config import ProfileConfig
from recsys.profiles.state import UserProfile, local_hour, local_weekday

_SCALARS = (
    "events_total",
    "purchase_count",
    "purchase_quantity",
    "purchase_total",
    "session_count",
    "session_events",
    "avg_session_events",
    "avg_session_duration_s",
    "hours_since_last_event",
    "days_since_last_purchase",
)


def dense_feature_names(config: ProfileConfig) -> list[str]:
    """Names of the dense profile features, in tensor order:
    ``count_<type>_<window>`` for every event type and window, then the
    scalars (totals, session statistics, recency)."""
    names = [f"count_{t.value}_{w.name}" for t in EventType for w in config.windows]
    return names + list(_SCALARS)


@dataclass(frozen=True)
class ProfileFeatures:
    """One user's features at one time.

    Attributes:
        user_id: the user.
        as_of_us: the time the features describe.
        values: schema feature name -> raw value, in schema order (user and
            context roles only, those the profile can produce).
        dense: :func:`dense_feature_names` -> value, in that order.
        missing: schema features of the user/context roles with no value
            (unknown source, or attribute not set).
        segments: the segments the user is a member of, sorted.
        personalized: False when the user withdrew personalization consent (then
            ``values`` is empty: nothing personal is used for the request).
    """

    user_id: str
    as_of_us: int
    values: dict[str, Any]
    dense: dict[str, float]
    missing: tuple[str, ...] = field(default=())
    segments: tuple[str, ...] = field(default=())
    personalized: bool = True

    def dense_vector(self) -> list[float]:
        """The dense values in :func:`dense_feature_names` order."""
        return list(self.dense.values())


def dense_features(profile: UserProfile, as_of_us: int, config: ProfileConfig) -> dict[str, float]:
    """The dense features of :func:`dense_feature_names` at ``as_of_us``."""
    out: dict[str, float] = {}
    for t in EventType:
        for w in config.windows:
            out[f"count_{t.value}_{w.name}"] = float(profile.count(t.value, w, as_of_us))
    out["events_total"] = float(profile.n_events)
    out["purchase_count"] = float(profile.purchase_count)
    out["purchase_quantity"] = float(profile.purchase_quantity)
    out["purchase_total"] = float(profile.purchase_total)
    out["session_count"] = float(profile.session_count)
    out["session_events"] = float(profile.session_events)
    out["avg_session_events"] = profile.avg_session_events()
    out["avg_session_duration_s"] = profile.avg_session_duration_s()
    out["hours_since_last_event"] = (
        (as_of_us - profile.last_us) / 3.6e9 if profile.n_events else -1.0
    )
    out["days_since_last_purchase"] = (
        (as_of_us - profile.last_purchase_us) / 8.64e10 if profile.purchase_count else -1.0
    )
    return out


def profile_features(
    profile: UserProfile,
    attributes: Mapping[str, Any],
    schema: FeatureSchema,
    as_of_us: int,
    config: ProfileConfig | None = None,
    utc_offset_minutes: int | None = None,
) -> ProfileFeatures:
    """Builds one user's feature row.

    Args:
        profile: the dynamic profile.
        attributes: static attribute values (non-PII), e.g. from
            :meth:`AttributeSchema.plain_values`.
        schema: the feature schema to align with.
        as_of_us: request time (epoch us); windows end here, ``hour`` and
            ``weekday`` are taken from it.
        config: profile settings (windows); defaults to ``from_schema``.
        utc_offset_minutes: the request's offset for local ``hour``/``weekday``;
            defaults to the offset of the user's latest event.

    Returns:
        A :class:`ProfileFeatures`.
    """
    config = config or ProfileConfig.from_schema(schema)
    dense = dense_features(profile, as_of_us, config)
    offset = utc_offset_minutes
    if offset is None:
        offset = profile.last_context.get("utc_offset_minutes")
    local = as_of_us + (offset or 0) * 60_000_000
    known: dict[str, Any] = {
        "user_id": profile.user_id,
        "hour": local_hour(local),
        "weekday": local_weekday(local),
        "dominant_device": profile.dominant_device,
        "age_bucket": age_bucket(attributes.get("age")),
    }
    values: dict[str, Any] = {}
    missing: list[str] = []
    for spec in schema.by_role(Role.USER, Role.CONTEXT):
        src = spec.source
        value: Any
        if src == "recent_items":
            value = profile.recent_item_ids(spec.max_len)
        elif spec.kind is Kind.DENSE and src in dense:
            value = dense[src]
        elif src in known:
            value = known[src]
        else:
            value = attributes.get(src)
        if value is None:
            missing.append(spec.name)
            continue
        if spec.kind is Kind.MULTI_HOT:
            value = list(value if isinstance(value, list) else [value])[: spec.max_len]
        if spec.aliases:
            value = (
                [spec.canonical(v) for v in value]
                if isinstance(value, list)
                else spec.canonical(value)
            )
        values[spec.name] = value
    return ProfileFeatures(
        profile.user_id, as_of_us, values, dense, tuple(missing), tuple(sorted(profile.segments))
    )

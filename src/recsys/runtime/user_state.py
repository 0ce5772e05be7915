"""Real-time user state for the ``recommend`` entry point: profile reads and their ids.

The training run's tables describe each user as of the end of training. The real-time
profiles (``recsys.profiles``, written by the stream consumer into the Redis or SQLite
store) know what the user did since. This module brings the two together at serving
time, in two parts:

* :class:`ProfileStoreReader` reads the profiles of a batch of raw user ids from a store
  named by a URL (``redis://host:port/db[?prefix=rt]`` with the ``RedisStore`` key
  layout, or ``sqlite:///path/to/store.db``) and returns, per user, the same
  :class:`~recsys.profiles.features.ProfileFeatures` as ``ProfileService.features``
  (raw values in the feature schema's shapes), or None when the store holds nothing for
  the user. One store round trip per batch. A store that cannot be reached raises
  :class:`UserStateUnavailable`; after a failure the reader skips the store for
  ``retry_after_s`` so that a dead store costs one timeout per interval, not one per
  request.
* :class:`ProfileEncoding` turns those raw values into one model's padded user-side ids
  (the user tower's or the ranker's ``[F, L]`` rows), with the mappings the training
  features used, exported at build time: the user's history is the training history
  followed by the profile's recent items (last ``max_len`` kept), and a user the
  training run does not know gets the profile's demographics.

The module itself imports numpy only; the store reader imports ``recsys.profiles``
(and through it the store clients) when it first opens the store, so the pure engine
modules stay importable without ``redis`` or ``cryptography``. Python 3.10 compatible:
it runs in NVIDIA's container.

Example::

    reader = ProfileStoreReader("sqlite:///var/recsys/rt.db", schema_dict)
    [row] = reader.read([196])          # ProfileFeatures or None
    row.values["user_recent_items"]     # raw item ids, most recent last
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np

SCHEMA_FILE = "feature_schema.json"
"""The feature schema the profiles are read with, saved next to the ``recommend`` tables."""

RECENT_ITEMS_SOURCE = "recent_items"
"""The profile source of the history feature (``user_recent_items`` in the schemas)."""

DEFAULT_REDIS_PREFIX = "rt"
DEFAULT_TIMEOUT_S = 0.25
DEFAULT_RETRY_AFTER_S = 1.0


class UserStateUnavailable(RuntimeError):
    """The profile store could not be read (down, unreachable, or skipped after a failure)."""


class ProfileRow(Protocol):
    """What the engine reads of a profile: raw values by schema feature name (and,
    where the source has them, ``segments`` and ``personalized``)."""

    @property
    def values(self) -> Mapping[str, Any]: ...


class UserStateSource(Protocol):
    """Anything that returns a profile row (or None) per raw user id."""

    def read(self, user_ids: Sequence[int]) -> Sequence[ProfileRow | None]: ...


def item_key(value: Any) -> int | None:
    """A profile's raw item id as the int64 key the training vocabularies use.

    Integers, integral floats and numeric strings are keys (the integer vocabularies
    accept them the same way); anything else is None (out of vocabulary).

    Example:
        >>> item_key(242), item_key("242"), item_key("sku-9"), item_key(True)
        (242, 242, None, None)
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        f = float(value)
        return int(f) if math.isfinite(f) and f.is_integer() else None
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                f = float(value)
            except ValueError:
                return None
            return int(f) if math.isfinite(f) and f.is_integer() else None
    return None


def value_key(value: Any) -> str:
    """The text a categorical raw value is looked up by (``5.0`` and ``5`` agree)."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)


# -- ids ------------------------------------------------------------------------------


@dataclass
class ProfileEncoding:
    """How profile values become one model's padded user-side ids ``[F, L]``.

    Attributes:
        features: the model's sparse features (the ``F`` axis).
        seq_len: ``L``.
        max_len: ids read per feature.
        user_features: the user-side ones among ``features`` (a new user's row fills
            these; the others stay ``-1``).
        recent_items: the history feature (fed from the profile's recent items), or
            None when the model has none it can map.
        item_vocab: ``[I]`` id of each catalogue item (row of the item table) in the
            history feature's vocabulary; items outside the catalogue take ``oov_id``.
        oov_id: the history vocabulary's out-of-vocabulary id.
        value_maps: per categorical feature, raw value (as :func:`value_key` text) ->
            id, as the training features encoded them.
        identity_sizes: per identity-vocabulary feature, its size (the value is the id).
        missing_ids: per feature, the id a user without a value gets (``0`` = the OOV
            row, as training encodes a missing categorical; ``-1`` = empty bag).
    """

    features: list[str]
    seq_len: int
    max_len: dict[str, int]
    user_features: list[str]
    recent_items: str | None
    item_vocab: np.ndarray
    oov_id: int = 0
    value_maps: dict[str, dict[str, int]] = field(default_factory=dict)
    identity_sizes: dict[str, int] = field(default_factory=dict)
    missing_ids: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.item_vocab = np.asarray(self.item_vocab, dtype=np.int64)
        unknown = [f for f in (*self.user_features, *self.max_len) if f not in self.features]
        if self.recent_items is not None and self.recent_items not in self.user_features:
            unknown.append(self.recent_items)
        if unknown:
            raise ValueError(f"profile encoding names features {unknown} not in {self.features}")
        self._index = {name: f for f, name in enumerate(self.features)}

    def history_ids(self, item_rows: np.ndarray) -> np.ndarray:
        """Ids of the profile's recent items (catalogue rows, ``-1`` = not in it)."""
        rows = np.asarray(item_rows, dtype=np.int64)
        return np.where(rows >= 0, self.item_vocab[np.maximum(rows, 0)], self.oov_id)

    def with_history(self, ids: np.ndarray, item_rows: np.ndarray) -> np.ndarray:
        """A copy of ``ids [F, L]`` whose history is extended by the profile's items.

        The history slot holds the training history (left-aligned, most recent last);
        the profile's items follow it and the last ``max_len`` are kept, as the training
        features truncate a sequence.
        """
        out = np.array(ids, dtype=np.int64, copy=True)
        if self.recent_items is None or len(item_rows) == 0:
            return out
        f = self._index[self.recent_items]
        keep = int(self.max_len.get(self.recent_items, self.seq_len))
        old = out[f][out[f] >= 0]
        merged = np.concatenate([old, self.history_ids(item_rows)])[-keep:]
        out[f] = -1
        out[f, : len(merged)] = merged
        return out

    def new_user(self, values: Mapping[str, Any], item_rows: np.ndarray) -> np.ndarray:
        """``[F, L]`` ids of a user the training run does not know, from the profile.

        History from the profile's recent items; categorical features from the profile's
        values through the exported maps (unknown values -> ``oov_id`` of the feature's
        map, i.e. ``0``); features without a value get ``missing_ids``; item-side
        features stay ``-1``.
        """
        out = np.full((len(self.features), self.seq_len), -1, dtype=np.int64)
        for name in self.user_features:
            f = self._index[name]
            if name == self.recent_items:
                merged = self.history_ids(item_rows)[-int(self.max_len.get(name, self.seq_len)) :]
                out[f, : len(merged)] = merged
                continue
            value = values.get(name)
            if value is None:
                out[f, 0] = self.missing_ids.get(name, -1)
                continue
            raw = value if isinstance(value, list | tuple) else [value]
            ids = [self._category_id(name, v) for v in raw]
            ids = [i for i in ids if i >= 0][: int(self.max_len.get(name, 1))]
            out[f, : len(ids)] = ids
        return out

    def _category_id(self, name: str, value: Any) -> int:
        if name in self.identity_sizes:
            key = item_key(value)
            size = self.identity_sizes[name]
            return key if key is not None and 0 <= key < size else -1
        mapping = self.value_maps.get(name)
        if mapping is None:
            return self.missing_ids.get(name, -1)
        return int(mapping.get(value_key(value), 0))

    # -- files -----------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """Everything but ``item_vocab`` (saved in the npz next to it)."""
        return {
            "features": list(self.features),
            "seq_len": int(self.seq_len),
            "max_len": {k: int(v) for k, v in self.max_len.items()},
            "user_features": list(self.user_features),
            "recent_items": self.recent_items,
            "oov_id": int(self.oov_id),
            "value_maps": self.value_maps,
            "identity_sizes": self.identity_sizes,
            "missing_ids": self.missing_ids,
        }

    @classmethod
    def from_json(cls, meta: Mapping[str, Any], item_vocab: np.ndarray) -> ProfileEncoding:
        """Reads what :meth:`to_json` wrote (plus the saved ``item_vocab``)."""
        return cls(
            features=list(meta["features"]),
            seq_len=int(meta["seq_len"]),
            max_len={k: int(v) for k, v in meta["max_len"].items()},
            user_features=list(meta["user_features"]),
            recent_items=meta.get("recent_items"),
            item_vocab=item_vocab,
            oov_id=int(meta.get("oov_id", 0)),
            value_maps={
                k: {str(a): int(b) for a, b in v.items()}
                for k, v in meta.get("value_maps", {}).items()
            },
            identity_sizes={k: int(v) for k, v in meta.get("identity_sizes", {}).items()},
            missing_ids={k: int(v) for k, v in meta.get("missing_ids", {}).items()},
        )


def recent_items(row: ProfileRow, feature: str | None) -> list[Any]:
    """The profile's recent items (raw ids, most recent last) of the history feature."""
    if feature is None:
        return []
    value = row.values.get(feature)
    return list(value) if isinstance(value, list | tuple) else []


# -- reading the store --------------------------------------------------------------------


@dataclass(frozen=True)
class StoreLocation:
    """Where the profiles live, parsed from a store URL.

    Attributes:
        kind: ``"redis"`` or ``"sqlite"``.
        target: the Redis URL handed to the client (without ``prefix``, with socket
            timeouts) or the SQLite file path.
        prefix: the Redis key prefix (``RedisStore``'s ``prefix``; unused for SQLite).
    """

    kind: str
    target: str
    prefix: str = DEFAULT_REDIS_PREFIX


def parse_store_url(url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> StoreLocation:
    """Parses ``redis://host:port/db[?prefix=P]`` or ``sqlite:///path``.

    Redis URLs get ``socket_timeout`` and ``socket_connect_timeout`` of ``timeout_s``
    unless they set them: a request must never wait on a store that does not answer.

    Example:
        >>> parse_store_url("redis://127.0.0.1:6379/0?prefix=live").prefix
        'live'
        >>> parse_store_url("sqlite:///var/rt.db").target
        '/var/rt.db'

    Raises:
        ValueError: another scheme, or an empty path.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("redis", "rediss", "unix"):
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        prefix = query.pop("prefix", DEFAULT_REDIS_PREFIX) or DEFAULT_REDIS_PREFIX
        query.setdefault("socket_timeout", str(timeout_s))
        query.setdefault("socket_connect_timeout", str(timeout_s))
        target = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))
        return StoreLocation("redis", target, prefix)
    if scheme == "sqlite":
        path = url[len("sqlite://") :]
        if not path or path == "/":
            raise ValueError(f"profile store {url!r}: name the database file, sqlite:///path")
        return StoreLocation("sqlite", path)
    raise ValueError(
        f"profile store {url!r}: expected redis://host:port/db[?prefix=P] or sqlite:///path"
    )


@dataclass
class ReaderStats:
    """Counters of a :class:`ProfileStoreReader` (reported in the server log)."""

    reads: int = 0
    users: int = 0
    profiles: int = 0
    failures: int = 0
    skipped: int = 0


def open_location(loc: StoreLocation) -> Any:
    """Opens the real-time store at ``loc`` (the store clients load here, not at import).

    Raises:
        FileNotFoundError: a SQLite store that does not exist (it is never created here).
    """
    if loc.kind == "redis":
        from recsys.events.redis_store import RedisStore

        return RedisStore(loc.target, prefix=loc.prefix)
    from recsys.events.sqlite_store import SqliteStore

    if not Path(loc.target).is_file():
        raise FileNotFoundError(f"profile store {loc.target} does not exist")
    return SqliteStore(loc.target)


def open_store_url(url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> Any:
    """Opens the real-time store a URL names (:func:`parse_store_url`)."""
    return open_location(parse_store_url(url, timeout_s))


class ProfileStoreReader:
    """Reads users' profile features from a Redis or SQLite store.

    The result for a user equals ``ProfileService(store, schema).features(str(user),
    as_of_us)`` (tested), read for the whole batch with one ``load_users`` call.

    Args:
        url: ``redis://host:port/db[?prefix=P]`` or ``sqlite:///path``.
        schema: the feature schema (a ``FeatureSchema`` or its ``to_dict()``).
        timeout_s: Redis socket timeouts.
        retry_after_s: after a failure, reads raise :class:`UserStateUnavailable`
            without touching the store for this long.
    """

    def __init__(
        self,
        url: str,
        schema: Any,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retry_after_s: float = DEFAULT_RETRY_AFTER_S,
    ) -> None:
        self.url = url
        self.location = parse_store_url(url, timeout_s)
        self.retry_after_s = float(retry_after_s)
        self.stats = ReaderStats()
        self._schema_source = schema
        self._schema: Any = None
        self._config: Any = None
        self._attributes: Any = None
        self._store: Any = None
        self._down_until = 0.0
        self.last_error: str | None = None

    @classmethod
    def from_folder(cls, url: str, folder: str | Path, **kwargs: Any) -> ProfileStoreReader:
        """A reader with the schema saved in a ``recommend`` version folder."""
        schema = json.loads((Path(folder) / SCHEMA_FILE).read_text())
        return cls(url, schema, **kwargs)

    def _open(self) -> Any:
        if self._store is not None:
            return self._store
        # Imported here: the engine modules must load without the store clients.
        from recsys.features.schema import FeatureSchema
        from recsys.profiles.attributes import AttributeSchema
        from recsys.profiles.config import ProfileConfig

        if self._schema is None:
            src = self._schema_source
            self._schema = (
                src if isinstance(src, FeatureSchema) else FeatureSchema.from_dict(dict(src))
            )
            self._config = ProfileConfig.from_schema(self._schema)
            self._attributes = AttributeSchema.default()
        self._store = open_location(self.location)
        return self._store

    def read(self, user_ids: Sequence[int], as_of_us: int | None = None) -> list[Any]:
        """Profile features of each user (None: the store holds nothing for the user).

        Args:
            user_ids: raw user ids; the store keys users by their decimal text.
            as_of_us: request time (epoch microseconds); default now.

        Returns:
            One ``ProfileFeatures`` or None per user, in order; a user whose
            ``personalization`` consent is refused gets one with ``personalized``
            False and nothing else (no values, no segments).

        Raises:
            UserStateUnavailable: the store failed now, or failed less than
                ``retry_after_s`` ago.
        """
        now = time.monotonic()
        if now < self._down_until:
            self.stats.skipped += 1
            raise UserStateUnavailable(
                f"profile store {self.url} skipped for {self._down_until - now:.2f} s more "
                f"after: {self.last_error}"
            )
        keys = [str(int(u)) for u in user_ids]
        try:
            store = self._open()
            records = store.load_users(list(dict.fromkeys(keys)))
        except Exception as error:
            self.stats.failures += 1
            self.last_error = f"{type(error).__name__}: {error}"
            self._down_until = now + self.retry_after_s
            self._drop_store()
            raise UserStateUnavailable(
                f"profile store {self.url} failed: {self.last_error}"
            ) from error
        self.stats.reads += 1
        self.stats.users += len(keys)
        from recsys.events.consent import Purpose, refused
        from recsys.profiles.features import ProfileFeatures, profile_features
        from recsys.profiles.state import UserProfile

        when = as_of_us if as_of_us is not None else time.time_ns() // 1000
        out: list[Any] = []
        for key in keys:
            rec = records.get(key)
            if rec is not None and refused(rec.consent, Purpose.PERSONALIZATION):
                # nothing personal is read for the request: not even the segments
                out.append(ProfileFeatures(key, when, {}, {}, personalized=False))
                continue
            if rec is None or (rec.profile is None and not rec.attributes):
                out.append(None)
                continue
            self.stats.profiles += 1
            # The same computation as ProfileService.features (tested equal).
            profile = UserProfile.from_doc(json.loads(rec.profile)) if rec.profile else None
            out.append(
                profile_features(
                    profile or UserProfile(key),
                    self._attributes.plain_values(rec.attributes),
                    self._schema,
                    when,
                    self._config,
                )
            )
        return out

    def _drop_store(self) -> None:
        # A Redis client reconnects by itself; dropping it also retries the group
        # creation and script loading of a store that was never reached.
        if self._store is not None and self.location.kind == "redis":
            with contextlib.suppress(Exception):
                self._store.close()
            self._store = None

    def close(self) -> None:
        """Closes the store connection."""
        if self._store is not None:
            self._store.close()
            self._store = None

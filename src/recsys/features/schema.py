"""One declaration of every feature, shared by training, export and serving.

A :class:`FeatureSchema` lists :class:`FeatureSpec` s. Each says what kind of
value a feature holds, which tower or stage consumes it (its role), and how raw
values become embedding rows (its vocabulary policy). Models build their
embedding tables from the schema, the ONNX export derives its input tensors
(``[B, F, L]`` padded ids, fixed ``L = max_len``) from it, and the Triton model
configuration and the real-time profile store emit tensors in the same order.

Example:
    >>> schema = FeatureSchema.from_dict({
    ...     "name": "toy",
    ...     "features": [
    ...         {"name": "user_id", "kind": "categorical", "role": "user",
    ...          "source": "user_id", "vocab": {"policy": "id_map"}},
    ...         {"name": "item_genres", "kind": "multi_hot", "role": "item",
    ...          "source": "genres", "max_len": 6,
    ...          "vocab": {"policy": "hash", "size": 64}},
    ...     ],
    ... })
    >>> [f.name for f in schema.by_role(Role.USER)]
    ['user_id']
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from recsys.data.compat import StrEnum

SCHEMA_VERSION = 1


class Kind(StrEnum):
    """What one feature value is."""

    CATEGORICAL = "categorical"  # one id per example (user id, device)
    MULTI_HOT = "multi_hot"  # an unordered bag of ids (genres)
    SEQUENCE = "sequence"  # an ordered list of ids, most recent last (recent items)
    DENSE = "dense"  # one float (or a fixed-size float vector, see ``dim``)


class Role(StrEnum):
    """Which side of the model consumes a feature."""

    USER = "user"
    ITEM = "item"
    CONTEXT = "context"  # request-time: hour, device; goes with the user/query side
    # computed per request, for the ranker only, by recsys.runtime.request_features from
    # the request context (time, device, surface) or the profile read (segments); never
    # a column of the feature tables (see FeatureSchema.request)
    REQUEST = "request"


class VocabPolicy(StrEnum):
    """How raw categorical values become row indices."""

    ID_MAP = "id_map"  # stable, fitted map; index 0 is the out-of-vocabulary bucket
    HASH = "hash"  # stable hash modulo ``size``; no fitting needed
    IDENTITY = "identity"  # values are already indices in [0, size)


@dataclass(frozen=True)
class VocabConfig:
    """Vocabulary policy of a sparse feature.

    Attributes:
        policy: see :class:`VocabPolicy`.
        size: number of rows for ``hash`` and ``identity``; for ``id_map`` an
            optional cap (most frequent values kept, the rest map to OOV).
        min_count: ``id_map`` only: values seen fewer times map to OOV.
    """

    policy: VocabPolicy = VocabPolicy.ID_MAP
    size: int | None = None
    min_count: int = 1

    def __post_init__(self) -> None:
        if self.policy in (VocabPolicy.HASH, VocabPolicy.IDENTITY) and not self.size:
            raise ValueError(f"vocabulary policy {self.policy.value!r} needs a positive size")
        if self.size is not None and self.size <= 0:
            raise ValueError(f"vocabulary size must be positive, got {self.size}")


@dataclass(frozen=True)
class FeatureSpec:
    """One feature.

    Attributes:
        name: unique feature name; also the TorchRec feature key.
        kind: see :class:`Kind`.
        role: see :class:`Role`.
        source: column of the source table it is built from (defaults to name).
        vocab: vocabulary policy; sparse features only.
        max_len: ids kept per example for multi-hot and sequence features (the
            fixed ``L`` of the export's ``[B, F, L]`` tensor; sequences keep
            the most recent). 1 for categorical features.
        embedding_dim: embedding width; None lets the model decide.
        pooling: ``sum`` or ``mean`` over a bag.
        dim: width of a dense feature.
        vocab_from: name of another sparse feature whose vocabulary this one
            uses (e.g. the recent-items bag uses the item id vocabulary), so
            the same raw id maps to the same index in both.
        description: free text for humans.
        aliases: other spellings of this feature's raw values and the value each one
            stands for, as ``(alias, value)`` pairs (YAML: a mapping), e.g.
            ``{female: F}`` when profiles record ``female`` where the dataset has ``F``.
    """

    name: str
    kind: Kind
    role: Role
    source: str = ""
    vocab: VocabConfig | None = None
    max_len: int = 1
    embedding_dim: int | None = None
    pooling: str = "mean"
    dim: int = 1
    vocab_from: str = ""
    description: str = ""
    aliases: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.source:
            object.__setattr__(self, "source", self.name)
        object.__setattr__(self, "aliases", _alias_pairs(self.name, self.aliases))
        if self.aliases and self.kind is Kind.DENSE:
            raise ValueError(f"dense feature {self.name!r} cannot have aliases")
        if self.is_sparse and self.vocab is None:
            object.__setattr__(self, "vocab", VocabConfig())
        if not self.is_sparse and self.vocab is not None:
            raise ValueError(f"dense feature {self.name!r} cannot have a vocabulary")
        if self.kind is Kind.CATEGORICAL and self.max_len != 1:
            raise ValueError(f"categorical feature {self.name!r} must have max_len 1")
        if self.max_len < 1:
            raise ValueError(f"feature {self.name!r}: max_len must be >= 1")
        if self.pooling not in ("sum", "mean"):
            raise ValueError(f"feature {self.name!r}: pooling must be 'sum' or 'mean'")

    @property
    def is_sparse(self) -> bool:
        return self.kind is not Kind.DENSE

    def canonical(self, value: Any) -> Any:
        """``value`` in the dataset's spelling (see ``aliases``); others unchanged.

        Example:
            >>> spec = FeatureSpec("g", Kind.CATEGORICAL, Role.USER, aliases={"female": "F"})
            >>> spec.canonical("female"), spec.canonical("F"), spec.canonical(3)
            ('F', 'F', 3)
        """
        for alias, target in self.aliases:
            if isinstance(value, str) and value == alias:
                return target
        return value


def _alias_pairs(name: str, raw: Any) -> tuple[tuple[str, str], ...]:
    """``aliases`` as given (a mapping, or ``(alias, value)`` pairs) -> checked pairs."""
    if isinstance(raw, Mapping):
        items = list(raw.items())
    elif isinstance(raw, list | tuple) and all(
        isinstance(p, list | tuple) and len(p) == 2 for p in raw
    ):
        items = [(p[0], p[1]) for p in raw]
    else:
        raise ValueError(
            f"feature {name!r}: aliases must map each alias to a value, e.g. {{female: F}}; "
            f"got {raw!r}"
        )
    pairs: dict[str, str] = {}
    for alias, value in items:
        key, target = str(alias), str(value)
        if pairs.get(key, target) != target:
            raise ValueError(
                f"feature {name!r}: alias {key!r} stands for both {pairs[key]!r} and {target!r}"
            )
        pairs[key] = target
    return tuple(pairs.items())


@dataclass(frozen=True)
class FeatureSchema:
    """An ordered set of features. Order is the tensor order everywhere.

    Attributes:
        name: schema name, e.g. ``"ml-100k"``.
        features: the features, in order.
        version: schema format version (bumped on incompatible changes).
        request: the request features a ranker may read (role ``request``, YAML key
            ``request_features``): computed per request by
            :func:`recsys.runtime.request_features.encode_requests` (offline from each
            training example's request, online from the parsed request context and the
            profile's segments), never read from a table, so none of the tables, the
            vocabulary fitting or the towers see them; :meth:`for_ranker` adds the
            chosen ones to the ranker's schema.
    """

    name: str
    features: tuple[FeatureSpec, ...]
    version: int = SCHEMA_VERSION
    request: tuple[FeatureSpec, ...] = ()
    _by_name: dict[str, FeatureSpec] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        seen: dict[str, FeatureSpec] = {}
        for f in self.features:
            if f.name in seen:
                raise ValueError(f"schema {self.name!r}: feature {f.name!r} declared twice")
            seen[f.name] = f
        object.__setattr__(self, "_by_name", seen)
        for f in self.request:
            if f.role is not Role.REQUEST or not f.is_sparse or f.vocab_from:
                raise ValueError(
                    f"schema {self.name!r}: request feature {f.name!r} must be sparse, of "
                    "role 'request', with its own vocabulary"
                )
            if f.name in seen or sum(r.name == f.name for r in self.request) > 1:
                raise ValueError(f"schema {self.name!r}: feature {f.name!r} declared twice")
        for f in self.features:
            if f.vocab_from and (f.vocab_from not in seen or not seen[f.vocab_from].is_sparse):
                raise ValueError(
                    f"schema {self.name!r}: feature {f.name!r} takes its vocabulary from "
                    f"{f.vocab_from!r}, which is not a sparse feature of this schema"
                )

    def __getitem__(self, name: str) -> FeatureSpec:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(
                f"schema {self.name!r} has no feature {name!r}; it has {sorted(self._by_name)}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.features)

    def __len__(self) -> int:
        return len(self.features)

    def by_role(self, *roles: Role) -> list[FeatureSpec]:
        """Features whose role is one of ``roles``, in schema order."""
        return [f for f in self.features if f.role in roles]

    def sparse(self, *roles: Role) -> list[FeatureSpec]:
        """Sparse features (optionally only of ``roles``), in schema order."""
        return [f for f in self.features if f.is_sparse and (not roles or f.role in roles)]

    def dense(self, *roles: Role) -> list[FeatureSpec]:
        """Dense features (optionally only of ``roles``), in schema order."""
        return [f for f in self.features if not f.is_sparse and (not roles or f.role in roles)]

    def select(self, names: list[str]) -> FeatureSchema:
        """A sub-schema with ``names`` in the given order."""
        return FeatureSchema(self.name, tuple(self[n] for n in names), self.version, self.request)

    def request_feature(self, name: str) -> FeatureSpec:
        """The request feature ``name`` (KeyError naming the declared ones)."""
        for f in self.request:
            if f.name == name:
                return f
        raise KeyError(
            f"schema {self.name!r} declares no request feature {name!r}; it declares "
            f"{[f.name for f in self.request]}"
        )

    def for_ranker(self, request_names: list[str] | tuple[str, ...]) -> FeatureSchema:
        """This schema with the request features ``request_names`` appended to its
        features (the ranker's schema: its model, export and runtime tables).

        Example:
            >>> s = FeatureSchema.from_dict({"features": [
            ...     {"name": "item_id", "kind": "categorical", "role": "item"}],
            ...     "request_features": [{"name": "ctx_hour", "kind": "categorical",
            ...         "role": "request", "source": "local_hour",
            ...         "vocab": {"policy": "identity", "size": 25}}]})
            >>> [f.name for f in s.for_ranker(["ctx_hour"])]
            ['item_id', 'ctx_hour']
        """
        if not request_names:
            return self
        extra = tuple(self.request_feature(n) for n in request_names)
        return FeatureSchema(self.name, self.features + extra, self.version)

    # -- serialization ---------------------------------------------------------

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> FeatureSchema:
        """Builds a schema from a plain mapping (YAML or Hydra config); unknown keys
        (of the schema, a feature or its vocabulary) are errors that name them."""
        extra = sorted(set(raw) - {"name", "version", "features", "request_features"})
        if extra:
            raise ValueError(
                f"schema: unknown keys {extra} (known: features, name, request_features, version)"
            )
        feats = cls._specs(raw.get("features", []), "schema feature")
        request = cls._specs(raw.get("request_features", []) or [], "schema request feature")
        return cls(
            name=str(raw.get("name", "schema")),
            features=tuple(feats),
            version=int(raw.get("version", SCHEMA_VERSION)),
            request=tuple(request),
        )

    @staticmethod
    def _specs(raw: Any, what: str) -> list[FeatureSpec]:
        feats = []
        for i, f in enumerate(raw):
            f = dict(f)
            try:
                vocab = f.pop("vocab", None)
                odd = sorted(set(vocab or {}) - {"policy", "size", "min_count"})
                if odd:
                    raise ValueError(f"unknown vocab keys {odd} (known: min_count, policy, size)")
                feats.append(
                    FeatureSpec(
                        kind=Kind(f.pop("kind")),
                        role=Role(f.pop("role")),
                        vocab=VocabConfig(
                            policy=VocabPolicy(vocab.get("policy", "id_map")),
                            size=vocab.get("size"),
                            min_count=int(vocab.get("min_count", 1)),
                        )
                        if vocab is not None
                        else None,
                        **f,
                    )
                )
            except (KeyError, ValueError, TypeError) as e:
                raise ValueError(f"{what} #{i} ({f.get('name', '?')}): {e}") from e
        return feats

    @classmethod
    def from_yaml(cls, path: str | Path) -> FeatureSchema:
        with open(path, encoding="utf-8") as fh:
            return cls.from_dict(yaml.safe_load(fh))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "features": _spec_dicts(self.features),
        }
        if self.request:
            out["request_features"] = _spec_dicts(self.request)
        return out


def _spec_dicts(specs: tuple[FeatureSpec, ...]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for f in specs:
        d = asdict(f)
        d["aliases"] = dict(f.aliases)
        d["kind"] = f.kind.value
        d["role"] = f.role.value
        if f.vocab is not None:
            d["vocab"] = {
                "policy": f.vocab.policy.value,
                "size": f.vocab.size,
                "min_count": f.vocab.min_count,
            }
        else:
            d.pop("vocab")
        out.append(d)
    return out

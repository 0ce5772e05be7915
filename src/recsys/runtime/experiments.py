"""A/B test assignment in the request path: salted hashing of a unit to experiment arms.

An :class:`ExperimentSet` holds compiled :class:`Layer` objects
(``recsys.experiments.loader`` compiles them from YAML). Per request,
:meth:`ExperimentSet.assign` gives the unit at most one :class:`Assignment` per layer:

1. **bucket**: ``SHA-256("<layer salt>:<unit>")``, its first 8 bytes as a big-endian
   integer, modulo the layer's bucket count (10,000 by default). Salts hold no ``:``, so
   the hashed text names salt and unit without ambiguity;
2. **experiment**: the one experiment of the layer whose bucket range holds the bucket
   (ranges of one layer never overlap, so a unit is in at most one experiment of a
   layer). Layers have different salts, so a unit's buckets in two layers are
   independent: experiments of different layers are orthogonal;
3. **targeting**: the experiment's segment and context conditions must hold for the
   request (a unit that is not eligible is in no experiment of that layer);
4. **ramp-up**: ``SHA-256("<experiment salt>:<unit>")``; its bytes 0-7 as a fraction of
   2**64 must be below ``traffic``. Raising ``traffic`` only adds units: one exposed at
   10% is exposed at 50%;
5. **arm**: bytes 8-15 of the same digest, against the arms' cumulative weights. The
   arm does not depend on ``traffic``, so a unit keeps its arm while the experiment
   ramps up (changing the weights reshuffles arms: that is a new experiment).

An arm says what it changes: a policy id, a ranker version (``ranker:2``) and
request-time parameter overrides from the declared table :data:`ARM_PARAMS` (checked
here and, at their line and column, by the loader); the request path
(``recsys.runtime.engine``) applies them. No two layers change the same thing, so
:func:`merged_changes` never has to choose between assignments.

Standard library only at module level (the module runs inside Triton's python
backend, Python 3.10).

Example:
    >>> arms = (Arm("control", 1.0), Arm("explore", 1.0, policy="epsilon_greedy:0.1"))
    >>> exp = Experiment("explore", "ranking", 0, 9_999, 1.0, arms, "ranking/explore")
    >>> experiments = ExperimentSet((Layer("ranking", "ranking", "user", (exp,)),))
    >>> [(a.experiment, a.arm) for a in experiments.assign("42")]
    [('explore', 'explore')]
    >>> experiments.assign("42") == experiments.assign("42")
    True
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import types
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from recsys.runtime.context import UNKNOWN, RequestContext
from recsys.runtime.exposure import ANONYMOUS_USER

DEFAULT_BUCKETS = 10_000
"""Buckets of a layer unless the file says otherwise (0.01% of the traffic each)."""

UNIT_KINDS: tuple[str, ...] = ("user", "session")
"""What a layer hashes: the user id, or the request context's session id."""

CONTEXT_FIELDS: tuple[str, ...] = ("device_type", "os", "browser", "country", "region", "surface")
"""The request context fields an experiment may target."""

_FULL = 1 << 64  # the range of an 8-byte slice of a digest


@dataclass(frozen=True)
class ArmParam:
    """One request-time parameter an arm may override (see :data:`ARM_PARAMS`).

    Attributes:
        kind: ``float`` or ``int``.
        low: smallest value allowed.
        high: largest value allowed.
        low_open: ``low`` itself is not allowed (e.g. a temperature must be > 0).
        meaning: what it changes, for messages and docs.
    """

    kind: str
    low: float
    high: float
    low_open: bool = False
    meaning: str = ""

    def check(self, value: Any) -> str | None:
        """Why ``value`` is not allowed, or None when it is.

        Example:
            >>> ARM_PARAMS["mmr_lambda"].check(1.5)
            'must be in [0, 1], got 1.5'
        """
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be a number, got {value!r}"
        if self.kind == "int" and not float(value).is_integer():
            return f"must be an integer, got {value!r}"
        if value != value or value in (float("inf"), float("-inf")):
            return f"must be finite, got {value!r}"
        below = value <= self.low if self.low_open else value < self.low
        if below or value > self.high:
            left = "(" if self.low_open else "["
            return f"must be in {left}{self.low:g}, {self.high:g}], got {value!r}"
        return None


ARM_PARAMS: Mapping[str, ArmParam] = types.MappingProxyType(
    {
        "ranker_weight": ArmParam("float", 0.0, 1e3, meaning="weight of the z-scored ranker logit"),
        "retrieval_weight": ArmParam(
            "float", 0.0, 1e3, meaning="weight of the z-scored retrieval score"
        ),
        "freshness_weight": ArmParam("float", 0.0, 1e3, meaning="weight of the freshness bonus"),
        "freshness_half_life_years": ArmParam(
            "float", 0.0, 1e3, low_open=True, meaning="age (years) at which freshness halves"
        ),
        "mmr_lambda": ArmParam("float", 0.0, 1.0, meaning="MMR trade-off; 1 = relevance order"),
        "mmr_depth": ArmParam("int", 1, 10_000, meaning="list positions MMR picks greedily"),
        "num_candidates": ArmParam(
            "int", 1, 100_000, meaning="retrieval depth N (at most the served max_k)"
        ),
        "epsilon": ArmParam(
            "float", 0.0, 1.0, meaning="the slate policy becomes epsilon_greedy:EPSILON"
        ),
        "temperature": ArmParam(
            "float", 0.0, 1e3, low_open=True, meaning="the slate policy becomes plackett_luce:T"
        ),
    }
)
"""The parameters an arm's ``params`` may override in the request, by name.

The first six are the served aggregation settings (``AggregationSettings``: relevance
weights, freshness, diversity); ``num_candidates`` is the retrieval depth; ``epsilon``
and ``temperature`` choose the slate policy's family and parameter (so they count as
changing ``policy`` and may not be given with an arm's ``policy``, or together)."""

POLICY_PARAMS: Mapping[str, str] = types.MappingProxyType(
    {"epsilon": "epsilon_greedy", "temperature": "plackett_luce"}
)
"""Policy parameters of :data:`ARM_PARAMS` and the policy each one selects."""

MODEL_NAMES: tuple[str, ...] = ("ranker",)
"""The stage models an arm's ``model`` may route to another version of."""


def check_param(name: str, value: Any) -> str | None:
    """Why an arm may not set parameter ``name`` to ``value``, or None when it may.

    Args:
        name: the parameter's name.
        value: its value.

    Returns:
        A message naming the problem, or None.

    Example:
        >>> check_param("mmr_lambda", 0.3) is None
        True
        >>> check_param("mmr_lamda", 0.3).split(";")[0]
        "unknown parameter 'mmr_lamda'"
    """
    spec = ARM_PARAMS.get(name)
    if spec is None:
        return f"unknown parameter {name!r}; known: {sorted(ARM_PARAMS)}"
    problem = spec.check(value)
    return None if problem is None else f"parameter {name!r} {problem}"


def parse_model(text: str) -> tuple[str, int]:
    """An arm's ``model``: ``<model>:<version>``, e.g. ``ranker:2``.

    Args:
        text: the arm's model value.

    Returns:
        ``(model name, version)``.

    Raises:
        ValueError: not of that form, an unknown model or a version below 1.

    Example:
        >>> parse_model("ranker:2")
        ('ranker', 2)
    """
    name, sep, version = text.strip().partition(":")
    if name not in MODEL_NAMES or not sep or not version.isdigit() or int(version) < 1:
        raise ValueError(
            f"model {text!r} must be <model>:<version> with model one of {list(MODEL_NAMES)} "
            "and a version >= 1 (e.g. ranker:2)"
        )
    return name, int(version)


def digest(salt: str, unit: str) -> bytes:
    """The SHA-256 digest of ``salt:unit`` (UTF-8), the one hash of assignment.

    Args:
        salt: a layer's or an experiment's salt (no ``:``).
        unit: the unit id as text (integer ids as their decimal text).

    Returns:
        32 bytes.

    Example:
        >>> digest("ranking", "42").hex()[:16]
        '8ded3f16aa6e1c60'
    """
    return hashlib.sha256(f"{salt}:{unit}".encode()).digest()


def bucket_of(salt: str, unit: str, buckets: int = DEFAULT_BUCKETS) -> int:
    """The unit's bucket in a layer: the digest's first 8 bytes modulo ``buckets``.

    Args:
        salt: the layer's salt.
        unit: the unit id as text.
        buckets: the layer's bucket count.

    Returns:
        An integer in ``[0, buckets)``.

    Example:
        >>> bucket_of("ranking", "42")
        7792
    """
    return int.from_bytes(digest(salt, unit)[:8], "big") % buckets


@dataclass(frozen=True)
class Targeting:
    """Who an experiment is for: segment and request context conditions (all must hold).

    Attributes:
        segments_any: the user is in at least one of these (empty: no condition).
        segments_all: the user is in every one of these.
        segments_none: the user is in none of these.
        context: context field -> allowed values; an unknown (None) field fails.

    Example:
        >>> t = Targeting(segments_any=frozenset({"fans"}),
        ...               context={"device_type": frozenset({"mobile"})})
        >>> t.matches({"fans"}, RequestContext(device_type="mobile"))
        True
        >>> t.matches({"fans"}, UNKNOWN)
        False
    """

    segments_any: frozenset[str] = frozenset()
    segments_all: frozenset[str] = frozenset()
    segments_none: frozenset[str] = frozenset()
    context: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.context) - set(CONTEXT_FIELDS))
        if unknown:
            raise ValueError(f"unknown context fields {unknown}; known: {list(CONTEXT_FIELDS)}")
        object.__setattr__(self, "context", types.MappingProxyType(dict(self.context)))

    @property
    def is_everyone(self) -> bool:
        """True when the targeting admits every request."""
        return not (self.segments_any or self.segments_all or self.segments_none or self.context)

    def matches(self, segments: Collection[str], context: RequestContext) -> bool:
        """Whether one request is eligible.

        Args:
            segments: the user's current segment names.
            context: the request context.

        Returns:
            True when every condition holds.
        """
        if self.segments_any and self.segments_any.isdisjoint(segments):
            return False
        if self.segments_all and not self.segments_all.issubset(segments):
            return False
        if self.segments_none and not self.segments_none.isdisjoint(segments):
            return False
        return all(getattr(context, name) in allowed for name, allowed in self.context.items())


@dataclass(frozen=True)
class Arm:
    """One variant of an experiment and what it changes for the request path.

    Attributes:
        name: the arm's name, recorded in the exposure payload as ``arm``.
        weight: its share of the experiment's exposed units, relative to the other arms.
        policy: a slate policy id for the request (None: unchanged).
        model: ``ranker:<version>``, the ranker version of the request (None: unchanged).
        params: request-time overrides (name -> value) among :data:`ARM_PARAMS`, each
            range-checked; read-only.

    Example:
        >>> Arm("treatment", 1.0, params={"mmr_lambda": 0.3}).changes()
        ('params.mmr_lambda',)
    """

    name: str
    weight: float
    policy: str | None = None
    model: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.weight > 0:
            raise ValueError(f"arm {self.name!r}: weight must be > 0, got {self.weight}")
        for key, value in self.params.items():
            problem = check_param(key, value)
            if problem is not None:
                raise ValueError(f"arm {self.name!r}: {problem}")
        policy_params = sorted(set(self.params) & set(POLICY_PARAMS))
        if len(policy_params) > 1 or (policy_params and self.policy is not None):
            raise ValueError(
                f"arm {self.name!r}: {policy_params + (['policy'] if self.policy else [])} "
                "each choose the slate policy: give one of them"
            )
        if self.model is not None:
            parse_model(self.model)
        object.__setattr__(self, "params", types.MappingProxyType(dict(self.params)))

    def changes(self) -> tuple[str, ...]:
        """The names of what the arm changes: ``policy``, ``model``, ``params.<name>``.

        ``epsilon`` and ``temperature`` change the policy, so they count as ``policy``.
        """
        names = [n for n in ("policy", "model") if getattr(self, n) is not None]
        if set(self.params) & set(POLICY_PARAMS):
            names.insert(0, "policy")
        others = sorted(k for k in self.params if k not in POLICY_PARAMS)
        return (*names, *(f"params.{k}" for k in others))


@dataclass(frozen=True)
class Assignment:
    """A unit's arm in one experiment (one per layer at most).

    Attributes:
        layer: the layer's name.
        experiment: the experiment's name (the exposure payload's ``experiment``).
        arm: the arm's name (the exposure payload's ``arm``).
        bucket: the unit's bucket in the layer.
        policy: the arm's policy id, or None.
        model: the arm's model, or None.
        params: the arm's parameter overrides.
    """

    layer: str
    experiment: str
    arm: str
    bucket: int
    policy: str | None = None
    model: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)

    def payload(self) -> dict[str, str]:
        """The fields the exposure event records: ``{"experiment": ..., "arm": ...}``."""
        return {"experiment": self.experiment, "arm": self.arm}


@dataclass(frozen=True)
class Experiment:
    """One experiment: a bucket range of its layer, targeting, ramp-up and arms.

    Attributes:
        name: unique in the whole set (exposures record it).
        layer: the layer's name.
        first_bucket: first bucket of its range (inclusive).
        last_bucket: last bucket of its range (inclusive).
        traffic: share of the eligible units in the range that are exposed, in [0, 1].
        arms: at least two arms.
        salt: the salt of the ramp-up and arm hash (no ``:``).
        targeting: who is eligible.
        control: the control arm's name (default: the first arm).
        source: where it is defined (``file:line``), for messages.
    """

    name: str
    layer: str
    first_bucket: int
    last_bucket: int
    traffic: float
    arms: tuple[Arm, ...]
    salt: str
    targeting: Targeting = Targeting()
    control: str = ""
    source: str = ""
    _traffic_limit: int = field(init=False, repr=False, compare=False)
    _arm_limits: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 <= self.first_bucket <= self.last_bucket:
            raise ValueError(f"experiment {self.name!r}: bad bucket range")
        if not 0.0 <= self.traffic <= 1.0:
            raise ValueError(f"experiment {self.name!r}: traffic must be in [0, 1]")
        if len(self.arms) < 2 or len({a.name for a in self.arms}) != len(self.arms):
            raise ValueError(f"experiment {self.name!r}: needs two or more distinct arms")
        if ":" in self.salt or not self.salt:
            raise ValueError(f"experiment {self.name!r}: salt must be non-empty without ':'")
        if not self.control:
            object.__setattr__(self, "control", self.arms[0].name)
        elif self.control not in {a.name for a in self.arms}:
            raise ValueError(f"experiment {self.name!r}: control {self.control!r} is no arm")
        # integer thresholds on the 8-byte hash values: exact, and monotone in traffic
        object.__setattr__(self, "_traffic_limit", int(self.traffic * _FULL))
        total = sum(a.weight for a in self.arms)
        cumulative, limits = 0.0, []
        for arm in self.arms[:-1]:
            cumulative += arm.weight
            limits.append(int(cumulative / total * _FULL))
        object.__setattr__(self, "_arm_limits", (*limits, _FULL))

    @property
    def weights(self) -> tuple[float, ...]:
        """The arms' designed shares (summing to 1), in arm order."""
        total = sum(a.weight for a in self.arms)
        return tuple(a.weight / total for a in self.arms)

    @property
    def bucket_count(self) -> int:
        """How many buckets of its layer the experiment owns."""
        return self.last_bucket - self.first_bucket + 1

    def arm_of(self, unit: str) -> Arm | None:
        """The unit's arm if the ramp-up exposes it, ignoring bucket range and targeting.

        Args:
            unit: the unit id as text.

        Returns:
            The arm, or None when the unit is above the traffic share.
        """
        d = digest(self.salt, unit)
        if int.from_bytes(d[:8], "big") >= self._traffic_limit:
            return None
        point = int.from_bytes(d[8:16], "big")
        return self.arms[bisect.bisect_right(self._arm_limits, point)]


@dataclass(frozen=True)
class Layer:
    """Mutually exclusive experiments sharing one hash of the unit.

    Attributes:
        name: the layer's name.
        salt: the bucket hash's salt, unique across layers (no ``:``).
        unit: ``user`` (hash the unit) or ``session`` (hash the context's session id).
        experiments: experiments with disjoint bucket ranges.
        buckets: the bucket count.
    """

    name: str
    salt: str
    unit: str
    experiments: tuple[Experiment, ...]
    buckets: int = DEFAULT_BUCKETS
    _starts: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _by_start: tuple[Experiment, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.unit not in UNIT_KINDS:
            raise ValueError(f"layer {self.name!r}: unit must be one of {list(UNIT_KINDS)}")
        if ":" in self.salt or not self.salt:
            raise ValueError(f"layer {self.name!r}: salt must be non-empty without ':'")
        ordered = sorted(self.experiments, key=lambda e: e.first_bucket)
        for before, after in itertools.pairwise(ordered):
            if after.first_bucket <= before.last_bucket:
                raise ValueError(
                    f"layer {self.name!r}: experiments {before.name!r} and {after.name!r} "
                    "share buckets"
                )
        if ordered and ordered[-1].last_bucket >= self.buckets:
            raise ValueError(f"layer {self.name!r}: a bucket range ends past {self.buckets - 1}")
        object.__setattr__(self, "_starts", tuple(e.first_bucket for e in ordered))
        object.__setattr__(self, "_by_start", tuple(ordered))

    def experiment_at(self, bucket: int) -> Experiment | None:
        """The experiment owning ``bucket``, or None when the bucket is free."""
        i = bisect.bisect_right(self._starts, bucket) - 1
        if i < 0:
            return None
        exp = self._by_start[i]
        return exp if bucket <= exp.last_bucket else None

    def assign(
        self, unit: str, segments: Collection[str], context: RequestContext
    ) -> Assignment | None:
        """The unit's assignment in this layer, or None.

        Args:
            unit: the hashed id (the user id, or the session id for a session layer).
            segments: the user's segments.
            context: the request context.

        Returns:
            An :class:`Assignment`, or None (free bucket, not eligible, not ramped up).
        """
        bucket = bucket_of(self.salt, unit, self.buckets)
        exp = self.experiment_at(bucket)
        if exp is None or not exp.targeting.matches(segments, context):
            return None
        arm = exp.arm_of(unit)
        if arm is None:
            return None
        return Assignment(self.name, exp.name, arm.name, bucket, arm.policy, arm.model, arm.params)


@dataclass(frozen=True)
class ExperimentSet:
    """All layers of an experiments file; :meth:`assign` is the request path's call.

    Attributes:
        layers: layers with unique names and salts; no two change the same thing.
        version: where the set came from (``file@digest``), for logs.
    """

    layers: tuple[Layer, ...] = ()
    version: str = ""

    def __post_init__(self) -> None:
        names = [e.name for layer in self.layers for e in layer.experiments]
        if len(set(names)) != len(names):
            raise ValueError("experiment names must be unique across layers")
        salts = [layer.salt for layer in self.layers]
        if len(set(salts)) != len(salts):
            raise ValueError("layers need different salts (the same salt correlates them)")
        owner: dict[str, str] = {}
        for layer in self.layers:
            for change in {c for e in layer.experiments for a in e.arms for c in a.changes()}:
                if owner.setdefault(change, layer.name) != layer.name:
                    raise ValueError(
                        f"{change!r} is changed in layers {owner[change]!r} and {layer.name!r}"
                    )

    def experiment(self, name: str) -> Experiment:
        """The experiment called ``name``.

        Raises:
            KeyError: no such experiment.
        """
        for layer in self.layers:
            for exp in layer.experiments:
                if exp.name == name:
                    return exp
        raise KeyError(f"no experiment {name!r}")

    def assign(
        self,
        unit: str | int,
        segments: Collection[str] = (),
        context: RequestContext = UNKNOWN,
    ) -> list[Assignment]:
        """The unit's assignments, one per layer at most, in layer order.

        Pure and deterministic: the same unit, segments and context always give the
        same list. The anonymous user (no personalization consent) is in no user layer.

        Args:
            unit: the user id (integer ids hash as their decimal text). Session layers
                hash ``context.session_id`` instead and assign nothing without one.
            segments: the user's current segment names.
            context: the request context.

        Returns:
            The assignments.

        Example:
            >>> ExperimentSet().assign(7)
            []
        """
        user = str(unit)
        if not isinstance(segments, frozenset | set):
            segments = frozenset(segments)
        out: list[Assignment] = []
        for layer in self.layers:
            hashed = user if layer.unit == "user" else context.session_id
            if hashed is None or (layer.unit == "user" and user == ANONYMOUS_USER):
                continue
            assignment = layer.assign(hashed, segments, context)
            if assignment is not None:
                out.append(assignment)
        return out


@dataclass(frozen=True)
class Changes:
    """What a request's assignments change, merged (no two layers change one thing).

    Attributes:
        policy: the policy id to use, or None (unchanged).
        model: the model to use, or None.
        params: parameter overrides.
        exposures: the ``{"experiment", "arm"}`` records for the exposure payload.
    """

    policy: str | None = None
    model: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    exposures: tuple[Mapping[str, str], ...] = ()

    @property
    def effective_policy(self) -> str | None:
        """The policy id the changes select: ``policy``, or the one a policy parameter
        names (``epsilon: 0.1`` -> ``epsilon_greedy:0.1``); None: unchanged.

        Example:
            >>> Changes(params={"temperature": 0.5}).effective_policy
            'plackett_luce:0.5'
        """
        if self.policy is not None:
            return self.policy
        for key, family in POLICY_PARAMS.items():
            if key in self.params:
                return f"{family}:{float(self.params[key]):g}"
        return None

    @property
    def settings_params(self) -> dict[str, Any]:
        """The overrides of the aggregation settings and retrieval depth (every
        parameter but the policy's)."""
        return {k: v for k, v in self.params.items() if k not in POLICY_PARAMS}


def merged_changes(assignments: Iterable[Assignment]) -> Changes:
    """Merges the assignments of one request into the changes the request path applies.

    Args:
        assignments: from :meth:`ExperimentSet.assign`.

    Returns:
        The merged :class:`Changes`.

    Example:
        >>> a = Assignment("ranking", "explore", "explore", 3, policy="epsilon_greedy:0.1")
        >>> merged_changes([a]).policy
        'epsilon_greedy:0.1'
    """
    policy: str | None = None
    model: str | None = None
    params: dict[str, Any] = {}
    records: list[Mapping[str, str]] = []
    for a in assignments:
        policy = a.policy if a.policy is not None else policy
        model = a.model if a.model is not None else model
        params.update(a.params)
        records.append(a.payload())
    return Changes(policy, model, params, tuple(records))


def assign_many(
    experiments: ExperimentSet,
    units: Sequence[str | int],
    segments: Collection[str] = (),
    context: RequestContext = UNKNOWN,
) -> list[list[Assignment]]:
    """:meth:`ExperimentSet.assign` for many units with the same segments and context.

    Args:
        experiments: the compiled set.
        units: unit ids.
        segments: the segments every unit has.
        context: the context of every request.

    Returns:
        One assignment list per unit.
    """
    frozen = frozenset(segments)
    return [experiments.assign(u, frozen, context) for u in units]

"""Experiments from YAML, checked whole at load time, with ``file:line:column`` errors.

A file (``configs/experiments/example.yaml`` is annotated key by key)::

    buckets: 10000                 # int: buckets per layer (default 10000)
    layers:
      - name: ranking              # [a-z][a-z0-9_]*, unique
        salt: ranking-2026-12      # hash salt, unique across layers (default: the name)
        unit: user                 # user | session (default user)
        experiments:
          - name: explore_eps10    # unique across the file
            buckets: 0..4999       # inclusive range of the layer's buckets (default all)
            traffic: 0.10          # share of eligible units exposed, in [0, 1]
            targeting:
              segments: {any: [engaged_clickers], none: [churn_risk]}
              context: {device_type: [mobile], surface: [home]}
            control: control       # the control arm (default: the first)
            arms:
              - {name: control, weight: 1}
              - {name: explore, weight: 1, policy: "epsilon_greedy:0.1"}
            analysis: {primary: ctr, guardrails: [dwell], planned_units: 80000, mde: 0.03}

Checked: unknown and duplicate keys, names, unique experiment names and layer salts,
bucket ranges inside the layer and disjoint within it, traffic, arms (two or more,
distinct names, positive weights), the arms' ``params`` (known names and ranges,
:data:`recsys.runtime.experiments.ARM_PARAMS`) and ``model`` (``ranker:<version>``),
context fields and values (the request context's
rules, :func:`recsys.runtime.context.check_field`), that no two layers change the same
thing (``policy``, ``model``, ``params.<name>``), and the analysis settings. Every
error is an :class:`~recsys.experiments.errors.ExperimentConfigError` at the node that
is wrong; a file loads whole or not at all.

Example:
    >>> loaded = load_experiments_text('''
    ... layers:
    ...   - name: ranking
    ...     experiments:
    ...       - name: explore
    ...         arms: [{name: control, weight: 1}, {name: explore, weight: 1, policy: eps}]
    ... ''')
    >>> exp = loaded.experiments.experiment("explore")
    >>> exp.first_bucket, exp.last_bucket, exp.traffic, exp.control
    (0, 9999, 1.0, 'control')
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from recsys.experiments.config import METRIC_NAMES, AnalysisConfig
from recsys.experiments.errors import ExperimentConfigError
from recsys.runtime.context import check_field
from recsys.runtime.experiments import (
    ARM_PARAMS,
    CONTEXT_FIELDS,
    DEFAULT_BUCKETS,
    UNIT_KINDS,
    Arm,
    Experiment,
    ExperimentSet,
    Layer,
    Targeting,
    check_param,
    parse_model,
)

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_SALT = re.compile(r"^[A-Za-z0-9_.\-/]{1,128}$")
_RANGE = re.compile(r"^\s*(\d+)\s*\.\.\s*(\d+)\s*$")
_MAX_BUCKETS = 1_000_000
_TOP = {"buckets", "layers"}
_LAYER = {"name", "description", "salt", "unit", "experiments"}
_EXPERIMENT = {
    "name",
    "description",
    "buckets",
    "traffic",
    "salt",
    "targeting",
    "control",
    "arms",
    "analysis",
}
_ARM = {"name", "description", "weight", "policy", "model", "params"}
_ANALYSIS = {
    "primary",
    "guardrails",
    "alpha",
    "srm_alpha",
    "planned_units",
    "mixture_sd",
    "looks",
    "cuped",
    "mde",
    "power",
}


@dataclass(frozen=True)
class LoadedExperiments:
    """An experiments file, compiled.

    Attributes:
        experiments: the compiled set the request path assigns with.
        analysis: experiment name -> its analysis settings.
        descriptions: experiment name -> its description ("" when none).
        source: ``file@digest`` of the text.
    """

    experiments: ExperimentSet
    analysis: Mapping[str, AnalysisConfig]
    descriptions: Mapping[str, str]
    source: str


class _Doc:
    """The YAML text and helpers that raise errors located at a node."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.where = ""  # "layer 'x': experiment 'y': " prefix of messages

    def error(self, node: yaml.Node, message: str) -> ExperimentConfigError:
        mark = node.start_mark
        return ExperimentConfigError(
            self.where + message, mark.line + 1, mark.column + 1, self.source
        )

    def mapping(self, node: yaml.Node, keys: Collection[str], what: str) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, f"{what} must be a mapping")
        out: dict[str, yaml.Node] = {}
        for k, v in node.value:
            name = k.value if isinstance(k, yaml.ScalarNode) else None
            if name is None or name not in keys:
                raise self.error(k, f"unknown key {name!r} in {what}; expected {sorted(keys)}")
            if name in out:
                # PyYAML keeps the last of two equal keys: a silent override otherwise
                raise self.error(k, f"key {name!r} appears twice in {what}")
            out[name] = v
        return out

    def sequence(self, node: yaml.Node, what: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(node, f"{what} must be a list")
        return list(node.value)

    def scalar(self, node: yaml.Node, what: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(node, f"{what} must be a single value")
        return yaml.SafeLoader("").construct_object(node, deep=True)

    def text(self, node: yaml.Node, what: str, pattern: re.Pattern[str] | None = None) -> str:
        value = self.scalar(node, what)
        if not isinstance(value, str) or not value:
            raise self.error(node, f"{what} must be a non-empty string, got {value!r}")
        if pattern is not None and not pattern.match(value):
            raise self.error(node, f"{what} {value!r} must match {pattern.pattern}")
        return value

    def number(
        self, node: yaml.Node, what: str, low: float, high: float, integer: bool = False
    ) -> float:
        value = self.scalar(node, what)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(node, f"{what} must be a number, got {value!r}")
        if integer and not float(value).is_integer():
            raise self.error(node, f"{what} must be an integer, got {value!r}")
        if not math.isfinite(value) or not low <= value <= high:
            raise self.error(node, f"{what} must be in [{low:g}, {high:g}], got {value!r}")
        return float(value)

    def names(self, node: yaml.Node, what: str) -> list[str]:
        nodes = [node] if isinstance(node, yaml.ScalarNode) else self.sequence(node, what)
        return [self.text(n, what) for n in nodes]


def load_experiments_text(text: str, source: str = "<experiments>") -> LoadedExperiments:
    """Parses, checks and compiles an experiments document.

    Args:
        text: the YAML.
        source: the file name for error messages.

    Returns:
        The compiled :class:`LoadedExperiments`.

    Raises:
        ExperimentConfigError: located at ``source:line:column``.
    """
    doc = _Doc(source)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise ExperimentConfigError(f"YAML: {e.problem or e}", line, col, source) from None
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    version = f"{source}@{digest}"
    if root is None:
        return LoadedExperiments(ExperimentSet((), version), {}, {}, version)
    top = doc.mapping(root, _TOP, "the experiments file")
    buckets = DEFAULT_BUCKETS
    if "buckets" in top:
        buckets = int(doc.number(top["buckets"], "buckets", 2, _MAX_BUCKETS, integer=True))
    layers: list[Layer] = []
    analysis: dict[str, AnalysisConfig] = {}
    descriptions: dict[str, str] = {}
    seen_layers: dict[str, int] = {}
    seen_salts: dict[str, str] = {}
    seen_experiments: dict[str, str] = {}
    owners: dict[str, str] = {}  # changed thing -> layer that changes it
    for node in doc.sequence(top["layers"], "'layers'") if "layers" in top else []:
        doc.where = ""
        fields = doc.mapping(node, _LAYER, "a layer")
        if "name" not in fields:
            raise doc.error(node, "a layer needs a name")
        name = doc.text(fields["name"], "layer name", _NAME)
        if name in seen_layers:
            raise doc.error(
                fields["name"], f"layer {name!r} is also defined at line {seen_layers[name]}"
            )
        seen_layers[name] = node.start_mark.line + 1
        doc.where = f"layer {name!r}: "
        salt = doc.text(fields["salt"], "salt", _SALT) if "salt" in fields else name
        if salt in seen_salts:
            raise doc.error(
                fields.get("salt", fields["name"]),
                f"salt {salt!r} is also layer {seen_salts[salt]!r}'s: layers with one salt "
                "hash every unit alike, so their experiments would not be independent",
            )
        seen_salts[salt] = name
        unit = "user"
        if "unit" in fields:
            unit = doc.text(fields["unit"], "unit")
            if unit not in UNIT_KINDS:
                raise doc.error(
                    fields["unit"], f"unit must be one of {list(UNIT_KINDS)}, got {unit!r}"
                )
        experiments: list[Experiment] = []
        entries = (
            doc.sequence(fields["experiments"], "'experiments'") if "experiments" in fields else []
        )
        for entry in entries:
            doc.where = f"layer {name!r}: "
            exp, plan, description = _experiment(doc, entry, name, salt, buckets, len(entries))
            if exp.name in seen_experiments:
                raise doc.error(
                    entry,
                    f"the name is also an experiment at {seen_experiments[exp.name]}",
                )
            for other in experiments:
                if exp.first_bucket <= other.last_bucket and other.first_bucket <= exp.last_bucket:
                    raise doc.error(
                        entry,
                        f"buckets {exp.first_bucket}..{exp.last_bucket} overlap experiment "
                        f"{other.name!r}'s {other.first_bucket}..{other.last_bucket} "
                        f"({other.source}); experiments of one layer are mutually exclusive",
                    )
            seen_experiments[exp.name] = exp.source
            for change in {c for arm in exp.arms for c in arm.changes()}:
                if owners.setdefault(change, name) != name:
                    raise doc.error(
                        entry,
                        f"changes {change!r}, which layer "
                        f"{owners[change]!r} changes too; put both in one layer (mutually "
                        "exclusive) or change different things",
                    )
            experiments.append(exp)
            analysis[exp.name] = plan
            descriptions[exp.name] = description
        layers.append(Layer(name, salt, unit, tuple(experiments), buckets))
    return LoadedExperiments(ExperimentSet(tuple(layers), version), analysis, descriptions, version)


def load_experiments(path: str | Path) -> LoadedExperiments:
    """Loads an experiments file (see :func:`load_experiments_text`).

    Args:
        path: the YAML file.

    Returns:
        The compiled file.

    Example:
        >>> load_experiments("configs/experiments/example.yaml").source  # doctest: +SKIP
        'configs/experiments/example.yaml@...'
    """
    p = Path(path)
    return load_experiments_text(p.read_text(encoding="utf-8"), str(p))


def _experiment(
    doc: _Doc, node: yaml.Node, layer: str, layer_salt: str, buckets: int, siblings: int
) -> tuple[Experiment, AnalysisConfig, str]:
    fields = doc.mapping(node, _EXPERIMENT, "an experiment")
    if "name" not in fields:
        raise doc.error(node, "an experiment needs a name")
    name = doc.text(fields["name"], "experiment name", _NAME)
    doc.where += f"experiment {name!r}: "
    description = doc.text(fields["description"], "description") if "description" in fields else ""
    if "buckets" in fields:
        first, last = _bucket_range(doc, fields["buckets"], buckets)
    elif siblings == 1:
        first, last = 0, buckets - 1
    else:
        raise doc.error(
            node, "needs 'buckets' (a range like 0..4999): its layer has other experiments"
        )
    traffic = doc.number(fields["traffic"], "traffic", 0.0, 1.0) if "traffic" in fields else 1.0
    salt = doc.text(fields["salt"], "salt", _SALT) if "salt" in fields else f"{layer_salt}/{name}"
    targeting = _targeting(doc, fields["targeting"]) if "targeting" in fields else Targeting()
    if "arms" not in fields:
        raise doc.error(node, "an experiment needs 'arms' (two or more)")
    arm_nodes = doc.sequence(fields["arms"], "'arms'")
    if len(arm_nodes) < 2:
        raise doc.error(fields["arms"], "an experiment needs two or more arms")
    arms: list[Arm] = []
    for arm_node in arm_nodes:
        arm = _arm(doc, arm_node)
        if any(a.name == arm.name for a in arms):
            raise doc.error(arm_node, f"arm {arm.name!r} appears twice")
        arms.append(arm)
    control = arms[0].name
    if "control" in fields:
        control = doc.text(fields["control"], "control")
        if control not in {a.name for a in arms}:
            raise doc.error(
                fields["control"],
                f"control {control!r} is not one of the arms {[a.name for a in arms]}",
            )
    plan = _analysis(doc, fields["analysis"]) if "analysis" in fields else AnalysisConfig()
    source = f"{doc.source}:{node.start_mark.line + 1}"
    exp = Experiment(
        name, layer, first, last, traffic, tuple(arms), salt, targeting, control, source
    )
    return exp, plan, description


def _bucket_range(doc: _Doc, node: yaml.Node, buckets: int) -> tuple[int, int]:
    if isinstance(node, yaml.SequenceNode):
        ends = [doc.number(n, "bucket", 0, buckets - 1, integer=True) for n in node.value]
        if len(ends) != 2:
            raise doc.error(node, "buckets: a range is [first, last] or first..last")
        first, last = int(ends[0]), int(ends[1])
    else:
        match = _RANGE.match(str(doc.scalar(node, "buckets")))
        if not match:
            raise doc.error(node, "buckets: a range is first..last, e.g. 0..4999")
        first, last = int(match.group(1)), int(match.group(2))
    if last >= buckets:
        raise doc.error(
            node, f"buckets {first}..{last} end past the layer's last bucket {buckets - 1}"
        )
    if first > last:
        raise doc.error(node, f"buckets {first}..{last}: the first is after the last")
    return first, last


def _targeting(doc: _Doc, node: yaml.Node) -> Targeting:
    fields = doc.mapping(node, {"segments", "context"}, "targeting")
    any_of: list[str] = []
    all_of: list[str] = []
    none_of: list[str] = []
    if "segments" in fields:
        seg = fields["segments"]
        if isinstance(seg, yaml.MappingNode):
            parts = doc.mapping(seg, {"any", "all", "none"}, "targeting.segments")
            any_of = doc.names(parts["any"], "segments.any") if "any" in parts else []
            all_of = doc.names(parts["all"], "segments.all") if "all" in parts else []
            none_of = doc.names(parts["none"], "segments.none") if "none" in parts else []
        else:
            any_of = doc.names(seg, "segments")  # a plain list: any of them
        both = sorted(set(any_of + all_of) & set(none_of))
        if both:
            raise doc.error(
                seg, f"segments {both} are both required and excluded: nobody is eligible"
            )
    context: dict[str, frozenset[str]] = {}
    if "context" in fields:
        ctx = doc.mapping(fields["context"], CONTEXT_FIELDS, "targeting.context")
        for key, value_node in ctx.items():
            values = doc.names(value_node, f"context.{key}")
            nodes = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for v, n in zip(values, nodes, strict=True):
                # the request context's own rules: a value no request can have is a typo
                problem = check_field(key, v)
                if problem is not None:
                    raise doc.error(n, problem)
            context[key] = frozenset(values)
    return Targeting(frozenset(any_of), frozenset(all_of), frozenset(none_of), context)


def _arm(doc: _Doc, node: yaml.Node) -> Arm:
    fields = doc.mapping(node, _ARM, "an arm")
    if "name" not in fields:
        raise doc.error(node, "an arm needs a name")
    name = doc.text(fields["name"], "arm name", _NAME)
    if "weight" not in fields:
        raise doc.error(node, f"arm {name!r} needs a weight")
    weight = doc.number(fields["weight"], f"arm {name!r}: weight", 0.0, 1e9)
    if weight <= 0:
        raise doc.error(fields["weight"], f"arm {name!r}: weight must be > 0")
    policy = doc.text(fields["policy"], "policy") if "policy" in fields else None
    model = doc.text(fields["model"], "model") if "model" in fields else None
    params: dict[str, Any] = {}
    if "params" in fields:
        pnode = fields["params"]
        if not isinstance(pnode, yaml.MappingNode):
            raise doc.error(pnode, f"arm {name!r}: params must be a mapping of name: value")
        keys = [k.value for k, _ in pnode.value]
        if len(set(keys)) != len(keys):
            raise doc.error(pnode, f"arm {name!r}: a parameter appears twice")
        for key_node, value_node in pnode.value:
            key = doc.scalar(key_node, "a parameter name")
            if not isinstance(key, str) or not key:
                raise doc.error(key_node, f"arm {name!r}: parameter names are strings")
            value = doc.scalar(value_node, f"parameter {key!r}")
            # the request path's own table of parameters: a typo or an out-of-range
            # value fails here, at its node, not silently in the served request
            problem = check_param(key, value)
            if problem is not None:
                raise doc.error(key_node if key not in ARM_PARAMS else value_node,
                                f"arm {name!r}: {problem}")  # fmt: skip
            params[key] = value
    if model is not None:
        try:
            parse_model(model)
        except ValueError as error:
            raise doc.error(fields["model"], f"arm {name!r}: {error}") from None
    try:
        return Arm(name, weight, policy, model, params)
    except ValueError as error:  # e.g. a policy parameter next to `policy`
        raise doc.error(node, str(error)) from None


def _analysis(doc: _Doc, node: yaml.Node) -> AnalysisConfig:
    fields = doc.mapping(node, _ANALYSIS, "analysis")
    defaults = AnalysisConfig()

    def metric(n: yaml.Node, what: str) -> str:
        value = doc.text(n, what)
        if value not in METRIC_NAMES:
            raise doc.error(n, f"{what}: unknown metric {value!r}; known: {list(METRIC_NAMES)}")
        return value

    primary = metric(fields["primary"], "primary") if "primary" in fields else defaults.primary
    guardrails: tuple[str, ...] = ()
    if "guardrails" in fields:
        gnode = fields["guardrails"]
        nodes = [gnode] if isinstance(gnode, yaml.ScalarNode) else doc.sequence(gnode, "guardrails")
        guardrails = tuple(metric(n, "guardrails") for n in nodes)
    planned: int | None = None
    if (
        "planned_units" in fields
        and doc.scalar(fields["planned_units"], "planned_units") is not None
    ):
        planned = int(doc.number(fields["planned_units"], "planned_units", 2, 1e12, integer=True))
    cuped = defaults.cuped
    if "cuped" in fields:
        value = doc.scalar(fields["cuped"], "cuped")
        if not isinstance(value, bool):
            raise doc.error(fields["cuped"], f"cuped must be true or false, got {value!r}")
        cuped = value
    mde: float | None = None
    if "mde" in fields and doc.scalar(fields["mde"], "mde") is not None:
        mde = _open_number(
            doc, fields["mde"], "mde (the relative lift to detect, e.g. 0.03)", "> 0", math.inf
        )
    power = defaults.power
    if "power" in fields:
        power = _open_number(doc, fields["power"], "power (the wanted power)", "in (0, 1)", 1.0)
    return AnalysisConfig(
        primary=primary,
        guardrails=guardrails,
        alpha=doc.number(fields["alpha"], "alpha", 1e-6, 0.5)
        if "alpha" in fields
        else defaults.alpha,
        srm_alpha=(
            doc.number(fields["srm_alpha"], "srm_alpha", 1e-12, 0.5)
            if "srm_alpha" in fields
            else defaults.srm_alpha
        ),
        planned_units=planned,
        mixture_sd=(
            doc.number(fields["mixture_sd"], "mixture_sd", 1e-6, 10.0)
            if "mixture_sd" in fields
            else defaults.mixture_sd
        ),
        looks=int(doc.number(fields["looks"], "looks", 1, 1000, integer=True))
        if "looks" in fields
        else defaults.looks,
        cuped=cuped,
        mde=mde,
        power=power,
    )


def _open_number(doc: _Doc, node: yaml.Node, what: str, bounds: str, high: float) -> float:
    """A number in the open interval ``(0, high)``, else an error naming ``bounds``."""
    value = doc.scalar(node, what)
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or math.isnan(value) or not 0 < value < high:
        raise doc.error(node, f"{what} must be a number {bounds}, got {value!r}")
    return float(value)

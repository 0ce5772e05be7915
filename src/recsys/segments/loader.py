"""Loading segment definitions from YAML, with errors at file line and column.

File format::

    segments:
      - name: evening_mobile_readers      # [a-z0-9_], unique
        description: free text
        enter: count(page_view, 24h) >= 5 and device == "mobile"
        exit: count(page_view, 24h) < 2   # optional (hysteresis); default: not enter
        evaluate_on: [page_view]          # optional; default: inferred from the rule

Every problem (YAML syntax, unknown keys, rule syntax, unknown feature, type
mismatch) raises :class:`RuleError` whose message starts with
``file:line:column``, pointing into the rule text itself.

Example:
    >>> segs = load_segments_text("segments: [{name: s, enter: 'count(click, 1h) >= 2'}]")
    >>> segs[0].name, sorted(segs[0].triggers)
    ('s', ['click'])
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from recsys.events.schema import EventType
from recsys.profiles.attributes import AttributeSchema
from recsys.profiles.config import ProfileConfig
from recsys.segments.catalog import Variable, build_catalog
from recsys.segments.compiler import CompiledRule, compile_rule
from recsys.segments.errors import RuleError

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_KEYS = frozenset({"name", "description", "enter", "rule", "exit", "evaluate_on"})
_EVENT_TYPES = {t.value for t in EventType}


@dataclass(frozen=True)
class SegmentDefinition:
    """One compiled segment.

    Attributes:
        name: segment name.
        description: for humans.
        enter: a non-member enters when this holds.
        exit: a member leaves when this holds; None means ``not enter``.
            A separate exit rule gives hysteresis (enter at >= 10, leave at < 5).
        triggers: event types that cause an evaluation.
        time_based: membership can change with time alone (the sweep checks it).
        source: ``file:line`` where it is defined.
    """

    name: str
    description: str
    enter: CompiledRule
    exit: CompiledRule | None
    triggers: frozenset[str]
    time_based: bool
    source: str


def _locate(text: str, node: yaml.Node, offset: int) -> tuple[int, int]:
    """File line and column (1-based) of ``offset`` in a scalar node's value.

    Block and folded scalars, quotes and escapes change only whitespace and
    quoting, so the value's non-space characters are matched in order against
    the node's raw text.
    """
    start, end = node.start_mark.index, node.end_mark.index
    raw = text[start:end]
    value = str(node.value)
    ri = 0
    idx = -1
    for vi, ch in enumerate(value):
        if ch.isspace():
            continue
        j = raw.find(ch, ri)
        if j < 0:
            break
        if vi >= offset:
            idx = j
            break
        ri = j + 1
    if idx < 0:  # at the end of the rule: just after its last character
        idx = ri
    absolute = start + idx
    line = text.count("\n", 0, absolute) + 1
    column = absolute - (text.rfind("\n", 0, absolute) + 1) + 1
    return line, column


def _at(
    text: str, node: yaml.Node, source: str, message: str, segment: str | None = None
) -> RuleError:
    mark = node.start_mark
    return RuleError(message, 0, mark.line + 1, mark.column + 1, source, segment)


def load_segments_text(
    text: str,
    source: str = "<segments>",
    config: ProfileConfig | None = None,
    attributes: AttributeSchema | None = None,
    catalog: dict[str, Variable] | None = None,
) -> list[SegmentDefinition]:
    """Parses and compiles segment definitions from YAML text.

    Args:
        text: the YAML.
        source: file name for error messages.
        config: profile settings (windows).
        attributes: static attribute schema (features rules may use).
        catalog: overrides the features derived from ``attributes``.

    Returns:
        The segments, in file order.

    Raises:
        RuleError: located at ``source:line:column``.
    """
    config = config or ProfileConfig()
    catalog = catalog or build_catalog(attributes or AttributeSchema.default())
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise RuleError(f"YAML: {e.problem or e}", 0, line, col, source) from None
    if root is None:
        return []
    items = root
    if isinstance(root, yaml.MappingNode):
        found = {k.value: v for k, v in root.value}
        unknown = [k for k, _ in root.value if k.value != "segments"]
        if unknown:
            raise _at(text, unknown[0], source, f"unknown top-level key {unknown[0].value!r}")
        if "segments" not in found:
            raise _at(text, root, source, "expected a 'segments:' list")
        items = found["segments"]
    if not isinstance(items, yaml.SequenceNode):
        raise _at(text, items, source, "'segments' must be a list of segment definitions")
    out: list[SegmentDefinition] = []
    seen: set[str] = set()
    for item in items.value:
        seg = _segment(text, item, source, config, catalog)
        if seg.name in seen:
            raise _at(text, item, source, f"segment {seg.name!r} is defined twice")
        seen.add(seg.name)
        out.append(seg)
    return out


def _segment(
    text: str, item: yaml.Node, source: str, config: ProfileConfig, catalog: dict[str, Variable]
) -> SegmentDefinition:
    if not isinstance(item, yaml.MappingNode):
        raise _at(text, item, source, "a segment must be a mapping with name and enter")
    fields: dict[str, yaml.Node] = {}
    for k, v in item.value:
        if k.value not in _KEYS:
            raise _at(text, k, source, f"unknown key {k.value!r}; expected one of {sorted(_KEYS)}")
        fields[k.value] = v
    name_node = fields.get("name")
    if name_node is None or not isinstance(name_node, yaml.ScalarNode):
        raise _at(text, item, source, "segment without a name")
    name = str(name_node.value)
    if not _NAME_RE.match(name):
        raise _at(text, name_node, source, f"segment name {name!r} must match [a-z][a-z0-9_]*")
    if "enter" in fields and "rule" in fields:
        raise _at(text, fields["rule"], source, "give 'enter' or 'rule', not both", name)
    enter_node = fields.get("enter") or fields.get("rule")
    if enter_node is None:
        raise _at(text, item, source, "segment without an 'enter' rule", name)

    def compile_node(node: yaml.Node) -> CompiledRule:
        if not isinstance(node, yaml.ScalarNode) or not isinstance(node.value, str):
            raise _at(text, node, source, "a rule must be a string", name)
        try:
            return compile_rule(node.value, catalog, config)
        except RuleError as e:
            line, col = _locate(text, node, e.offset)
            raise e.located(line, col, source, name) from None

    enter = compile_node(enter_node)
    exit_rule = compile_node(fields["exit"]) if "exit" in fields else None
    triggers = enter.triggers | (exit_rule.triggers if exit_rule else frozenset())
    if "evaluate_on" in fields:
        node = fields["evaluate_on"]
        if not isinstance(node, yaml.SequenceNode):
            raise _at(text, node, source, "evaluate_on must be a list of event types", name)
        chosen = set()
        for t in node.value:
            if t.value not in _EVENT_TYPES:
                raise _at(text, t, source, f"unknown event type {t.value!r}", name)
            chosen.add(t.value)
        triggers = frozenset(chosen)
    description = fields["description"].value if "description" in fields else ""
    return SegmentDefinition(
        name=name,
        description=str(description),
        enter=enter,
        exit=exit_rule,
        triggers=triggers,
        time_based=enter.time_based or (exit_rule.time_based if exit_rule else False),
        source=f"{source}:{item.start_mark.line + 1}",
    )


def segment_files(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """The files :func:`load_segments` reads: each path as given, a folder as
    its ``*.yaml`` files in name order."""
    listed = [paths] if isinstance(paths, str | Path) else list(paths)
    return [
        f
        for x in listed
        for f in (sorted(Path(x).glob("*.yaml")) if Path(x).is_dir() else [Path(x)])
    ]


def load_segment_texts(
    texts: Iterable[tuple[str, str]],
    config: ProfileConfig | None = None,
    attributes: AttributeSchema | None = None,
) -> list[SegmentDefinition]:
    """Compiles several files' YAML text, ``(file name, text)`` in order, as one
    set of definitions (a name defined twice across them is an error).

    Raises:
        RuleError: located at ``file:line:column``.
    """
    out: list[SegmentDefinition] = []
    names: dict[str, str] = {}
    for f, text in texts:
        for seg in load_segments_text(text, f, config, attributes):
            if seg.name in names:
                raise RuleError(
                    f"segment {seg.name!r} is also defined at {names[seg.name]}",
                    0,
                    int(seg.source.rsplit(":", 1)[1]),
                    1,
                    f,
                )
            names[seg.name] = seg.source
            out.append(seg)
    return out


def load_segments(
    paths: str | Path | Iterable[str | Path],
    config: ProfileConfig | None = None,
    attributes: AttributeSchema | None = None,
) -> list[SegmentDefinition]:
    """Loads segment files (a file, a directory of ``*.yaml``, or a list of them).

    Raises:
        RuleError: located at ``file:line:column``; also for a name defined
            in two files.
    """
    texts = [(str(f), f.read_text(encoding="utf-8")) for f in segment_files(paths)]
    return load_segment_texts(texts, config, attributes)

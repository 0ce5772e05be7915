"""Syntax tree of a segment rule. Every node keeps its offset for error messages."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Node:
    """Base of all nodes; ``pos`` is the 0-based offset in the rule text."""

    pos: int


@dataclass(frozen=True, slots=True)
class Literal(Node):
    """A number, string or boolean."""

    value: float | int | str | bool


@dataclass(frozen=True, slots=True)
class Duration(Node):
    """A window such as ``24h``; ``text`` as written."""

    text: str


@dataclass(frozen=True, slots=True)
class Name(Node):
    """A feature (variable) or, inside some calls, an event type."""

    name: str


@dataclass(frozen=True, slots=True)
class Call(Node):
    """``func(args...)``."""

    func: str
    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Unary(Node):
    """``not x`` or ``-x``."""

    op: str
    operand: Node


@dataclass(frozen=True, slots=True)
class Binary(Node):
    """Arithmetic (``+ - * /``), comparison (``== != < <= > >=``) or logic (``and or``)."""

    op: str
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class ListLit(Node):
    """``[a, b, c]``."""

    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class RangeLit(Node):
    """``lo..hi`` (inclusive)."""

    lo: Node
    hi: Node


@dataclass(frozen=True, slots=True)
class InOp(Node):
    """``x in collection`` (``negated`` for ``not in``)."""

    item: Node
    collection: Node
    negated: bool


@dataclass(frozen=True, slots=True)
class Between(Node):
    """``x between lo and hi`` (inclusive)."""

    item: Node
    lo: Node
    hi: Node

"""Parser of the segment rule language (recursive descent).

Grammar, loosest binding first::

    rule    := or
    or      := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | cmp
    cmp     := sum [ ("=="|"!="|"<"|"<="|">"|">=") sum
                   | ["not"] "in" coll
                   | "between" sum "and" sum ]
    coll    := "[" [sum ("," sum)*] "]" | sum [".." sum]
    sum     := prod (("+"|"-") prod)*
    prod    := unary (("*"|"/") unary)*
    unary   := "-" unary | atom
    atom    := NUMBER | STRING | DURATION | "true" | "false"
             | NAME ["(" [rule ("," rule)*] ")"] | "(" rule ")"

Example:
    >>> parse("age between 25 and 34 and device == 'mobile'").op
    'and'
"""

from __future__ import annotations

from recsys.segments.errors import RuleError
from recsys.segments.lexer import Token, tokenize
from recsys.segments.syntax import (
    Between,
    Binary,
    Call,
    Duration,
    InOp,
    ListLit,
    Literal,
    Name,
    Node,
    RangeLit,
    Unary,
)

_COMPARE = frozenset({"==", "!=", "<", "<=", ">", ">="})


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.i = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def _next(self) -> Token:
        t = self.tokens[self.i]
        self.i += 1
        return t

    def _is(self, kind: str, text: str | None = None) -> bool:
        t = self.tok
        return t.kind == kind and (text is None or t.text == text)

    def _expect(self, kind: str, text: str, what: str) -> Token:
        if not self._is(kind, text):
            raise RuleError(f"expected {what}, found {_describe(self.tok)}", self.tok.pos)
        return self._next()

    def parse(self) -> Node:
        if self._is("eof"):
            raise RuleError("empty rule", 0)
        node = self.or_()
        if not self._is("eof"):
            raise RuleError(f"unexpected {_describe(self.tok)}", self.tok.pos)
        return node

    def or_(self) -> Node:
        node = self.and_()
        while self._is("keyword", "or"):
            pos = self._next().pos
            node = Binary(pos, "or", node, self.and_())
        return node

    def and_(self) -> Node:
        node = self.not_()
        while self._is("keyword", "and"):
            pos = self._next().pos
            node = Binary(pos, "and", node, self.not_())
        return node

    def not_(self) -> Node:
        if self._is("keyword", "not"):
            pos = self._next().pos
            return Unary(pos, "not", self.not_())
        return self.cmp()

    def cmp(self) -> Node:
        left = self.sum_()
        t = self.tok
        if t.kind == "op" and t.text in _COMPARE:
            self._next()
            return Binary(t.pos, t.text, left, self.sum_())
        if t.kind == "keyword" and t.text == "in":
            self._next()
            return InOp(t.pos, left, self.coll(), False)
        if t.kind == "keyword" and t.text == "not":
            nxt = self.tokens[self.i + 1]
            if nxt.kind == "keyword" and nxt.text == "in":
                self.i += 2
                return InOp(t.pos, left, self.coll(), True)
        if t.kind == "keyword" and t.text == "between":
            self._next()
            lo = self.sum_()
            self._expect("keyword", "and", "'and' in 'between ... and ...'")
            return Between(t.pos, left, lo, self.sum_())
        return left

    def coll(self) -> Node:
        if self._is("op", "["):
            pos = self._next().pos
            items: list[Node] = []
            if not self._is("op", "]"):
                items.append(self.sum_())
                while self._is("op", ","):
                    self._next()
                    items.append(self.sum_())
            self._expect("op", "]", "']' closing the list")
            return ListLit(pos, tuple(items))
        lo = self.sum_()
        if self._is("op", ".."):
            pos = self._next().pos
            return RangeLit(pos, lo, self.sum_())
        return lo

    def sum_(self) -> Node:
        node = self.prod()
        while self.tok.kind == "op" and self.tok.text in ("+", "-"):
            t = self._next()
            node = Binary(t.pos, t.text, node, self.prod())
        return node

    def prod(self) -> Node:
        node = self.unary()
        while self.tok.kind == "op" and self.tok.text in ("*", "/"):
            t = self._next()
            node = Binary(t.pos, t.text, node, self.unary())
        return node

    def unary(self) -> Node:
        if self._is("op", "-"):
            pos = self._next().pos
            return Unary(pos, "-", self.unary())
        return self.atom()

    def atom(self) -> Node:
        t = self._next()
        if t.kind == "number":
            return Literal(t.pos, float(t.text) if "." in t.text else int(t.text))
        if t.kind == "string":
            return Literal(t.pos, t.text)
        if t.kind == "duration":
            return Duration(t.pos, t.text)
        if t.kind == "keyword" and t.text in ("true", "false"):
            return Literal(t.pos, t.text == "true")
        if t.kind == "ident":
            if self._is("op", "("):
                self._next()
                args: list[Node] = []
                if not self._is("op", ")"):
                    args.append(self.or_())
                    while self._is("op", ","):
                        self._next()
                        args.append(self.or_())
                self._expect("op", ")", f"')' closing {t.text}(")
                return Call(t.pos, t.text, tuple(args))
            return Name(t.pos, t.text)
        if t.kind == "op" and t.text == "(":
            node = self.or_()
            self._expect("op", ")", "')'")
            return node
        raise RuleError(f"expected a value, found {_describe(t)}", t.pos)


def _describe(t: Token) -> str:
    if t.kind == "eof":
        return "end of rule"
    if t.kind == "string":
        return f"string {t.text!r}"
    return f"{t.text!r}"


def parse(text: str) -> Node:
    """Parses one rule.

    Raises:
        RuleError: with the offset of the first syntax error.
    """
    return _Parser(text).parse()
